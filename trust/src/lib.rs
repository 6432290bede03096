//! What the authority and every gateway must agree on, and nothing else, so that the
//! authority's tools build without the gateway's runtime:
//!
//! * [`keys`]: Ed25519 key files and the signature trailer of every file the authority
//!   publishes;
//! * [`feed`]: the feed's signed documents (root of trust, manifest) and their checks;
//! * [`feedback`]: the operator's signed report of hits to an authority;
//! * [`durable`]: writing a file so that a crash leaves the old contents or the new.
//!
//! ```
//! use hashgate_trust::keys::{self, SecretKey};
//!
//! let key = SecretKey::from_seed(&[1; 32]);
//! let mut signed = b"body".to_vec();
//! key.sign_append(&mut signed);
//! assert_eq!(keys::verify(&signed, &[key.public_key()]).unwrap(), b"body");
//! signed[0] ^= 1;
//! assert!(keys::verify(&signed, &[key.public_key()]).is_err());
//! ```

#![deny(missing_docs)]

pub mod durable;
pub mod feed;
pub mod feedback;
pub mod keys;

use std::io;
use std::path::PathBuf;

/// Every way reading, checking or writing the shared documents can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Occurs when a file cannot be read or written. The operating system's reason is
    /// part of the message, and so not also the error's `source()`.
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
    /// Occurs when a signed file or document has no valid signature by a trusted key:
    /// the trailer is missing or mangled, names another key, the signature does not
    /// verify, or too few of a role's keys signed.
    #[error("signature check failed: {0}")]
    Signature(String),
    /// Occurs when a feed document does not parse, is of the wrong type, or breaks a
    /// rule of the protocol (docs/PROTOCOL.md).
    #[error("feed: {0}")]
    Document(String),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, error: io::Error) -> Error {
        Error::Io {
            path: path.into(),
            error,
        }
    }
}
