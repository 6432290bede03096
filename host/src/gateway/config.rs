//! Gateway settings, resolved from the config file (with the command line's flags laid
//! over it: [`crate::config::FileConfig::overlay`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::FileConfig;
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
    /// tus mode: where resumable-upload pieces are spooled until the upload is checked.
    pub tus_spool: Option<PathBuf>,
    /// Nextcloud mode: where chunked-upload chunks are spooled until the file is checked.
    pub nextcloud_spool: Option<PathBuf>,
    /// How long an upload in pieces may sit in a spool untouched before it is removed as
    /// abandoned.
    pub spool_expiry: Duration,
    /// S3 mode: the gateway's own credentials, to read copy sources and abort refused
    /// uploads with, if any.
    pub s3: Option<super::s3::S3Credentials>,
    /// Serve https with this (reloadable) certificate.
    pub tls: Option<std::sync::Arc<crate::tls::CertStore>>,
    /// A private CA to trust for an https origin, besides the platform's roots.
    pub origin_ca: Option<PathBuf>,
    /// The inspection pipeline's bounds.
    pub inspect: std::sync::Arc<crate::inspect::Limits>,
    /// The digest catalog, if one is kept.
    pub catalog: Option<crate::enforce::retro::CatalogSettings>,
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
            tus_spool: None,
            nextcloud_spool: None,
            spool_expiry: Duration::from_secs(7 * 24 * 3600),
            s3: None,
            tls: None,
            origin_ca: None,
            inspect: Default::default(),
            catalog: None,
        }
    }

    /// The settings `file` makes, checked: the origin is an http(s) URL with a host, or
    /// else the store (default `hashgate-store`) is a directory, created if missing; S3
    /// spooling needs an origin and `[s3_abort]` needs S3 spooling; the quarantine is
    /// created and is not inside the store (it would be served); TLS needs both halves
    /// of its pair.
    pub fn resolve(file: &FileConfig) -> Result<Config, Error> {
        let backend = match (&file.origin, &file.store) {
            (Some(origin), _) => Backend::Origin(origin_uri(origin)?),
            (None, Some(dir)) => Backend::Store(dir.clone()),
            (None, None) => Backend::Store(PathBuf::from("hashgate-store")),
        };
        if let Backend::Store(dir) = &backend {
            create_dir(dir)?;
        }
        let mut config = Config::new(backend);
        if let Some(table) = &file.inspect {
            config.inspect = std::sync::Arc::new(table.limits());
        }
        if let Some(m) = &file.inspect_methods {
            config.inspect_methods = m.clone();
        }
        let secs = Duration::from_secs;
        config.max_body = file.max_body_bytes.unwrap_or(config.max_body);
        config.header_timeout = file.header_timeout_secs.map_or(config.header_timeout, secs);
        config.body_timeout = file.body_timeout_secs.map_or(config.body_timeout, secs);
        config.origin_timeout = file.origin_timeout_secs.map_or(config.origin_timeout, secs);
        config.max_connections = file.max_connections.unwrap_or(config.max_connections);
        config.shutdown_grace = file.shutdown_grace_secs.map_or(config.shutdown_grace, secs);
        config.scan_responses = file.scan_responses.unwrap_or(false);
        config.response_buffer_bytes = file
            .response_buffer_bytes
            .unwrap_or(config.response_buffer_bytes);
        (config.response_cache_entries, config.response_cache_ttl) =
            file.response_cache(config.response_cache_entries, config.response_cache_ttl);
        config.s3_spool = file.s3_spool_dir.clone();
        if let Some(dir) = &config.s3_spool {
            if !matches!(config.backend, Backend::Origin(_)) {
                return Err(Error::Config(
                    "S3 spooling (s3_spool_dir, --s3-spool) needs an S3 origin".into(),
                ));
            }
            create_dir(dir)?;
        }
        config.spool_expiry = match file.spool_expire_secs {
            Some(0) => return Err(Error::Config("spool_expire_secs must be at least 1".into())),
            v => v.map_or(config.spool_expiry, secs),
        };
        config.tus_spool = file.tus_spool_dir.clone();
        config.nextcloud_spool = file.nextcloud_spool_dir.clone();
        for (dir, what) in [
            (
                &config.tus_spool,
                "tus spooling (tus_spool_dir, --tus-spool) needs a tus origin",
            ),
            (
                &config.nextcloud_spool,
                "chunk spooling (nextcloud_spool_dir, --nextcloud-spool) needs a Nextcloud origin",
            ),
        ] {
            if let Some(dir) = dir {
                if !matches!(config.backend, Backend::Origin(_)) {
                    return Err(Error::Config(what.into()));
                }
                create_dir(dir)?;
            }
        }
        config.s3 = file.s3.as_ref().map(|a| super::s3::S3Credentials {
            access_key: a.access_key.clone(),
            secret_key: a.secret_key.clone(),
            region: a.region.clone().unwrap_or_else(|| "us-east-1".into()),
        });
        if config.s3.is_some() && config.s3_spool.is_none() {
            return Err(Error::Config("[s3] needs s3_spool_dir (S3 mode)".into()));
        }
        config.quarantine = file.quarantine_dir.clone();
        if let Some(dir) = &config.quarantine {
            create_dir(dir)?;
            if let Backend::Store(store) = &config.backend {
                let canonical = |p: &Path| p.canonicalize().map_err(|e| Error::io(p, e));
                if canonical(dir)?.starts_with(canonical(store)?) {
                    return Err(Error::Config(
                        "the quarantine directory must not be inside the store (it would be served)"
                            .into(),
                    ));
                }
            }
        }
        if names_quarantine(file) && config.quarantine.is_none() {
            return Err(Error::Config(
                "an action of \"quarantine\" needs quarantine_dir (where the copies are kept)"
                    .into(),
            ));
        }
        config.origin_ca = file.origin_ca.clone();
        config.catalog = crate::enforce::retro::CatalogSettings::resolve(file)?;
        if let Some(catalog) = &config.catalog {
            if catalog.action == crate::config::RetroAction::Quarantine
                && config.quarantine.is_none()
            {
                return Err(Error::Config(
                    "[catalog] action = \"quarantine\" needs quarantine_dir".into(),
                ));
            }
        }
        config.tls =
            crate::tls::CertStore::configured(file.tls_cert.as_deref(), file.tls_key.as_deref())?;
        Ok(config)
    }
}

/// Whether any category action, top-level or of a `[[feed]]` table, is `quarantine`.
fn names_quarantine(file: &crate::config::FileConfig) -> bool {
    let quarantines =
        |actions: &Option<std::collections::HashMap<String, crate::enforce::Action>>| {
            actions
                .iter()
                .flat_map(|a| a.values())
                .any(|a| *a == crate::enforce::Action::Quarantine)
        };
    let in_tables = match &file.feed {
        Some(crate::config::FeedSetting::Authorities(tables)) => {
            tables.iter().any(|t| quarantines(&t.actions))
        }
        _ => false,
    };
    quarantines(&file.actions) || in_tables
}

/// An origin URL, checked.
fn origin_uri(origin: &str) -> Result<hyper::Uri, Error> {
    crate::tls::peer_url("origin", origin)
}

fn create_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> FileConfig {
        toml::from_str(text).unwrap()
    }

    fn refusal(text: &str) -> String {
        Config::resolve(&file(text)).unwrap_err().to_string()
    }

    #[test]
    fn an_origin_must_be_an_http_url_with_a_host() {
        for bad in ["ftp://host", "http://", "/just/a/path", "not a url"] {
            let e = refusal(&format!("origin = {bad:?}"));
            assert!(e.contains("origin"), "{bad}: {e}");
        }
        let config = Config::resolve(&file(r#"origin = "https://storage.example:8443""#)).unwrap();
        assert!(matches!(config.backend, Backend::Origin(u) if u.port_u16() == Some(8443)));
    }

    #[test]
    fn s3_settings_need_an_origin_and_spooling() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let spool = dir.path().join("spool");
        let e = refusal(&format!("store = {store:?}\ns3_spool_dir = {spool:?}"));
        assert!(e.contains("S3 origin"), "{e}");
        let e = refusal(
            "origin = \"http://127.0.0.1:9000\"\n[s3_abort]\naccess_key = \"a\"\nsecret_key = \"b\"",
        );
        assert!(e.contains("s3_spool_dir"), "{e}");
    }

    #[test]
    fn spools_expire_after_a_week_unless_told_otherwise() {
        let origin = "origin = \"http://127.0.0.1:9000\"\n";
        let config = Config::resolve(&file(origin)).unwrap();
        assert_eq!(config.spool_expiry, Duration::from_secs(7 * 24 * 3600));
        let config = Config::resolve(&file(&format!("{origin}spool_expire_secs = 60"))).unwrap();
        assert_eq!(config.spool_expiry, Duration::from_secs(60));
        // Zero would remove every upload between two of its pieces.
        let e = refusal(&format!("{origin}spool_expire_secs = 0"));
        assert!(e.contains("spool_expire_secs"), "{e}");
    }

    #[test]
    fn the_quarantine_is_never_inside_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let inside = store.join("q");
        let e = refusal(&format!("store = {store:?}\nquarantine_dir = {inside:?}"));
        assert!(e.contains("inside the store"), "{e}");
        // Beside it is fine, and both are created.
        let beside = dir.path().join("q");
        Config::resolve(&file(&format!(
            "store = {store:?}\nquarantine_dir = {beside:?}"
        )))
        .unwrap();
        assert!(store.is_dir() && beside.is_dir());
    }

    #[test]
    fn tls_needs_both_halves() {
        let e = refusal("origin = \"http://o\"\ntls_cert = \"/c.pem\"");
        assert!(e.contains("tls_key"), "{e}");
    }

    #[test]
    fn the_file_sets_what_it_names_and_defaults_stay_for_the_rest() {
        let config = Config::resolve(&file(
            r#"
            origin = "http://127.0.0.1:9000"
            max_body_bytes = 1000
            body_timeout_secs = 7
            response_cache_secs = 9
            "#,
        ))
        .unwrap();
        assert_eq!(config.max_body, 1000);
        assert_eq!(config.body_timeout, Duration::from_secs(7));
        assert_eq!(config.response_cache_ttl, Duration::from_secs(9));
        let default = Config::new(config.backend.clone());
        assert_eq!(config.header_timeout, default.header_timeout);
        assert_eq!(
            config.response_cache_entries,
            default.response_cache_entries
        );
        assert!(!config.scan_responses);
    }
}
