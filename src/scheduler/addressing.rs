//! What every call of a key shares, made once rather than per call: the key's header value and the
//! absolute URIs of the paths it sends to, together, behind one reference count.

use std::sync::Arc;

use http::HeaderValue;
use smallvec::SmallVec;

use crate::endpoint::Endpoint;

/// Paths remembered per key. A scan of this many short strings costs less than parsing one URI.
const URI_CACHE_SIZE: usize = 8;

/// A remembered path, kept in the cache's own entry when short (as API paths are): compared on
/// every submit and every send, it is then read from the line the entry is on, not from an
/// allocation of its own (with thousands of keys, one more cache miss per job).
type PathKey = SmallVec<[u8; 24]>;

/// Where one attempt goes and the key it carries, taken under the key's lock (a reference count
/// bumped, nothing copied); the transport is handed them, with the job, as an
/// [`OutgoingRequest`](crate::OutgoingRequest) without the lock.
#[derive(Debug)]
pub(crate) struct Addressing {
    /// The job's absolute URI.
    pub(crate) uri: http::Uri,
    /// The key's value as a header value, marked sensitive (never printed).
    pub(crate) api_key: HeaderValue,
}

/// The addressing of the last few distinct paths a key was given, most recent first. Made with
/// the key's header value: [`clear`](Self::clear) it when the key rotates.
#[derive(Debug, Default)]
pub(crate) struct AddressingCache {
    entries: Vec<(PathKey, Arc<Addressing>)>,
}

impl AddressingCache {
    /// Where `path` goes under `endpoint`, carrying `api_key`: remembered, or checked and built
    /// (see [`Endpoint::uri_for`]) and remembered. An invalid path is not remembered.
    pub(crate) fn addressing_for(
        &mut self,
        endpoint: &Endpoint,
        api_key: &HeaderValue,
        path: &str,
    ) -> Result<&Arc<Addressing>, String> {
        match self
            .entries
            .iter()
            .position(|(p, _)| p.as_slice() == path.as_bytes())
        {
            Some(0) => {}
            Some(i) => {
                let hit = self.entries.remove(i);
                self.entries.insert(0, hit);
            }
            None => {
                let uri = endpoint.uri_for(path)?;
                if self.entries.len() == URI_CACHE_SIZE {
                    self.entries.pop();
                }
                let addressing = Arc::new(Addressing {
                    uri,
                    api_key: api_key.clone(),
                });
                self.entries
                    .insert(0, (PathKey::from_slice(path.as_bytes()), addressing));
            }
        }
        Ok(&self.entries[0].1)
    }

    /// Forgets every path (their addressing carries a key that is no longer the key's).
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_recent_paths_and_rejects_bad_ones() {
        let endpoint = Endpoint::new("http://127.0.0.1:9/v1", false).unwrap();
        let key = HeaderValue::from_static("secret-1");
        let mut cache = AddressingCache::default();
        for i in 0..(URI_CACHE_SIZE + 3) {
            let to = Arc::clone(
                cache
                    .addressing_for(&endpoint, &key, &format!("/p{i}"))
                    .unwrap(),
            );
            assert_eq!(to.uri.to_string(), format!("http://127.0.0.1:9/v1/p{i}"));
            assert_eq!(to.api_key, key);
        }
        assert_eq!(cache.entries.len(), URI_CACHE_SIZE);
        let newest = format!("/p{}", URI_CACHE_SIZE + 2);
        assert_eq!(cache.entries[0].0.as_slice(), newest.as_bytes());
        // A hit moves to the front and gives the same addressing, shared, not rebuilt.
        let first = Arc::clone(cache.addressing_for(&endpoint, &key, "/p5").unwrap());
        assert_eq!(first.uri, endpoint.uri_for("/p5").unwrap());
        assert_eq!(cache.entries[0].0.as_slice(), b"/p5");
        let again = cache.addressing_for(&endpoint, &key, "/p5").unwrap();
        assert!(Arc::ptr_eq(&first, again));
        assert!(cache
            .addressing_for(&endpoint, &key, "https://elsewhere.example/x")
            .is_err());
        assert!(cache.addressing_for(&endpoint, &key, "/a/../b").is_err());
        assert_eq!(cache.entries.len(), URI_CACHE_SIZE);
        // Cleared (the key rotated): built again with the new key.
        cache.clear();
        let rotated = HeaderValue::from_static("secret-2");
        let to = cache.addressing_for(&endpoint, &rotated, "/p5").unwrap();
        assert_eq!(to.api_key, rotated);
        assert!(!Arc::ptr_eq(&first, to));
    }

    #[test]
    fn long_paths_are_remembered_and_told_apart_like_short_ones() {
        let endpoint = Endpoint::new("http://127.0.0.1:9/v1", false).unwrap();
        let key = HeaderValue::from_static("secret-1");
        let mut cache = AddressingCache::default();
        // Past the inline size, and differing only in the last byte.
        let long_a = format!("/{}/a", "segment".repeat(6));
        let long_b = format!("/{}/b", "segment".repeat(6));
        let a = Arc::clone(cache.addressing_for(&endpoint, &key, &long_a).unwrap());
        let b = Arc::clone(cache.addressing_for(&endpoint, &key, &long_b).unwrap());
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(a.uri.path(), format!("/v1{long_a}"));
        assert!(Arc::ptr_eq(
            &a,
            cache.addressing_for(&endpoint, &key, &long_a).unwrap()
        ));
        // A short path that is a prefix of a remembered one is a path of its own.
        let short = Arc::clone(cache.addressing_for(&endpoint, &key, "/segment").unwrap());
        assert_eq!(short.uri.path(), "/v1/segment");
        assert_eq!(cache.entries.len(), 3);
    }
}
