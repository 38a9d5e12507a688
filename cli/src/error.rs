//! The tool's one error type: a message that `main` prints as a single line.

use std::fmt;
use std::io;

/// Why a command failed.
#[derive(Debug)]
pub(crate) enum CliError {
    /// A failure to report, already worded for the user.
    Message(String),
    /// Standard output was closed by its reader; the command stops quietly.
    BrokenPipe,
}

impl CliError {
    /// An error with this message.
    pub(crate) fn msg(message: impl Into<String>) -> Self {
        CliError::Message(message.into())
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Multi-line server messages would break the one-line promise.
            CliError::Message(m) => f.write_str(&m.replace('\n', " ")),
            CliError::BrokenPipe => f.write_str("broken pipe"),
        }
    }
}

impl From<io::Error> for CliError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            CliError::BrokenPipe
        } else {
            CliError::msg(format!("I/O error: {e}"))
        }
    }
}

/// Adds what was being done to an error: `"scan: region unavailable ..."`.
pub(crate) trait Context<T> {
    /// Prefixes the error with `what`.
    fn context(self, what: impl fmt::Display) -> Result<T, CliError>;
}

impl<T> Context<T> for Result<T, tikv_tokio::Error> {
    fn context(self, what: impl fmt::Display) -> Result<T, CliError> {
        self.map_err(|e| CliError::msg(format!("{what}: {e}")))
    }
}

impl<T> Context<T> for Result<T, io::Error> {
    fn context(self, what: impl fmt::Display) -> Result<T, CliError> {
        self.map_err(|e| CliError::msg(format!("{what}: {e}")))
    }
}
