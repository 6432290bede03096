//! Gateway settings (resolved from flags and the config file by the CLI).

use std::path::PathBuf;
use std::time::Duration;

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
    /// Whether `GET` responses from the origin are inspected too (CDN / download mode).
    pub scan_responses: bool,
    /// Responses up to this declared length are read whole and refused with 451 when
    /// listed; longer ones are cut off before their last frame.
    pub response_buffer_bytes: u64,
    /// Response digests cached (by URL, strong ETag, length).
    pub response_cache_entries: usize,
    /// How long a cached response digest is trusted.
    pub response_cache_ttl: Duration,
    /// Where copies of blocked uploads are kept, if anywhere.
    pub quarantine: Option<PathBuf>,
    /// S3 mode: where multipart-upload parts are spooled until their completion is checked.
    pub s3_spool: Option<PathBuf>,
    /// S3 mode: credentials to abort refused multipart uploads with, if any.
    pub s3_abort: Option<super::s3::AbortCredentials>,
    /// Serve https with this (reloadable) certificate.
    pub tls: Option<std::sync::Arc<crate::tls::CertStore>>,
    /// A private CA to trust for an https origin, besides the platform's roots.
    pub origin_ca: Option<PathBuf>,
    /// The inspection pipeline's bounds.
    pub inspect: std::sync::Arc<crate::inspect::Limits>,
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
            scan_responses: false,
            response_buffer_bytes: 1 << 20,
            response_cache_entries: 10_000,
            response_cache_ttl: Duration::from_secs(300),
            quarantine: None,
            s3_spool: None,
            s3_abort: None,
            tls: None,
            origin_ca: None,
            inspect: Default::default(),
        }
    }
}
