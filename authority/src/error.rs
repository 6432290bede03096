use std::io;
use std::path::PathBuf;

/// Every way an authority tool can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Occurs when a list line is not a valid entry; nothing is written.
    #[error("{}:{line}: {reason}", path.display())]
    List {
        /// The list file.
        path: PathBuf,
        /// The 1-based line number.
        line: u64,
        /// What is wrong with the line.
        reason: String,
    },
    /// Occurs when a file cannot be read or written.
    ///
    /// The operating system's reason is part of the message, and so not also the
    /// error's `source()` (a chain printer would say it twice).
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        error: io::Error,
    },
    /// Occurs when a file to be written exists and overwriting was not asked for.
    #[error("{} exists; pass --force to overwrite", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// Occurs when a setting is out of its range (what and why in the message).
    #[error("{0}")]
    Config(String),
    /// Occurs when the filter cannot be built or parsed (parameters out of range, a
    /// malformed snapshot).
    #[error(transparent)]
    Filter(#[from] hashgate_guest::Error),
    /// Occurs when keys or signatures fail.
    #[error(transparent)]
    Trust(#[from] hashgate_trust::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }
}
