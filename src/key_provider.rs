//! Where the API key comes from, read again when it may have changed: the environment or a
//! `.env` file, a file (a mounted Kubernetes or Docker secret), or a command (a Vault or cloud
//! secret-manager CLI). [`KeyWatch`] re-reads a provider on the scheduler's clock and rotates the
//! key when it changed ([`Scheduler::rotate_key`]: queued jobs stay queued); [`KeyRefresh`] is what
//! a 401 consults before it fails the key's queue ([`KeyConfig::on_unauthorized`]).
//!
//! The key never goes through argv: a command prints it on its standard output.
//!
//! [`KeyConfig::on_unauthorized`]: crate::KeyConfig::on_unauthorized

use std::fmt;
use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::api_key::{ApiKey, ApiKeyError};
use crate::cause::Cause;
use crate::clock::{Clock, Instant};
use crate::key_id::KeyId;
use crate::ledger::LedgerStore;
use crate::scheduler::Scheduler;

/// The most bytes read from a key file or a command's output (a key is far shorter).
pub const MAX_KEY_SOURCE_BYTES: usize = 64 * 1024;

/// How long a key command may run by default before it is killed.
pub const DEFAULT_KEY_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The most of a failed command's standard error kept in its error, in characters.
const STDERR_EXCERPT_CHARS: usize = 300;

/// Where the key is read from.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum KeyProvider {
    /// `FABRAIX_API_KEY`, else a `FABRAIX_API_KEY=` line of `./.env` ([`ApiKey::from_env`]).
    Env,
    /// A `FABRAIX_API_KEY=` line of this dotenv file.
    DotEnv(PathBuf),
    /// The whole content of this file, trimmed (a mounted secret).
    File(PathBuf),
    /// What this command prints on its standard output, trimmed.
    Command(KeyCommand),
    /// This key (tests, embedding); never changes.
    Fixed(ApiKey),
}

/// A command that prints the key: run as `sh -c COMMAND`, with no input, its output read up to
/// [`MAX_KEY_SOURCE_BYTES`], killed after its timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyCommand {
    command: String,
    timeout: Duration,
}

impl KeyCommand {
    /// `command`, run by `sh -c`, with [`DEFAULT_KEY_COMMAND_TIMEOUT`].
    ///
    /// ```
    /// use fabraix_scheduler::KeyCommand;
    /// let c = KeyCommand::new("vault kv get -field=key secret/fabraix");
    /// assert_eq!(c.command(), "vault kv get -field=key secret/fabraix");
    /// ```
    pub fn new(command: impl Into<String>) -> Self {
        Self {
            command: command.into(),
            timeout: DEFAULT_KEY_COMMAND_TIMEOUT,
        }
    }

    /// How long the command may run (at least 1 ms) before it is killed and the read fails.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The command line.
    pub fn command(&self) -> &str {
        &self.command
    }
}

impl KeyProvider {
    /// A file provider.
    ///
    /// ```
    /// use fabraix_scheduler::KeyProvider;
    /// let p = KeyProvider::file("/run/secrets/fabraix-key");
    /// assert_eq!(p.to_string(), "the file /run/secrets/fabraix-key");
    /// ```
    pub fn file(path: impl Into<PathBuf>) -> Self {
        KeyProvider::File(path.into())
    }

    /// A command provider (see [`KeyCommand`]).
    ///
    /// ```
    /// use fabraix_scheduler::KeyProvider;
    /// let p = KeyProvider::command("cat /run/secrets/key");
    /// assert_eq!(p.to_string(), "the command `cat /run/secrets/key`");
    /// ```
    pub fn command(command: impl Into<String>) -> Self {
        KeyProvider::Command(KeyCommand::new(command))
    }

    /// Reads the key now. The error says which source failed and why, never the key.
    pub async fn read(&self) -> Result<ApiKey, KeyProviderError> {
        match self {
            KeyProvider::Env => ApiKey::from_env().map_err(KeyProviderError::Env),
            KeyProvider::DotEnv(path) => ApiKey::from_dotenv(path).map_err(KeyProviderError::Env),
            KeyProvider::File(path) => read_key_file(path),
            KeyProvider::Command(command) => run_key_command(command).await,
            KeyProvider::Fixed(key) => Ok(key.clone()),
        }
    }

    /// Whether the key may change, so that reading it again can tell something new.
    pub fn may_change(&self) -> bool {
        !matches!(self, KeyProvider::Fixed(_))
    }

    /// What a 401 consults ([`KeyConfig::on_unauthorized`](crate::KeyConfig::on_unauthorized)):
    /// this provider read again (once for any number of 401s within a second, on `clock`).
    pub fn refresher(&self, clock: Arc<dyn Clock>) -> Arc<dyn KeyRefresh> {
        Arc::new(ProviderRefresh {
            provider: self.clone(),
            clock,
            last: tokio::sync::Mutex::new(None),
        })
    }
}

impl fmt::Display for KeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyProvider::Env => f.write_str("FABRAIX_API_KEY (or ./.env)"),
            KeyProvider::DotEnv(path) => write!(f, "the dotenv file {}", path.display()),
            KeyProvider::File(path) => write!(f, "the file {}", path.display()),
            KeyProvider::Command(c) => write!(f, "the command `{}`", c.command),
            KeyProvider::Fixed(key) => write!(f, "the key {}", key.fingerprint()),
        }
    }
}

fn read_key_file(path: &Path) -> Result<ApiKey, KeyProviderError> {
    let io = |e: std::io::Error| KeyProviderError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
        source: Some(Cause::new(e)),
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_SOURCE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() > MAX_KEY_SOURCE_BYTES {
        return Err(KeyProviderError::File {
            path: path.to_path_buf(),
            reason: format!("larger than {MAX_KEY_SOURCE_BYTES} bytes"),
            source: None,
        });
    }
    let text = String::from_utf8(bytes).map_err(|_| KeyProviderError::FileKey {
        path: path.to_path_buf(),
        error: ApiKeyError::InvalidCharacters,
    })?;
    ApiKey::new(text).map_err(|error| KeyProviderError::FileKey {
        path: path.to_path_buf(),
        error,
    })
}

async fn run_key_command(c: &KeyCommand) -> Result<ApiKey, KeyProviderError> {
    let failed = |reason: String| KeyProviderError::Command {
        command: c.command.clone(),
        reason,
        source: None,
    };
    let io_failed = |what: &str, e: std::io::Error| KeyProviderError::Command {
        command: c.command.clone(),
        reason: format!("{what}: {e}"),
        source: Some(Cause::new(e)),
    };
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&c.command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| io_failed("cannot start sh", e))?;
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(failed("its output could not be captured".into()));
    };
    let limit = MAX_KEY_SOURCE_BYTES as u64 + 1;
    let run = async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (mut stdout, mut stderr) = ((&mut stdout).take(limit), (&mut stderr).take(limit));
        let (read_out, read_err, status) = tokio::join!(
            stdout.read_to_end(&mut out),
            stderr.read_to_end(&mut err),
            child.wait()
        );
        read_out.and(read_err).and(status).map(|s| (s, out, err))
    };
    let (status, out, err) = match tokio::time::timeout(c.timeout, run).await {
        Ok(done) => done.map_err(|e| io_failed("cannot run it", e))?,
        Err(_) => {
            return Err(failed(format!(
                "it did not finish within {:?} (killed)",
                c.timeout
            )))
        }
    };
    if !status.success() {
        let said: String = String::from_utf8_lossy(&err)
            .trim()
            .chars()
            .take(STDERR_EXCERPT_CHARS)
            .collect();
        let said = if said.is_empty() {
            "nothing on stderr".to_string()
        } else {
            format!("stderr: {said}")
        };
        return Err(failed(format!("it exited with {status} ({said})")));
    }
    if out.len() > MAX_KEY_SOURCE_BYTES {
        return Err(failed(format!(
            "it printed more than {MAX_KEY_SOURCE_BYTES} bytes"
        )));
    }
    let text = String::from_utf8(out).map_err(|_| KeyProviderError::CommandKey {
        command: c.command.clone(),
        error: ApiKeyError::InvalidCharacters,
    })?;
    ApiKey::new(text).map_err(|error| KeyProviderError::CommandKey {
        command: c.command.clone(),
        error,
    })
}

/// Why a provider gave no key. Never contains the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyProviderError {
    /// The environment or a dotenv file has no usable key.
    #[error("{0}")]
    Env(#[source] ApiKeyError),
    /// The key file cannot be read.
    #[error("key file {}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
        /// The I/O error, if one is why.
        source: Option<Cause>,
    },
    /// The key file holds no usable key.
    #[error("key file {}: {error}", path.display())]
    FileKey {
        /// The file.
        path: PathBuf,
        /// What is wrong with its content.
        #[source]
        error: ApiKeyError,
    },
    /// The key command failed (could not start, exited with an error, timed out).
    #[error("key command `{command}` failed: {reason}")]
    Command {
        /// The command line.
        command: String,
        /// What happened.
        reason: String,
        /// The I/O error, if one is what happened (it could not start, its output could not be
        /// read).
        source: Option<Cause>,
    },
    /// The key command printed no usable key.
    #[error("key command `{command}` printed no usable key: {error}")]
    CommandKey {
        /// The command line.
        command: String,
        /// What is wrong with its output.
        #[source]
        error: ApiKeyError,
    },
}

/// The boxed future of [`KeyRefresh::refresh`].
pub type RefreshFuture<'a> = Pin<Box<dyn Future<Output = Option<ApiKey>> + Send + 'a>>;

/// Consulted when the server answers 401 for a key
/// ([`KeyConfig::on_unauthorized`](crate::KeyConfig::on_unauthorized)): a new key to send with,
/// or `None` to fail the key's queue.
pub trait KeyRefresh: Send + Sync + fmt::Debug + 'static {
    /// A key to use instead of `refused` (which the server just answered 401), if there is one.
    /// The key sends nothing until this answers (the other keys of its dispatch task go on): keep
    /// it short.
    fn refresh<'a>(&'a self, refused: &'a ApiKey) -> RefreshFuture<'a>;
}

/// A provider read again on a 401 ([`KeyProvider::refresher`]).
#[derive(Debug)]
struct ProviderRefresh {
    provider: KeyProvider,
    clock: Arc<dyn Clock>,
    /// The last read and when it was made: a burst of 401s (every call on the wire at once)
    /// reads the provider once.
    last: tokio::sync::Mutex<Option<(Instant, ApiKey)>>,
}

/// How long a read on a 401 answers the 401s that follow.
const REFRESH_REUSE: Duration = Duration::from_secs(1);

impl KeyRefresh for ProviderRefresh {
    fn refresh<'a>(&'a self, refused: &'a ApiKey) -> RefreshFuture<'a> {
        Box::pin(async move {
            if !self.provider.may_change() {
                return None;
            }
            let mut last = self.last.lock().await;
            let now = self.clock.now();
            let key = match &*last {
                Some((at, key)) if now.saturating_duration_since(*at) < REFRESH_REUSE => {
                    key.clone()
                }
                _ => match self.provider.read().await {
                    Ok(key) => {
                        *last = Some((now, key.clone()));
                        key
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "401: the key could not be read again");
                        return None;
                    }
                },
            };
            // Read once: the same key again means the key itself is refused.
            (key != *refused).then_some(key)
        })
    }
}

/// A task that reads a provider again every `every` (on the scheduler's clock) and rotates the
/// key when what it reads changed. A failed read keeps the key in use (and is logged, without
/// the key). Stops when dropped.
#[derive(Debug)]
pub struct KeyWatch {
    task: tokio::task::JoinHandle<()>,
}

impl KeyWatch {
    /// Watches `provider` for the key `key` of `scheduler`, whose key is `current` now (call
    /// inside a tokio runtime). `every` is at least 10 ms.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use fabraix_scheduler::{ApiKey, KeyConfig, KeyId, KeyProvider, KeyWatch, Quota, Scheduler};
    /// use std::time::Duration;
    /// let scheduler = Scheduler::builder().build().unwrap();
    /// let key = ApiKey::new("secret").unwrap();
    /// let config = KeyConfig::new("k", key.clone(), "https://api.fabraix.com/v1", Quota::development()).unwrap();
    /// scheduler.add_key(config).await.unwrap();
    /// let provider = KeyProvider::file("/run/secrets/fabraix-key");
    /// let watch = KeyWatch::spawn(&scheduler, KeyId::new("k"), provider, key, Duration::from_secs(1));
    /// drop(watch); // stops it
    /// # }
    /// ```
    pub fn spawn<S: LedgerStore>(
        scheduler: &Scheduler<S>,
        key: KeyId,
        provider: KeyProvider,
        current: ApiKey,
        every: Duration,
    ) -> Self {
        let scheduler = scheduler.clone();
        let every = every.max(Duration::from_millis(10));
        let task = tokio::spawn(async move {
            let clock = Arc::clone(scheduler.clock());
            let mut current = current;
            let mut failing = false;
            loop {
                clock.sleep_until(clock.now() + every).await;
                match provider.read().await {
                    Ok(new) if new != current => {
                        if !scheduler.rotate_key(&key, new.clone()) {
                            return; // the key was removed
                        }
                        current = new;
                        failing = false;
                    }
                    Ok(_) => failing = false,
                    Err(e) if !failing => {
                        tracing::warn!(key = %key, error = %e, "the key could not be read again; the key in use stays");
                        failing = true;
                    }
                    Err(_) => {}
                }
            }
        });
        Self { task }
    }
}

impl Drop for KeyWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fbx-keyprov-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[tokio::test]
    async fn a_file_is_read_trimmed_and_its_problems_are_named() {
        let d = dir("file");
        let path = d.join("key");
        std::fs::write(&path, "file-secret-1\n").unwrap();
        let p = KeyProvider::file(&path);
        assert_eq!(
            p.read().await.unwrap(),
            ApiKey::new("file-secret-1").unwrap()
        );
        std::fs::write(&path, "").unwrap();
        let e = p.read().await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("key file {}: the API key is empty", path.display())
        );
        std::fs::write(&path, vec![b'a'; MAX_KEY_SOURCE_BYTES + 1]).unwrap();
        assert!(p
            .read()
            .await
            .unwrap_err()
            .to_string()
            .contains("larger than"));
        let missing = KeyProvider::file(d.join("nope"));
        let e = missing.read().await.unwrap_err().to_string();
        assert!(e.starts_with("key file ") && e.contains("nope"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn a_command_prints_the_key_and_a_failing_one_says_why() {
        let p = KeyProvider::command("printf 'cmd-secret-1\\n'");
        assert_eq!(
            p.read().await.unwrap(),
            ApiKey::new("cmd-secret-1").unwrap()
        );
        let p = KeyProvider::command("echo 'vault: permission denied' >&2; exit 3");
        let e = p.read().await.unwrap_err().to_string();
        assert!(e.contains("exited with exit status: 3"), "{e}");
        assert!(e.contains("stderr: vault: permission denied"), "{e}");
        let p = KeyProvider::command("true");
        let e = p.read().await.unwrap_err().to_string();
        assert!(
            e.contains("printed no usable key: the API key is empty"),
            "{e}"
        );
        let p = KeyProvider::Command(KeyCommand::new("sleep 5").timeout(Duration::from_millis(50)));
        let e = p.read().await.unwrap_err().to_string();
        assert!(e.contains("did not finish within 50ms (killed)"), "{e}");
    }

    #[tokio::test]
    async fn a_refresh_gives_a_new_key_once_and_never_the_refused_one() {
        let d = dir("refresh");
        let path = d.join("key");
        std::fs::write(&path, "old-secret").unwrap();
        let clock: Arc<dyn Clock> = Arc::new(crate::TokioClock::new());
        let refresh = KeyProvider::file(&path).refresher(clock);
        let old = ApiKey::new("old-secret").unwrap();
        // The file still holds the refused key: nothing new.
        assert_eq!(refresh.refresh(&old).await, None);
        std::fs::write(&path, "new-secret").unwrap();
        tokio::time::pause();
        tokio::time::advance(REFRESH_REUSE).await;
        let new = ApiKey::new("new-secret").unwrap();
        assert_eq!(refresh.refresh(&old).await, Some(new.clone()));
        // The new key refused too: it is not offered again.
        assert_eq!(refresh.refresh(&new).await, None);
        let fixed = KeyProvider::Fixed(old.clone()).refresher(Arc::new(crate::TokioClock::new()));
        assert_eq!(fixed.refresh(&old).await, None);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
