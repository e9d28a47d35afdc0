//! Where `send` and `proxy` read the API key: `--key-file`, `--key-command`, or (without either)
//! `FABRAIX_API_KEY` / `./.env`. Never a flag's value: the key is never in argv.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use fabraix_scheduler::{
    ApiKey, Clock, KeyCommand, KeyConfig, KeyId, KeyProvider, KeyWatch, LedgerStore, Scheduler,
};

use crate::exit::CliError;
use crate::KeySource;

/// The key's source, and how often it is read again.
#[derive(Debug, Clone, Default, Args)]
pub struct KeyArgs {
    /// Read the key from this file (a mounted Kubernetes or Docker secret): its whole content,
    /// trimmed. Read again every --key-reread; a changed key is used from the next call on.
    #[arg(long, value_name = "FILE", conflicts_with = "key_command")]
    pub key_file: Option<PathBuf>,
    /// Run this command with `sh -c` and read the key from its standard output (e.g.
    /// `vault kv get -field=key secret/fabraix`). Run at start, again on a 401, and every
    /// --key-reread if given.
    #[arg(long, value_name = "COMMAND")]
    pub key_command: Option<String>,
    /// How long --key-command may run before it is killed (e.g. 30s).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub key_command_timeout: Duration,
    /// How often the key's source is read again (e.g. 1s, 15m). Default: 1s for --key-file,
    /// never for --key-command (only on a 401).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub key_reread: Option<Duration>,
}

impl KeyArgs {
    /// The provider these flags name; `None` without --key-file or --key-command.
    pub fn provider(&self) -> Option<KeyProvider> {
        if let Some(path) = &self.key_file {
            return Some(KeyProvider::file(path));
        }
        self.key_command.as_ref().map(|c| {
            KeyProvider::Command(KeyCommand::new(c.clone()).timeout(self.key_command_timeout))
        })
    }

    /// How often the provider is read again, if at all.
    fn reread(&self) -> Option<Duration> {
        match (self.key_reread, &self.key_file) {
            (Some(every), _) => Some(every),
            (None, Some(_)) => Some(Duration::from_secs(1)),
            (None, None) => None,
        }
    }
}

/// A key as read at start, with what keeps it fresh.
#[derive(Debug)]
pub struct ResolvedKey {
    /// The key now.
    pub key: ApiKey,
    /// Its source, if it may change (`--key-file`, `--key-command`).
    provider: Option<KeyProvider>,
    reread: Option<Duration>,
}

impl ResolvedKey {
    /// Reads the key: from the flags' provider if one is named, else from `fallback` (the
    /// environment, or a test's key). The error names the source, never the key.
    pub async fn read(args: &KeyArgs, fallback: &KeySource) -> Result<Self, CliError> {
        match args.provider() {
            Some(provider) => {
                let key = provider
                    .read()
                    .await
                    .map_err(|e| CliError::new(e.to_string()))?;
                Ok(Self {
                    key,
                    provider: Some(provider),
                    reread: args.reread(),
                })
            }
            None => Ok(Self {
                key: fallback.resolve()?,
                provider: None,
                reread: None,
            }),
        }
    }

    /// `config` with a 401 reading the source again before it fails the queue.
    pub fn configure(&self, config: KeyConfig, clock: Arc<dyn Clock>) -> KeyConfig {
        match &self.provider {
            Some(p) => config.on_unauthorized(p.refresher(clock)),
            None => config,
        }
    }

    /// Starts reading the source again every --key-reread (the key rotated when it changed);
    /// `None` when it is not read again. Stops when dropped.
    pub fn watch<S: LedgerStore>(&self, scheduler: &Scheduler<S>, id: &KeyId) -> Option<KeyWatch> {
        let (provider, every) = (self.provider.clone()?, self.reread?);
        Some(KeyWatch::spawn(
            scheduler,
            id.clone(),
            provider,
            self.key.clone(),
            every,
        ))
    }
}

/// A duration: a number and a unit (`ms`, `s`, `m`, `h`), e.g. `500ms`, `30s`, `15m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 30s, 15m, 1h)"))?;
    let per = match unit {
        "ms" => Duration::from_millis(1),
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(format!("{s:?}: the unit must be ms, s, m or h")),
    };
    per.checked_mul(u32::try_from(n).map_err(|_| format!("{s:?} is too long"))?)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{s:?} must be more than zero and at most ~136 years"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_their_unit_or_say_why_not() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5").unwrap_err().contains("unit"));
        assert!(parse_duration("s").unwrap_err().contains("not a duration"));
        assert!(parse_duration("99999999999h").is_err());
    }
}
