//! Exit codes, and the error that ends a run before it could finish.

use std::fmt;

/// How a run ended, as the process exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: every call succeeded (or there was nothing to do).
    Success,
    /// 1: some calls failed; their errors are in the output.
    SomeFailed,
    /// 2: a usage or input error (bad flag, bad input line under `--strict`, unreadable file,
    /// missing key, refused base URL).
    Usage,
    /// 130: stopped by Ctrl-C after a graceful stop.
    Interrupted,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::SomeFailed => 1,
            Exit::Usage => 2,
            Exit::Interrupted => 130,
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

/// A run that could not start or go on: a usage or input error (exit 2). The message names the
/// flag, file or input line to fix, and never contains the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError(pub String);

impl CliError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    /// The exit code of this error: always [`Exit::Usage`].
    pub fn exit(&self) -> Exit {
        Exit::Usage
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let codes: Vec<u8> = [
            Exit::Success,
            Exit::SomeFailed,
            Exit::Usage,
            Exit::Interrupted,
        ]
        .iter()
        .map(|e| e.code())
        .collect();
        assert_eq!(codes, [0, 1, 2, 130]);
        assert_eq!(CliError::new("x").exit(), Exit::Usage);
    }
}
