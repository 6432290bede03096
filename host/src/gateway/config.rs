//! Gateway settings, and the TOML file they can come from (documented in README.md).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::Error;

/// Where clean uploads go.
#[derive(Clone, Debug)]
pub enum Backend {
    /// A reverse-proxied HTTP origin.
    Origin(hyper::Uri),
    /// The embedded object store, under this directory.
    Store(PathBuf),
}

/// Resolved gateway settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Origin or store.
    pub backend: Backend,
    /// Methods whose bodies are inspected; others are proxied untouched.
    pub inspect_methods: Vec<String>,
    /// Largest body accepted (413 above).
    pub max_body: u64,
    /// Time allowed for a client to send its request headers (408 after).
    pub header_timeout: Duration,
    /// Longest pause allowed between body frames (408 after).
    pub body_timeout: Duration,
    /// Time allowed to connect to the origin and for it to answer (504 after).
    pub origin_timeout: Duration,
    /// Connections served at once; more wait in the listen queue.
    pub max_connections: usize,
    /// How long in-flight requests may run after a shutdown signal.
    pub shutdown_grace: Duration,
}

impl Config {
    /// Defaults for `backend`.
    pub fn new(backend: Backend) -> Config {
        Config {
            backend,
            inspect_methods: vec!["PUT".into(), "POST".into(), "PATCH".into()],
            max_body: 5 << 30,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            origin_timeout: Duration::from_secs(30),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// The gateway's configuration file. Every field is optional; command-line flags win.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Client listener address.
    pub listen: Option<String>,
    /// Origin base URL (`http://host:port`).
    pub origin: Option<String>,
    /// Embedded store directory (used when no origin is given).
    pub store: Option<PathBuf>,
    /// Signed filter snapshot.
    pub filter: Option<PathBuf>,
    /// Authority public key.
    #[serde(rename = "pub")]
    pub public_key: Option<PathBuf>,
    /// Admin listener address.
    pub admin: Option<String>,
    /// Audit log file.
    pub audit_log: Option<PathBuf>,
    /// Allow-list file of exact digests.
    pub allow_list: Option<PathBuf>,
    /// Inspected methods.
    pub inspect_methods: Option<Vec<String>>,
    /// Largest body in bytes.
    pub max_body_bytes: Option<u64>,
    /// Header timeout in seconds.
    pub header_timeout_secs: Option<u64>,
    /// Body idle timeout in seconds.
    pub body_timeout_secs: Option<u64>,
    /// Origin timeout in seconds.
    pub origin_timeout_secs: Option<u64>,
    /// Concurrent connections.
    pub max_connections: Option<usize>,
    /// Shutdown grace in seconds.
    pub shutdown_grace_secs: Option<u64>,
    /// `fail_closed` (default) or `fail_open`.
    pub on_guest_failure: Option<crate::enforce::FailureMode>,
    /// Actions: `default = "block"` and one entry per category.
    pub actions: Option<std::collections::HashMap<String, crate::enforce::Action>>,
}

impl FileConfig {
    /// Reads a TOML file.
    pub fn read(path: &Path) -> Result<FileConfig, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }
}
