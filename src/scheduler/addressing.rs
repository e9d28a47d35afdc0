//! What every call of a key shares, made once rather than per call: the key's header value and the
//! absolute URIs of the paths it sends to.

use http::HeaderValue;

use crate::endpoint::Endpoint;

/// Paths remembered per key. A scan of this many short strings costs less than parsing one URI.
const URI_CACHE_SIZE: usize = 8;

/// Where one attempt goes and the key it carries, taken under the key's lock; the transport is
/// handed them, with the job, as an [`OutgoingRequest`](crate::OutgoingRequest) without the lock.
#[derive(Debug)]
pub(crate) struct Addressing {
    /// The job's absolute URI.
    pub(crate) uri: http::Uri,
    /// The key's value as a header value, marked sensitive (never printed).
    pub(crate) api_key: HeaderValue,
}

/// The absolute URIs of the last few distinct paths a key was given, most recent first.
#[derive(Debug, Default)]
pub(crate) struct UriCache {
    entries: Vec<(Box<str>, http::Uri)>,
}

impl UriCache {
    /// The URI of `path` under `endpoint`: remembered, or checked and built (see
    /// [`Endpoint::uri_for`]) and remembered. An invalid path is not remembered.
    pub(crate) fn uri_for(
        &mut self,
        endpoint: &Endpoint,
        path: &str,
    ) -> Result<&http::Uri, String> {
        match self.entries.iter().position(|(p, _)| &**p == path) {
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
                self.entries.insert(0, (path.into(), uri));
            }
        }
        Ok(&self.entries[0].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_recent_paths_and_rejects_bad_ones() {
        let endpoint = Endpoint::new("http://127.0.0.1:9/v1", false).unwrap();
        let mut cache = UriCache::default();
        for i in 0..(URI_CACHE_SIZE + 3) {
            let uri = cache.uri_for(&endpoint, &format!("/p{i}")).unwrap().clone();
            assert_eq!(uri.to_string(), format!("http://127.0.0.1:9/v1/p{i}"));
        }
        assert_eq!(cache.entries.len(), URI_CACHE_SIZE);
        assert_eq!(&*cache.entries[0].0, format!("/p{}", URI_CACHE_SIZE + 2));
        // A hit moves to the front and gives the same URI as a fresh build.
        let hit = cache.uri_for(&endpoint, "/p5").unwrap().clone();
        assert_eq!(hit, endpoint.uri_for("/p5").unwrap());
        assert_eq!(&*cache.entries[0].0, "/p5");
        assert!(cache
            .uri_for(&endpoint, "https://elsewhere.example/x")
            .is_err());
        assert!(cache.uri_for(&endpoint, "/a/../b").is_err());
        assert_eq!(cache.entries.len(), URI_CACHE_SIZE);
    }
}
