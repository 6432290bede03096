//! The authority's signing key pair, as files.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use hashgate_trust::keys::SecretKey;

use crate::Error;

/// A key pair written by [`generate`].
#[derive(Debug)]
pub struct KeyFiles {
    /// `NAME.key`: the secret key (mode 0600), to keep offline.
    pub secret: PathBuf,
    /// `NAME.pub`: the public key, for gateways and scanners.
    pub public: PathBuf,
    /// The public key's id, as filters and manifests name it.
    pub id: [u8; 8],
}

/// Generates a key pair and writes `NAME.key` and `NAME.pub` for `out` = `NAME`,
/// creating missing directories (as `build --out` does). Without `force`, an existing
/// file of either name is an error and nothing is written.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let keys = hashgate_authority::keys::generate(&dir.path().join("new/auth"), false).unwrap();
/// assert!(keys.secret.ends_with("new/auth.key") && keys.public.exists());
/// assert!(hashgate_authority::keys::generate(&dir.path().join("new/auth"), false).is_err());
/// ```
pub fn generate(out: &Path, force: bool) -> Result<KeyFiles, Error> {
    let secret_path = with_suffix(out, "key");
    let public_path = with_suffix(out, "pub");
    if !force {
        for path in [&secret_path, &public_path] {
            if path.exists() {
                return Err(Error::Exists { path: path.clone() });
            }
        }
    }
    if let Some(dir) = secret_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let key = SecretKey::generate();
    write_secret(&secret_path, key.to_pem().as_bytes())?;
    crate::build::write_atomically(&public_path, &[key.public_key().to_pem().as_bytes()])?;
    Ok(KeyFiles {
        secret: secret_path,
        public: public_path,
        id: key.public_key().id(),
    })
}

/// Writes a secret file, readable by its owner only, and syncs it.
pub(crate) fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(path, e))
}

fn with_suffix(base: &Path, suffix: &str) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}
