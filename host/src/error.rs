use std::io;
use std::path::PathBuf;

/// Every way the host can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
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
    /// Occurs when a key file is not an Ed25519 key in the expected PEM form.
    #[error("{}: not a valid Ed25519 {kind} key: {reason}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// `public` or `secret`.
        kind: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Occurs when a signed file has no valid signature by a trusted key: the trailer is
    /// missing or mangled, names another key, or the signature does not verify.
    #[error("signature check failed: {0}")]
    Signature(String),
    /// Occurs when a file a signed document names (a persisted snapshot body, say) does
    /// not have the SHA-256 the document gives for it: altered or damaged since, or
    /// never the file meant. The signature itself is not in question.
    #[error("{}: not the file its manifest names (SHA-256 differs)", path.display())]
    Digest {
        /// The file.
        path: PathBuf,
    },
    /// Occurs when the filter snapshot a configuration names cannot be verified or
    /// loaded (a file that cannot be read is an [`Error::Io`], which names it already).
    #[error("loading {}: {error}", path.display())]
    Filter {
        /// The snapshot file.
        path: PathBuf,
        /// Why.
        error: Box<Error>,
    },
    /// Occurs when the guest refuses a snapshot (malformed, unsupported, corrupt).
    #[error("the filter guest refused the snapshot: {0}")]
    Load(String),
    /// Occurs when a delta was made for another snapshot than the one it is applied to
    /// (the feed updater then fetches the full snapshot).
    #[error("the delta does not apply to the loaded snapshot: {0}")]
    WrongBase(String),
    /// Occurs when a check is asked of an engine whose guest holds no filter.
    #[error("no filter is loaded")]
    NoFilter,
    /// Occurs when the guest rejects a check's input (a digest of the wrong length).
    #[error("the filter guest rejected the check: {0}")]
    Check(String),
    /// Occurs when the guest traps or overruns its deadline or memory cap. The instance
    /// is discarded; the next call gets a fresh one.
    #[error("the filter guest trapped: {0}")]
    GuestTrap(String),
    /// Occurs when a feed refuses or cannot deliver an update: a document that does not
    /// parse or is out of date, a version that would roll back, a file whose length or
    /// SHA-256 is not what the manifest says, a server that fails. The filter in force
    /// stays in force.
    #[error("feed: {0}")]
    Feed(String),
    /// Occurs when the digest catalog cannot be opened, read or written.
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    /// Occurs when a configuration file or value is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// Occurs when a serving front-end cannot bind its address or start its threads, or
    /// when a serving thread ends before it is told to stop.
    #[error("serving: {0}")]
    Serve(String),
    /// Occurs when the component cannot be compiled or instantiated, or imports anything.
    #[error("unusable guest component: {0}")]
    Component(String),
}

impl From<hashgate_trust::Error> for Error {
    /// The shared documents' errors, as the host's own variants.
    fn from(e: hashgate_trust::Error) -> Error {
        match e {
            hashgate_trust::Error::Io { path, error } => Error::Io { path, error },
            hashgate_trust::Error::Key { path, kind, reason } => Error::Key { path, kind, reason },
            hashgate_trust::Error::Signature(m) => Error::Signature(m),
            hashgate_trust::Error::Document(m) => Error::Feed(m),
        }
    }
}

impl Error {
    /// `error`, met loading the filter at `path`, as it is reported: an [`Error::Io`]
    /// names the file already, anything else becomes an [`Error::Filter`].
    pub fn loading(path: &std::path::Path, error: Error) -> Error {
        match error {
            e @ Error::Io { .. } => e,
            e => Error::Filter {
                path: path.to_path_buf(),
                error: Box::new(e),
            },
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }
}
