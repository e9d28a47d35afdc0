//! The API key: a secret that only ever leaves the process in the `x-api-key` header of a request
//! to the key's own origin. Everywhere else (Debug, logs, errors, output files) it is represented by
//! its [`fingerprint`](ApiKey::fingerprint).

use std::borrow::Cow;
use std::fmt;
use std::path::Path;

use http::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::cause::Cause;

/// The environment variable the key is read from.
pub const API_KEY_ENV: &str = "FABRAIX_API_KEY";

/// A Fabraix API key, held as a secret (zeroed on drop by `secrecy`).
#[derive(Clone)]
pub struct ApiKey {
    secret: SecretString,
    fingerprint: String,
}

impl ApiKey {
    /// Wraps a key (surrounding whitespace trimmed). Errors if it is empty, or has a character other
    /// than printable ASCII and the space: any control character (TAB, DEL, NUL, CR, LF) or
    /// non-ASCII is refused. The error never contains the key.
    ///
    /// ```
    /// use fabraix_scheduler::ApiKey;
    /// let key = ApiKey::new("fbx_live_0123456789abcdef").unwrap();
    /// assert!(!format!("{key:?}").contains("0123456789abcdef"));
    /// assert!(ApiKey::new("").is_err());
    /// assert!(ApiKey::new("fbx_live\t0123").is_err());
    /// ```
    pub fn new(key: impl Into<String>) -> Result<Self, ApiKeyError> {
        let key: String = key.into();
        let trimmed = key.trim();
        if trimmed.is_empty() {
            return Err(ApiKeyError::Empty);
        }
        // Printable ASCII only: `HeaderValue` alone would let a TAB (and DEL) through.
        if !trimmed.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
            || HeaderValue::from_str(trimmed).is_err()
        {
            return Err(ApiKeyError::InvalidCharacters);
        }
        let digest = Sha256::digest(trimmed.as_bytes());
        let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self {
            fingerprint: format!("key#{hex}"),
            secret: SecretString::from(trimmed.to_string()),
        })
    }

    /// The key from `FABRAIX_API_KEY`; if unset, from a `FABRAIX_API_KEY=` line of `.env` in the
    /// current directory (the file is read, the process environment is not changed).
    pub fn from_env() -> Result<Self, ApiKeyError> {
        match std::env::var(API_KEY_ENV) {
            Ok(v) => Self::new(v),
            Err(std::env::VarError::NotUnicode(_)) => Err(ApiKeyError::InvalidCharacters),
            Err(std::env::VarError::NotPresent) => Self::from_dotenv(Path::new(".env")),
        }
    }

    /// The key from a `FABRAIX_API_KEY=` line of a dotenv file.
    pub fn from_dotenv(path: &Path) -> Result<Self, ApiKeyError> {
        let iter = match dotenvy::from_path_iter(path) {
            Ok(iter) => iter,
            Err(_) => return Err(ApiKeyError::Missing),
        };
        for item in iter {
            match item {
                Ok((name, value)) if name == API_KEY_ENV => return Self::new(value),
                Ok(_) => {}
                Err(e) => return Err(dotenv_error_without_values(e)),
            }
        }
        Err(ApiKeyError::Missing)
    }

    /// A short, stable, non-reversible name for the key (`key#` + 8 hex digits of its SHA-256):
    /// what logs, errors and output files show instead of the key.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// `text` with every occurrence of the key replaced by its fingerprint: for any text that came
    /// from elsewhere (a server's error message that echoes the key, say) before it is shown,
    /// logged or written.
    ///
    /// ```
    /// use fabraix_scheduler::ApiKey;
    /// let key = ApiKey::new("fbx_live_0123456789abcdef").unwrap();
    /// let shown = key.redact("invalid key fbx_live_0123456789abcdef");
    /// assert_eq!(shown, format!("invalid key {}", key.fingerprint()));
    /// assert_eq!(key.redact("nothing to hide"), "nothing to hide");
    /// ```
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let secret = self.secret.expose_secret();
        if text.contains(secret) {
            Cow::Owned(text.replace(secret, &self.fingerprint))
        } else {
            Cow::Borrowed(text)
        }
    }

    /// `bytes` with every occurrence of the key replaced by its fingerprint (see
    /// [`redact`](Self::redact)).
    pub(crate) fn redact_bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        let secret = self.secret.expose_secret().as_bytes();
        let Some(first) = find(bytes, secret) else {
            return Cow::Borrowed(bytes);
        };
        let mut out = Vec::with_capacity(bytes.len());
        let mut rest = bytes;
        let mut at = Some(first);
        while let Some(i) = at {
            out.extend_from_slice(&rest[..i]);
            out.extend_from_slice(self.fingerprint.as_bytes());
            rest = &rest[i + secret.len()..];
            at = find(rest, secret);
        }
        out.extend_from_slice(rest);
        Cow::Owned(out)
    }

    /// The `x-api-key` header value, marked sensitive (hyper and reqwest then keep it out of
    /// their debug output and HPACK tables).
    pub(crate) fn header_value(&self) -> HeaderValue {
        let mut value = HeaderValue::from_str(self.secret.expose_secret())
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        value.set_sensitive(true);
        value
    }
}

/// Where `needle` (not empty) first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn dotenv_error_without_values(e: dotenvy::Error) -> ApiKeyError {
    let (message, source) = match e {
        dotenvy::Error::LineParse(_, index) => (format!("cannot parse .env at byte {index}"), None),
        dotenvy::Error::Io(io) => (
            format!("cannot read .env: {}", io.kind()),
            Some(Cause::new(io)),
        ),
        _ => ("cannot read .env".to_string(), None),
    };
    ApiKeyError::DotEnv { message, source }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({})", self.fingerprint)
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fingerprint)
    }
}

impl PartialEq for ApiKey {
    fn eq(&self, other: &Self) -> bool {
        self.secret.expose_secret() == other.secret.expose_secret()
    }
}

impl Eq for ApiKey {}

/// Why no usable key was found. Never contains the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiKeyError {
    /// Neither the environment nor `.env` has `FABRAIX_API_KEY`.
    #[error("no API key: set FABRAIX_API_KEY (or put FABRAIX_API_KEY=... in .env)")]
    Missing,
    /// The key is empty.
    #[error("the API key is empty")]
    Empty,
    /// The key has characters an HTTP header cannot carry.
    #[error("the API key has characters an HTTP header cannot carry (control or non-ASCII)")]
    InvalidCharacters,
    /// The `.env` file is malformed or cannot be read.
    #[error("{message}")]
    DotEnv {
        /// Where it is malformed, or the I/O error's kind.
        message: String,
        /// The I/O error, when it cannot be read. A parse error is not kept: the parser's error
        /// quotes the line, which may hold the key.
        source: Option<Cause>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_stable_and_not_the_key() {
        let a = ApiKey::new("secret-value-123").unwrap();
        let b = ApiKey::new("secret-value-123").unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert!(a.fingerprint().starts_with("key#"));
        assert!(!a.fingerprint().contains("secret"));
        assert!(a.header_value().is_sensitive());
        assert_eq!(format!("{a}"), a.fingerprint());
        assert_ne!(ApiKey::new("other").unwrap().fingerprint(), a.fingerprint());
    }

    #[test]
    fn bad_keys_are_refused() {
        assert_eq!(ApiKey::new("  ").unwrap_err(), ApiKeyError::Empty);
        assert_eq!(
            ApiKey::new("a\nb").unwrap_err(),
            ApiKeyError::InvalidCharacters
        );
        for control in ["a\tb", "a\u{7f}b", "a\u{0}b", "a\rb", "a\u{1b}b"] {
            assert_eq!(
                ApiKey::new(control).unwrap_err(),
                ApiKeyError::InvalidCharacters,
                "{control:?}"
            );
        }
        assert_eq!(
            ApiKey::new("ключ").unwrap_err(),
            ApiKeyError::InvalidCharacters
        );
    }

    #[test]
    fn redaction_replaces_every_occurrence() {
        let key = ApiKey::new("s3cr3t").unwrap();
        let fp = key.fingerprint().to_string();
        assert_eq!(key.redact("s3cr3ts3cr3t x"), format!("{fp}{fp} x"));
        assert_eq!(
            key.redact_bytes(b"a s3cr3t b s3cr3t").as_ref(),
            format!("a {fp} b {fp}").as_bytes()
        );
        assert_eq!(key.redact_bytes(b"s3cr").as_ref(), b"s3cr");
    }

    #[test]
    fn an_unreadable_dotenv_keeps_the_io_error_and_a_malformed_one_no_line() {
        use std::error::Error;
        let dir = std::env::temp_dir().join(format!("fbx-dotenv-src-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a-directory")).unwrap();
        let err = ApiKey::from_dotenv(&dir.join("a-directory")).unwrap_err();
        let ApiKeyError::DotEnv { message, .. } = &err else {
            panic!("{err:?}");
        };
        assert!(message.starts_with("cannot read .env"), "{message}");
        let io = err.source().expect("the I/O error");
        assert!(io.downcast_ref::<Cause>().is_some(), "{io:?}");
        let path = dir.join(".env");
        std::fs::write(&path, "FABRAIX_API_KEY='s3cr3t-unclosed\n").unwrap();
        let err = ApiKey::from_dotenv(&path).unwrap_err();
        assert!(
            matches!(err, ApiKeyError::DotEnv { source: None, .. }),
            "{err:?}"
        );
        assert!(!format!("{err} {err:?}").contains("s3cr3t"), "{err:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dotenv_file_is_read() {
        let dir = std::env::temp_dir().join(format!("fbx-dotenv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(".env");
        std::fs::write(&path, "OTHER=1\nFABRAIX_API_KEY=from-dotenv-file\n").unwrap();
        let key = ApiKey::from_dotenv(&path).unwrap();
        assert_eq!(key, ApiKey::new("from-dotenv-file").unwrap());
        std::fs::write(&path, "OTHER=1\n").unwrap();
        assert_eq!(
            ApiKey::from_dotenv(&path).unwrap_err(),
            ApiKeyError::Missing
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
