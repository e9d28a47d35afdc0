//! One subscriber connection per store, on the channels of its keys (`fx:v1:{FP}:blocks`): the
//! blocks other processes raise reach this one as they are raised, not at its next call.
//!
//! The connection is made again whenever it is lost or does not answer within the response
//! timeout (a quiet one is sent a `PING` every 5 s), backing off from 50 ms to 2 s (on tokio's timer, like the client's own timeouts: the
//! store's clock, which quota time follows, is only read); while it is down, every answer of
//! the script still carries the state's block. A message is parsed with checks
//! ([`parse_message`]), its delay capped
//! ([`FleetBlock::learn`](super::fleet_block::FleetBlock::learn)); one that is malformed or of
//! another epoch than this process knows is ignored (logged at debug).

use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::fleet_block::parse_message;
use super::{lock, KeyState, RedisLedgerStore};
use crate::clock::Clock;
use crate::key_id::KeyMap;

const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(2);
/// How often a quiet subscription is asked whether it still answers (`PING`): a connection
/// the network dropped without a word is made again within this and the response timeout.
const PING_EVERY: Duration = Duration::from_secs(5);
/// The least time given to open the connection (as the command connection's).
const MIN_CONNECT: Duration = Duration::from_secs(1);

type Keys = KeyMap<Arc<Mutex<KeyState>>>;

/// The store's side of its subscriber task: the channels of keys registered since it started.
pub(super) type Feed = Arc<Mutex<Option<mpsc::UnboundedSender<String>>>>;

impl RedisLedgerStore {
    /// Subscribes the store's connection to `channel` (a key just registered), starting the
    /// subscriber task first if it is not running (once per store; it ends when the last clone of
    /// the store is dropped). Without a tokio runtime nothing is subscribed: answers still carry
    /// the block.
    pub(super) fn subscribe(&self, channel: &str) {
        let mut feed = self.feed.lock().unwrap_or_else(|p| p.into_inner());
        if feed.is_none() {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let (tx, rx) = mpsc::unbounded_channel();
            runtime.spawn(listen(
                Arc::downgrade(&self.keys),
                Arc::clone(&self.subscribe_via),
                Arc::clone(&self.clock),
                self.config.response_timeout,
                rx,
            ));
            *feed = Some(tx);
        }
        if let Some(tx) = feed.as_ref() {
            let _ = tx.send(channel.to_string());
        }
    }
}

/// The subscriber task: connects, subscribes to every registered key's channel (and to each new
/// one as it comes), takes the messages in, and connects again when the connection is lost (to
/// the next of `via`, a cluster's nodes: each hears every node's messages).
async fn listen(
    keys: Weak<Keys>,
    via: Arc<[redis::Client]>,
    clock: Arc<dyn Clock>,
    timeout: Duration,
    mut added: mpsc::UnboundedReceiver<String>,
) {
    let mut pause = FIRST_PAUSE;
    let mut warned = false;
    for turn in 0.. {
        let Some(channels) = keys.upgrade().map(|k| channels_of(&k)) else {
            return;
        };
        let Some(client) = via.get(turn % via.len().max(1)) else {
            return;
        };
        match connect(client, &channels, timeout).await {
            Ok(pubsub) => {
                pause = FIRST_PAUSE;
                let (mut sink, mut stream) = pubsub.split();
                let mut ping = tokio::time::interval(PING_EVERY);
                ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ping.tick().await;
                loop {
                    tokio::select! {
                        message = stream.next() => match message {
                            Some(message) => take_message(&keys, clock.as_ref(), &message),
                            None => break,
                        },
                        _ = ping.tick() => {
                            let answered = within(timeout, sink.ping::<redis::Value>()).await;
                            if !matches!(answered, Some(Ok(_))) {
                                break;
                            }
                        }
                        channel = added.recv() => match channel {
                            Some(channel) => {
                                let subscribed =
                                    within(timeout, sink.subscribe(&channel)).await;
                                if !matches!(subscribed, Some(Ok(()))) {
                                    break;
                                }
                            }
                            None => return,
                        },
                    }
                }
                tracing::debug!(
                    "the subscription to the fleet's blocks was lost: subscribing again"
                );
            }
            Err(reason) if !warned => {
                // Once: Redis may refuse for good (an ACL without the key's channels).
                warned = true;
                tracing::warn!(%reason, "cannot subscribe to the fleet's pauses (answers still carry them): trying again");
            }
            Err(reason) => {
                tracing::debug!(%reason, "cannot subscribe to the fleet's pauses: trying again");
            }
        }
        // Channels added meanwhile are subscribed to with the others on the next connection.
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            channel = added.recv() => if channel.is_none() { return },
        }
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// The channels of every key of the store.
fn channels_of(keys: &Keys) -> Vec<String> {
    let mut channels: Vec<String> = keys
        .iter()
        .map(|e| lock(e.value()).channel.clone())
        .collect();
    channels.sort_unstable();
    channels.dedup();
    channels
}

/// A subscriber connection on `channels`, each step within `timeout`.
async fn connect(
    client: &redis::Client,
    channels: &[String],
    timeout: Duration,
) -> Result<redis::aio::PubSub, String> {
    let mut pubsub = within(timeout.max(MIN_CONNECT), client.get_async_pubsub())
        .await
        .ok_or("no answer in time")?
        .map_err(|e| super::describe(&e))?;
    if !channels.is_empty() {
        within(timeout, pubsub.subscribe(channels))
            .await
            .ok_or("no answer in time")?
            .map_err(|e| super::describe(&e))?;
    }
    Ok(pubsub)
}

/// `future`'s output, or `None` if it takes longer than `timeout` (on tokio's timer, as the
/// client's own response timeout: a network wait, not quota time on the store's clock).
async fn within<T>(timeout: Duration, future: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(timeout, future).await.ok()
}

/// A message on a key's channel: the block it tells is learned by every key of the store on that
/// channel whose epoch it is.
fn take_message(keys: &Weak<Keys>, clock: &dyn Clock, message: &redis::Msg) {
    let Some(keys) = keys.upgrade() else {
        return;
    };
    let (epoch, delay_ns) = match parse_message(message.get_payload_bytes()) {
        Ok(parsed) => parsed,
        Err(reason) => {
            tracing::debug!(reason, "a malformed message on a fleet's channel: ignored");
            return;
        }
    };
    let channel = message.get_channel_name();
    let received = clock.now();
    for entry in keys.iter() {
        let mut s = lock(entry.value());
        if s.channel != channel {
            continue;
        }
        if s.epoch == epoch {
            s.block.learn(received, delay_ns);
        } else {
            tracing::debug!("a block of another epoch of the shared state: ignored");
        }
    }
}
