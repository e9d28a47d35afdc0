//! Per-key quota accounting: when may the next call of a key go so that every window holds?
//!
//! [`Ledger`] is the pure, synchronous decision for one key; [`LedgerStore`] is where the
//! scheduler keeps ledgers ([`MemoryLedgerStore`] in this process; a shared store later).
//!
//! Why not governor: governor's GCRA is one window per limiter and admits a burst of N on top of the
//! steady rate, so `Quota::per_minute(60)` can let through up to 2N − 1 calls in one sliding minute,
//! which a sliding-log server refuses; and two stacked limiters cannot reserve atomically (the first
//! one consumes even when the second refuses). This ledger checks and commits all windows at once.

mod followed_plan;
mod key_ledger;
mod limit_account;
mod local_ledger;
mod memory;
mod recent_calls;
#[cfg(feature = "redis")]
mod redis;
mod shared_block;
mod store;
mod token_bucket;
mod window_counter;
mod window_log;

#[cfg(feature = "redis")]
pub use self::redis::{RedisLedgerStore, RedisStoreConfig, Unreachable};
pub(crate) use key_ledger::OwnReading;
pub use key_ledger::{Forecast, Ledger, LedgerConfig, PlanCursor, DEFAULT_GUARD};
pub use limit_account::WindowSemantics;
pub use local_ledger::LocalLedger;
pub use memory::MemoryLedgerStore;
pub use shared_block::SharedBlock;
pub use store::{LedgerStore, StoreError};
