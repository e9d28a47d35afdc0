//! Typed Fabraix calls on top of the scheduler.

use serde::de::DeserializeOwned;

use super::bodies::{ActionCheck, AgentRun, CheckVerdict, Event, EventAck, RegisterAgentRun};
use crate::cause::Cause;
use crate::job::{Job, Priority};
use crate::job_error::{JobError, SubmitError};
use crate::key_id::KeyId;
use crate::ledger::{LedgerStore, MemoryLedgerStore};
use crate::response::Response;
use crate::scheduler::{KeyConfig, Scheduler, Ticket};

/// The Fabraix API for one key, through a [`Scheduler`]: every call waits for its slot.
#[derive(Clone, Debug)]
pub struct FabraixClient<S: LedgerStore = MemoryLedgerStore> {
    scheduler: Scheduler<S>,
    key: KeyId,
}

impl FabraixClient {
    /// A client with its own scheduler (default transport and clock) for one key.
    pub async fn new(config: KeyConfig) -> Result<Self, ClientError> {
        let scheduler = Scheduler::builder()
            .build()
            .map_err(|e| ClientError::Setup(Cause::new(e)))?;
        let key = config.id().clone();
        scheduler
            .add_key(config)
            .await
            .map_err(|e| ClientError::Setup(Cause::new(e)))?;
        Ok(Self { scheduler, key })
    }
}

impl<S: LedgerStore> FabraixClient<S> {
    /// A client with its own scheduler for one key, its ledger in `store`: a
    /// `RedisLedgerStore` (feature `redis`) makes every process that uses the key share its
    /// quota. The [`TelemetrySender`](crate::TelemetrySender) takes such a client too.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use fabraix_scheduler::{ApiKey, FabraixClient, KeyConfig, KeyId, MemoryLedgerStore, Quota};
    /// let config = KeyConfig::new(KeyId::new("k"), ApiKey::new("secret").unwrap(), "https://api.fabraix.com/v1", Quota::development()).unwrap();
    /// let client = FabraixClient::with_store(config, MemoryLedgerStore::new()).await.unwrap();
    /// # let _ = client; }
    /// ```
    pub async fn with_store(config: KeyConfig, store: S) -> Result<Self, ClientError> {
        let scheduler = Scheduler::builder()
            .store(store)
            .build()
            .map_err(|e| ClientError::Setup(Cause::new(e)))?;
        let key = config.id().clone();
        scheduler
            .add_key(config)
            .await
            .map_err(|e| ClientError::Setup(Cause::new(e)))?;
        Ok(Self { scheduler, key })
    }

    /// A client over an existing scheduler and one of its keys.
    pub fn from_scheduler(scheduler: Scheduler<S>, key: KeyId) -> Self {
        Self { scheduler, key }
    }

    /// The scheduler underneath.
    pub fn scheduler(&self) -> &Scheduler<S> {
        &self.scheduler
    }

    /// The key id this client sends with.
    pub fn key(&self) -> &KeyId {
        &self.key
    }

    /// `POST /register-agent-run` (normal priority).
    pub async fn register_agent_run(
        &self,
        run: &RegisterAgentRun,
    ) -> Result<AgentRun, ClientError> {
        self.call("/register-agent-run", run, Priority::Normal)
            .await
    }

    /// `POST /event` (normal priority; use [`submit_event`](Self::submit_event) to not wait).
    pub async fn event(&self, event: &Event) -> Result<EventAck, ClientError> {
        self.call("/event", event, Priority::Normal).await
    }

    /// `POST /check`, at interactive priority: it takes the key's next free slot, ahead of any
    /// queued telemetry.
    pub async fn check(&self, check: &ActionCheck) -> Result<CheckVerdict, ClientError> {
        self.call("/check", check, Priority::Interactive).await
    }

    /// Queues an event and returns its ticket without waiting for the answer.
    pub async fn submit_event(
        &self,
        event: &Event,
        priority: Priority,
    ) -> Result<Ticket, ClientError> {
        let job = Job::post_json("/event", event).map_err(ClientError::Encode)?;
        Ok(self
            .scheduler
            .submit(&self.key, job.with_priority(priority))
            .await?)
    }

    /// Any other request, relative to the key's base URL.
    pub async fn request(&self, job: Job) -> Result<Response, ClientError> {
        let ticket = self.scheduler.submit(&self.key, job).await?;
        Ok(ticket.await?)
    }

    async fn call<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        priority: Priority,
    ) -> Result<T, ClientError> {
        let job = Job::post_json(path, body)
            .map_err(ClientError::Encode)?
            .with_priority(priority);
        let response = self.request(job).await?;
        response.json().map_err(|e| ClientError::Decode {
            path: path.to_string(),
            message: e.to_string(),
            source: e,
        })
    }
}

/// Why a typed call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The job was not taken (queue full, shutting down...).
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// The job's outcome was a failure.
    #[error(transparent)]
    Job(#[from] JobError),
    /// The request body could not be encoded.
    #[error("cannot encode the request body: {0}")]
    Encode(#[source] serde_json::Error),
    /// The server's success body did not match the documented shape.
    #[error("unexpected response body from {path}: {message}")]
    Decode {
        /// The endpoint.
        path: String,
        /// What did not match.
        message: String,
        /// The decoder's error.
        source: serde_json::Error,
    },
    /// The client could not be set up.
    #[error("cannot set up the client: {0}")]
    Setup(#[source] Cause),
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    #[test]
    fn encoding_and_decoding_errors_are_the_sources() {
        let map: std::collections::BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        let encode = Job::post_json("/event", &map).unwrap_err();
        let err = ClientError::Encode(encode);
        let source = err.source().unwrap();
        assert!(source.downcast_ref::<serde_json::Error>().is_some());
        assert!(err.to_string().contains(&source.to_string()));

        let decode = serde_json::from_slice::<EventAck>(b"[1]").unwrap_err();
        let err = ClientError::Decode {
            path: "/event".into(),
            message: decode.to_string(),
            source: decode,
        };
        let source = err.source().unwrap();
        assert!(source
            .downcast_ref::<serde_json::Error>()
            .unwrap()
            .is_data());
    }
}
