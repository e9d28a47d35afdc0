//! Time, injected. Core code reads time only through a [`Clock`], never from
//! `std::time::Instant` or `SystemTime` directly, so that tests can run an hour of quota in
//! milliseconds on tokio's paused clock (`#[tokio::test(start_paused = true)]`).
//!
//! Instants are [`tokio::time::Instant`]: they follow tokio's clock, which a test can pause and
//! advance. Wall-clock time ([`Clock::wall_now`]) is needed only at the edge: to turn an HTTP-date
//! `Retry-After` into a duration, and the times of an earlier run's calls into ages.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

pub use tokio::time::Instant;

/// A boxed, sendable future that completes at an instant.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A source of time and a way to wait for it.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current instant (monotonic).
    fn now(&self) -> Instant;

    /// The current wall-clock time: to read HTTP dates, and the wall-clock times of calls made
    /// before a key was added ([`KeyConfig::sent_earlier`](crate::KeyConfig::sent_earlier)).
    fn wall_now(&self) -> SystemTime;

    /// A future that completes at `deadline` (at once if it has passed).
    fn sleep_until(&self, deadline: Instant) -> Sleep;

    /// How long from now until `at` (zero once it has passed): an instant of this clock (an
    /// ETA, a slot of the plan) for a person, "in about 3 s".
    ///
    /// ```
    /// use fabraix_scheduler::{Clock, TokioClock};
    /// use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let clock = TokioClock::new();
    /// let at = clock.now() + Duration::from_secs(3);
    /// assert_eq!(clock.until(at), Duration::from_secs(3));
    /// assert!(clock.wall_at(at) > clock.wall_now() + Duration::from_secs(2));
    /// # }
    /// ```
    fn until(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.now())
    }

    /// The wall-clock time of `at`, an instant of this clock (before now as well as after): for
    /// logs and displays. Saturates at what [`SystemTime`] can hold.
    fn wall_at(&self, at: Instant) -> SystemTime {
        let (now, wall) = (self.now(), self.wall_now());
        if at >= now {
            wall.checked_add(at - now).unwrap_or(wall)
        } else {
            wall.checked_sub(now - at).unwrap_or(wall)
        }
    }
}

/// The default clock: tokio's. Pausing tokio's clock in a test pauses this clock too, and the wall
/// clock moves with it: it is anchored once, at construction, and then follows tokio's instants —
/// or the system's wall clock when that is later (tokio's clock stops while the machine sleeps;
/// the wall clock must not fall behind, or a call journal would date calls too early).
#[derive(Debug, Clone)]
pub struct TokioClock {
    anchor_instant: Instant,
    anchor_wall: SystemTime,
    /// Whether the system's wall clock may lead (not for a clock given its own wall time).
    follows_system: bool,
}

impl TokioClock {
    /// A clock on tokio's time, anchored to the system's wall clock now.
    ///
    /// ```
    /// use fabraix_scheduler::{Clock, TokioClock};
    /// let clock = TokioClock::new();
    /// let a = clock.now();
    /// assert!(clock.now() >= a);
    /// ```
    pub fn new() -> Self {
        Self {
            anchor_instant: Instant::now(),
            anchor_wall: SystemTime::now(),
            follows_system: true,
        }
    }

    /// A clock on tokio's time whose wall clock reads `wall` now (tests of HTTP dates).
    ///
    /// ```
    /// use fabraix_scheduler::{Clock, TokioClock};
    /// use std::time::{Duration, SystemTime};
    /// let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// let clock = TokioClock::with_wall_time(wall);
    /// assert!(clock.wall_now() >= wall);
    /// ```
    pub fn with_wall_time(wall: SystemTime) -> Self {
        Self {
            anchor_instant: Instant::now(),
            anchor_wall: wall,
            follows_system: false,
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall_now(&self) -> SystemTime {
        let followed =
            self.anchor_wall + Instant::now().saturating_duration_since(self.anchor_instant);
        if self.follows_system {
            followed.max(SystemTime::now())
        } else {
            followed
        }
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        Box::pin(tokio::time::sleep_until(deadline))
    }
}

/// Nanoseconds from `origin` to `t`, saturating at 0 (for `t` before `origin`) and `u64::MAX`.
pub(crate) fn nanos_since(origin: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
}

/// `origin` plus `nanos` nanoseconds.
pub(crate) fn at_nanos(origin: Instant, nanos: u64) -> Instant {
    origin + Duration::from_nanos(nanos)
}
