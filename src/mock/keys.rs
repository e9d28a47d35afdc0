//! API keys the mock server knows: their quota, their access, and the label it uses for them in
//! records, stats and logs (never the secret itself).

use sha2::{Digest, Sha256};

use crate::quota::{Quota, Tier};

/// A well-known Development key registered by
/// [`MockServerBuilder::with_test_keys`](super::MockServerBuilder::with_test_keys): 60/1m and
/// 1000/1h, full access. Label `test-dev`.
pub const TEST_DEV_KEY: &str = "fbx-mock-test-development-key";

/// A well-known Production key registered by
/// [`MockServerBuilder::with_test_keys`](super::MockServerBuilder::with_test_keys): 600/1m and
/// 10000/1h, full access. Label `test-prod`.
pub const TEST_PROD_KEY: &str = "fbx-mock-test-production-key";

/// A well-known restricted key registered by
/// [`MockServerBuilder::with_test_keys`](super::MockServerBuilder::with_test_keys) (Development
/// quota). It may send `/event` telemetry; `/check` and `/register-agent-run` answer
/// `403 insufficient_permissions`. Label `test-restricted`.
pub const TEST_RESTRICTED_KEY: &str = "fbx-mock-test-restricted-key";

/// A well-known revoked key registered by
/// [`MockServerBuilder::with_test_keys`](super::MockServerBuilder::with_test_keys): every call
/// answers `401 invalid_api_key`, as an unknown key does. Label `test-revoked`.
pub const TEST_REVOKED_KEY: &str = "fbx-mock-test-revoked-key";

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum KeyAccess {
    /// Every endpoint.
    #[default]
    Full,
    /// `/event` only; `/check` and `/register-agent-run` answer 403. A 403 does not count against
    /// the quota.
    Restricted,
    /// Nothing: every call answers 401, like an unknown key. Does not count against the quota.
    Revoked,
}

/// How the mock server treats one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyProfile {
    /// The quota the server enforces for the key (before [`time_scale`](super::MockServerBuilder::time_scale)).
    pub quota: Quota,
    /// What the key may do.
    pub access: KeyAccess,
    /// The name used in records, stats and logs. `None`: a fingerprint of the secret
    /// (`key-` and 8 hex digits of its SHA-256).
    pub label: Option<String>,
}

impl KeyProfile {
    /// A full-access key with this quota and a fingerprint label.
    ///
    /// ```
    /// use fabraix_scheduler::mock::{KeyAccess, KeyProfile};
    /// use fabraix_scheduler::Quota;
    /// let p = KeyProfile::new(Quota::development()).restricted().label("ci");
    /// assert_eq!(p.access, KeyAccess::Restricted);
    /// assert_eq!(p.label.as_deref(), Some("ci"));
    /// ```
    pub fn new(quota: Quota) -> Self {
        Self {
            quota,
            access: KeyAccess::Full,
            label: None,
        }
    }

    /// A full-access key with the published quota of `tier`.
    pub fn tier(tier: Tier) -> Self {
        Self::new(tier.quota())
    }

    /// The same profile, restricted to `/event`.
    pub fn restricted(mut self) -> Self {
        self.access = KeyAccess::Restricted;
        self
    }

    /// The same profile, revoked (every call 401).
    pub fn revoked(mut self) -> Self {
        self.access = KeyAccess::Revoked;
        self
    }

    /// The same profile with this label in records, stats and logs.
    pub fn label(mut self, label: &str) -> Self {
        self.label = Some(label.to_string());
        self
    }
}

impl From<Quota> for KeyProfile {
    fn from(quota: Quota) -> Self {
        Self::new(quota)
    }
}

impl From<Tier> for KeyProfile {
    fn from(tier: Tier) -> Self {
        Self::tier(tier)
    }
}

/// `key-` and the first 8 hex digits of the SHA-256 of `secret`: safe to log, stable across runs.
///
/// ```
/// use fabraix_scheduler::mock::key_fingerprint;
/// let f = key_fingerprint("secret");
/// assert!(f.starts_with("key-") && f.len() == 12 && !f.contains("secret"));
/// ```
pub fn key_fingerprint(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("key-{hex}")
}

/// The four test keys with their profiles.
pub(crate) fn test_keys() -> [(&'static str, KeyProfile); 4] {
    [
        (
            TEST_DEV_KEY,
            KeyProfile::tier(Tier::Development).label("test-dev"),
        ),
        (
            TEST_PROD_KEY,
            KeyProfile::tier(Tier::Production).label("test-prod"),
        ),
        (
            TEST_RESTRICTED_KEY,
            KeyProfile::tier(Tier::Development)
                .restricted()
                .label("test-restricted"),
        ),
        (
            TEST_REVOKED_KEY,
            KeyProfile::tier(Tier::Development)
                .revoked()
                .label("test-revoked"),
        ),
    ]
}
