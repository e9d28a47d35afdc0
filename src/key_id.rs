//! The name of one key's queue and ledger.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::panic::{AssertUnwindSafe, RefUnwindSafe, UnwindSafe};
use std::sync::{Arc, OnceLock, Weak};

use crate::scheduler::KeyQueue;

/// Names one key's queue and quota ledger inside a scheduler. Not the secret: a label you choose
/// (`"default"`, `"tenant-42"`), kept when the key behind it rotates.
///
/// Cheap to clone (a reference count). Two ids are equal when their labels are.
///
/// The id a key is added with ([`Scheduler::add_key`](crate::Scheduler::add_key)) remembers that
/// key's queue (a weak reference, shared by the id's clones), so that submitting with it or a
/// clone of it skips the hash-map lookup, whose memory is rarely in cache when there are
/// thousands of keys. Only the first scheduler it is added to is remembered; an id made
/// separately from the same label, or used with another scheduler, is looked up in the map as
/// usual ([`KeyHandle`](crate::KeyHandle) skips the lookup for any key). While clones of the id
/// outlive the scheduler, the weak reference keeps the memory of that key's queue allocated (not
/// its contents: its jobs and ledger are freed with the scheduler).
#[derive(Clone)]
pub struct KeyId(Arc<dyn Named>);

/// What a [`KeyId`] holds. Behind a trait object because the remembered queue is set after the
/// id is made (a `OnceLock`), and clippy's `mutable_key_type` would otherwise flag every map or
/// set keyed by `KeyId` in users' code; that cell takes no part in equality, ordering or hashing.
trait Named: Send + Sync + UnwindSafe + RefUnwindSafe {
    fn label(&self) -> &str;
    /// The queue this id names in the first scheduler it was added to (set once).
    fn known(&self) -> &OnceLock<KnownQueue>;
}

struct NamedKey {
    label: Box<str>,
    known: OnceLock<KnownQueue>,
}

impl Named for NamedKey {
    fn label(&self) -> &str {
        &self.label
    }

    fn known(&self) -> &OnceLock<KnownQueue> {
        &self.known
    }
}

/// A key's queue, as a scheduler found it for an id.
struct KnownQueue {
    /// The scheduler's id ([`crate::Scheduler`] numbers them in the process).
    scheduler: u64,
    /// Only ever upgraded, and set once (whole or not at all), so a panic elsewhere cannot leave
    /// it half-made: asserted unwind-safe, so that `KeyId` stays `UnwindSafe` and
    /// `RefUnwindSafe`, as a label alone was.
    queue: AssertUnwindSafe<Weak<KeyQueue>>,
}

impl PartialEq for KeyId {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.label() == other.0.label()
    }
}

impl Eq for KeyId {}

impl PartialOrd for KeyId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KeyId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.label().cmp(other.0.label())
    }
}

impl Hash for KeyId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The label's hash, so that equal labels hash alike.
        self.0.label().hash(state);
    }
}

impl KeyId {
    /// A key id from a label.
    ///
    /// ```
    /// use fabraix_scheduler::KeyId;
    /// assert_eq!(KeyId::new("tenant-42").as_str(), "tenant-42");
    /// ```
    pub fn new(label: impl AsRef<str>) -> Self {
        Self::from_label(label.as_ref().into())
    }

    fn from_label(label: Box<str>) -> Self {
        Self(Arc::new(NamedKey {
            label,
            known: OnceLock::new(),
        }))
    }

    /// The label.
    pub fn as_str(&self) -> &str {
        self.0.label()
    }

    /// The queue this id names in scheduler `scheduler`, if that scheduler recorded it here
    /// ([`remember`](Self::remember)) and the queue still exists.
    pub(crate) fn known_queue(&self, scheduler: u64) -> Option<Arc<KeyQueue>> {
        let known = self.0.known().get()?;
        if known.scheduler != scheduler {
            return None;
        }
        known.queue.upgrade()
    }

    /// Records that this id names `queue` in scheduler `scheduler` (done when the key is added
    /// with this id), unless a scheduler recorded its own already (the first one keeps it).
    pub(crate) fn remember(&self, scheduler: u64, queue: &Arc<KeyQueue>) {
        let _ = self.0.known().set(KnownQueue {
            scheduler,
            queue: AssertUnwindSafe(Arc::downgrade(queue)),
        });
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0.label())
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.label())
    }
}

impl From<&str> for KeyId {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for KeyId {
    fn from(s: String) -> Self {
        Self::from_label(s.into_boxed_str())
    }
}

/// A concurrent map from key ids, hashed with foldhash: key ids are chosen by the application,
/// not by whoever sends data, so a fast seeded hash serves better than SipHash (it is looked up
/// on every submit and every reservation).
pub(crate) type KeyMap<V> = dashmap::DashMap<KeyId, V, foldhash::fast::RandomState>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn an_id_is_as_freely_shared_as_a_label() {
        fn shareable<T: Send + Sync + Unpin + UnwindSafe + RefUnwindSafe + 'static>() {}
        shareable::<KeyId>();
    }

    #[test]
    fn equal_labels_are_equal_ids_whether_shared_or_not() {
        let a = KeyId::new("tenant-42");
        let shared = a.clone();
        let separate = KeyId::new(String::from("tenant-") + "42");
        assert!(!Arc::ptr_eq(&a.0, &separate.0));
        assert_eq!(a, shared);
        assert_eq!(a, separate);
        assert_ne!(a, KeyId::new("tenant-43"));
        // Hashing agrees with equality: a separately made id finds the entry.
        let set: HashSet<KeyId> = [a].into_iter().collect();
        assert!(set.contains(&separate));
        assert!(!set.contains(&KeyId::new("tenant-4")));
    }
}
