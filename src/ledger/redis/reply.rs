//! The script's answers, checked: every number from the network is converted with a check.

use std::collections::HashMap;

use redis::Value;

use crate::ledger::key_ledger::SharedLedger;
use crate::ledger::limit_account::SharedLimit;
use crate::ledger::StoreError;

/// An answer of `ledger.lua`.
#[derive(Debug)]
pub(super) enum Reply {
    /// Done: the state's epoch and sequence number, the script's now (ns on the state's scale),
    /// the state's block as a delay from that now, and what the operation returns (slots; or the
    /// state, for a read).
    Ok(Done),
    /// The state is missing or of another epoch than this process knows: re-seed first.
    Seed,
    /// The state's sequence number is below one this process saw: it was rolled back.
    RolledBack,
    /// The state is new (Redis lost the old one) and hands out no slot for this long (ns):
    /// the fleet's processes are telling it their calls. Nothing was committed.
    Settle(u64),
}

#[derive(Debug)]
pub(super) struct Done {
    pub(super) epoch: String,
    pub(super) seq: u64,
    pub(super) now_ns: u64,
    /// How long after `now_ns` the state's block ends (ns; 0: no block).
    pub(super) block_ns: u64,
    /// Reserved slots (ns on the state's scale).
    pub(super) slots: Vec<u64>,
    /// The rest of the answer, as returned (a read's logs and hash).
    rest: Vec<Value>,
}

fn bad(what: &str) -> StoreError {
    StoreError::Unavailable(format!("unexpected answer from the Redis script: {what}"))
}

fn text(v: &Value) -> Result<String, StoreError> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).map_err(|_| bad("text not UTF-8")),
        Value::SimpleString(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        _ => Err(bad("expected text")),
    }
}

fn number(v: &Value) -> Result<u64, StoreError> {
    match v {
        Value::Int(i) => u64::try_from(*i).map_err(|_| bad("negative number")),
        other => text(other)?.parse().map_err(|_| bad("expected a number")),
    }
}

impl Reply {
    pub(super) fn parse(value: Value) -> Result<Self, StoreError> {
        let Value::Array(items) = value else {
            return Err(bad("expected an array"));
        };
        let status = items.first().map(text).transpose()?.unwrap_or_default();
        match status.as_str() {
            "seed" => Ok(Reply::Seed),
            "rollback" => Ok(Reply::RolledBack),
            "settle" => Ok(Reply::Settle(
                items.get(1).map(number).transpose()?.unwrap_or(0),
            )),
            "ok" if items.len() >= 5 => {
                let epoch = text(&items[1])?;
                let seq = number(&items[2])?;
                let now_ns = number(&items[3])?;
                let block_ns = number(&items[4])?;
                let rest: Vec<Value> = items.into_iter().skip(5).collect();
                let slots = rest.iter().filter_map(|v| match v {
                    Value::Int(i) => u64::try_from(*i).ok(),
                    _ => None,
                });
                Ok(Reply::Ok(Done {
                    epoch,
                    seq,
                    now_ns,
                    block_ns,
                    slots: slots.collect(),
                    rest,
                }))
            }
            _ => Err(bad("unknown status")),
        }
    }
}

/// A read's answer (`limits` logs, then the hash's fields and values) as a [`SharedLedger`].
pub(super) fn shared_ledger(done: &Done, limits: usize) -> Result<SharedLedger, StoreError> {
    if done.rest.len() < limits {
        return Err(bad("missing window logs"));
    }
    let mut hash = HashMap::new();
    let fields = &done.rest[limits..];
    for pair in fields.chunks(2) {
        if let [k, v] = pair {
            hash.insert(text(k)?, text(v)?);
        }
    }
    let opt = |name: &str| -> Result<Option<u64>, StoreError> {
        match hash.get(name).map(String::as_str) {
            None | Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| bad(name)),
        }
    };
    let slot_of = |index: Option<u64>, calls: Option<u64>| match index {
        Some(i) => (i, calls.unwrap_or(0)),
        None => (u64::MAX, 0),
    };
    let mut state = SharedLedger {
        last_slot_ns: opt("ls")?,
        blocked_until_ns: opt("bu")?.unwrap_or(0),
        pace_ns: opt("pc")?.filter(|&p| p > 0),
        server_cap: match (opt("cr")?, opt("cs")?) {
            (Some(r), Some(s)) => Some((u32::try_from(r).unwrap_or(u32::MAX), s)),
            _ => None,
        },
        limits: Vec::with_capacity(limits),
    };
    for (i, log) in done.rest[..limits].iter().enumerate() {
        let n = i + 1;
        let bytes: &[u8] = match log {
            Value::BulkString(b) => b,
            Value::Nil => &[],
            _ => return Err(bad("window log")),
        };
        let entries = bytes
            .chunks_exact(8)
            .map(|c| {
                let tick = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
                let calls = u32::from_be_bytes([c[4], c[5], c[6], c[7]]);
                (tick, calls)
            })
            .collect();
        // A -1 index (none) does not parse as u64: read as none.
        let index = |name: String| hash.get(&name).and_then(|v| v.parse::<u64>().ok());
        let calls = |name: String| hash.get(&name).and_then(|v| v.parse::<u64>().ok());
        state.limits.push(SharedLimit {
            base_tick: opt(&format!("b{n}"))?.unwrap_or(0),
            entries,
            evicted_floor_ns: opt(&format!("f{n}"))?,
            tat_ns: opt(&format!("a{n}"))?.unwrap_or(0),
            last_ns: opt(&format!("l{n}"))?,
            recent: [
                slot_of(index(format!("ri{n}a")), calls(format!("rc{n}a"))),
                slot_of(index(format!("ri{n}b")), calls(format!("rc{n}b"))),
            ],
        });
    }
    Ok(state)
}
