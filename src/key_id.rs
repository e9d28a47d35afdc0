//! The name of one key's queue and ledger.

use std::fmt;
use std::sync::Arc;

/// Names one key's queue and quota ledger inside a scheduler. Not the secret: a label you choose
/// (`"default"`, `"tenant-42"`), kept when the key behind it rotates.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(Arc<str>);

impl KeyId {
    /// A key id from a label.
    ///
    /// ```
    /// use fabraix_scheduler::KeyId;
    /// assert_eq!(KeyId::new("tenant-42").as_str(), "tenant-42");
    /// ```
    pub fn new(label: impl AsRef<str>) -> Self {
        Self(Arc::from(label.as_ref()))
    }

    /// The label.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for KeyId {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for KeyId {
    fn from(s: String) -> Self {
        Self(Arc::from(s))
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
    use std::panic::{RefUnwindSafe, UnwindSafe};

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
