//! The configuration file (TOML) every front-end reads: the filter, the policy and the
//! audit log at the top level, shared; the gateway's settings beside them; the ICAP
//! server's in an `[icap]` table. Unknown keys are errors, so a typo never silently
//! leaves a default in force. Command-line flags win over the file: the CLI turns its
//! flags into a [`FileConfig`] of their own and lays it over the file's
//! ([`FileConfig::overlay`]); the front-ends resolve their settings from the result
//! (`gateway::Config::resolve`, `icap::IcapConfig::resolve`). Documented in README.md.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::enforce::{Action, FailureMode};
use crate::Error;

/// The top-level `feed`: one feed's URL (`feed = "https://…"`, with the top-level
/// `root`, `state_dir`, `filter`, … beside it), or one `[[feed]]` table per authority.
#[derive(Clone, Debug)]
pub enum FeedSetting {
    /// The manifest URL of the one feed followed.
    Url(String),
    /// Several authorities, each with its own filter or feed and policy.
    Authorities(Vec<AuthorityFileConfig>),
}

impl<'de> Deserialize<'de> for FeedSetting {
    // By hand rather than `#[serde(untagged)]`, so that a mistake inside a `[[feed]]`
    // table is reported as itself, not as "did not match any variant".
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<FeedSetting, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = FeedSetting;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a manifest URL, or [[feed]] tables")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FeedSetting, E> {
                Ok(FeedSetting::Url(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<FeedSetting, A::Error> {
                let list = Vec::<AuthorityFileConfig>::deserialize(
                    serde::de::value::SeqAccessDeserializer::new(seq),
                )?;
                Ok(FeedSetting::Authorities(list))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// One `[[feed]]` table: an authority the operator follows, its filter (a feed, or a
/// fixed snapshot and key) and its own policy.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorityFileConfig {
    /// The authority's name in audit records, metrics, `/readyz` and refusals: letters,
    /// digits, `-`, `_` and `.`.
    pub name: String,
    /// URL of its feed's signed manifest (with `root`); or give `filter` and `pub`.
    pub url: Option<String>,
    /// Its root of trust (a root envelope file), for `url`.
    pub root: Option<PathBuf>,
    /// Where its feed's accepted state is kept (default: the top-level `state_dir`,
    /// or `hashgate-state`, joined with `name`).
    pub state_dir: Option<PathBuf>,
    /// How often to poll its feed, in seconds.
    pub poll_secs: Option<u64>,
    /// Deadline of one download from its feed, in seconds.
    pub timeout_secs: Option<u64>,
    /// A private CA to trust for its https feed.
    pub ca: Option<PathBuf>,
    /// A fixed signed filter snapshot, instead of `url`.
    pub filter: Option<PathBuf>,
    /// Its public key, for `filter`.
    #[serde(rename = "pub")]
    pub public_key: Option<PathBuf>,
    /// Action per category of its lists (`default` for the rest): its own, instead of
    /// the top-level `actions`.
    pub actions: Option<HashMap<String, Action>>,
    /// Confirmation of its hits with its own range API.
    pub confirm: Option<crate::enforce::ConfirmConfig>,
    /// Signed reports of its filter's hits to it (each authority learns only of its
    /// own list).
    pub feedback: Option<crate::enforce::feedback::FeedbackConfig>,
}

impl AuthorityFileConfig {
    /// Checks what the table alone can tell: a usable name, and exactly one of a feed
    /// (with its root) or a fixed filter (with its key).
    pub fn check(&self) -> Result<(), Error> {
        let bad = |why: String| Err(Error::Config(format!("[[feed]] {:?}: {why}", self.name)));
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !name_ok {
            return bad("name must be 1 to 64 letters, digits, '-', '_' or '.'".into());
        }
        match (&self.url, &self.filter) {
            (Some(_), Some(_)) => bad("give url (a feed) or filter (a snapshot), not both".into()),
            (None, None) => bad("needs url (a feed, with root) or filter (with pub)".into()),
            (Some(_), None) if self.root.is_none() => bad("url needs root".into()),
            (None, Some(_)) if self.public_key.is_none() => bad("filter needs pub".into()),
            (None, Some(_)) if self.root.is_some() || self.poll_secs.is_some() => {
                bad("root and poll_secs are for a feed (url), not a fixed filter".into())
            }
            _ => Ok(()),
        }
    }
}

/// The whole file. Every field is optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Gateway client listener address.
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
    /// URL of a feed's signed manifest to follow instead of a fixed `filter`; or, as
    /// `[[feed]]` tables, several authorities to follow at once.
    pub feed: Option<FeedSetting>,
    /// The authority's root of trust for the feed (a root envelope file).
    pub root: Option<PathBuf>,
    /// Where the feed's accepted state is kept across restarts.
    pub state_dir: Option<PathBuf>,
    /// How often to poll the feed, in seconds.
    pub feed_poll_secs: Option<u64>,
    /// Deadline of one feed download, in seconds.
    pub feed_timeout_secs: Option<u64>,
    /// A private CA to trust for an https feed.
    pub feed_ca: Option<PathBuf>,
    /// Confirmation of hits with the authority's range API, and what each action needs.
    pub confirm: Option<crate::enforce::ConfirmConfig>,
    /// Admin listener address.
    pub admin: Option<String>,
    /// Serving threads (default: one per core).
    pub workers: Option<usize>,
    /// Audit log file.
    pub audit_log: Option<PathBuf>,
    /// The operator's secret key (`hashgate keygen`) the audit log's chain is signed
    /// with (`hashgate audit verify --pub` checks it).
    pub audit_key: Option<PathBuf>,
    /// A checkpoint after this many audit records at most (default 1,000).
    pub audit_checkpoint_records: Option<u64>,
    /// A checkpoint this many seconds after the first unsigned record at most
    /// (default 60).
    pub audit_checkpoint_secs: Option<u64>,
    /// Allow-list file of exact digests.
    pub allow_list: Option<PathBuf>,
    /// Where the allow-list entries added through the admin listener are kept (without
    /// it they last until the process ends).
    pub allow_list_local: Option<PathBuf>,
    /// A file holding the bearer token the admin listener's write endpoints
    /// (`/allow-list`) require; without it they are off.
    pub admin_token_file: Option<PathBuf>,
    /// Hit storms: thresholds and what a storm does (`enforce::storm`).
    pub storm: Option<crate::enforce::StormConfig>,
    /// Signed reports of hits to the authority (`enforce::feedback`).
    pub feedback: Option<crate::enforce::feedback::FeedbackConfig>,
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
    /// Serve https with this PEM certificate chain (reloaded on SIGHUP).
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// A private CA to trust for an https origin.
    pub origin_ca: Option<PathBuf>,
    /// Inspect `GET` responses from the origin too (CDN / download mode).
    pub scan_responses: Option<bool>,
    /// Responses up to this many bytes are read whole and refused with 451 when listed.
    pub response_buffer_bytes: Option<u64>,
    /// Response digests cached by (URL, ETag, length).
    pub response_cache_entries: Option<usize>,
    /// Seconds a cached response digest is trusted.
    pub response_cache_secs: Option<u64>,
    /// S3 mode: directory where multipart-upload parts are spooled until completion.
    pub s3_spool_dir: Option<PathBuf>,
    /// tus mode: directory where resumable-upload pieces are spooled until completion.
    pub tus_spool_dir: Option<PathBuf>,
    /// Nextcloud mode: directory where chunked-upload chunks are spooled until assembly.
    pub nextcloud_spool_dir: Option<PathBuf>,
    /// Seconds an upload in pieces may sit in a spool with nothing happening before it is
    /// removed as abandoned (its completion is then refused); 7 days if not given.
    pub spool_expire_secs: Option<u64>,
    /// Directory for copies of blocked uploads (evidence), never served.
    pub quarantine_dir: Option<PathBuf>,
    /// `fail_closed` (default) or `fail_open`.
    pub on_guest_failure: Option<FailureMode>,
    /// Actions: `default = "block"` and one entry per category.
    pub actions: Option<HashMap<String, Action>>,
    /// The ICAP server's settings.
    pub icap: Option<IcapFileConfig>,
    /// `[inspect]`: the inspection pipeline's limits (every front-end).
    pub inspect: Option<InspectFileConfig>,
    /// `[uninspectable]`: what an object that cannot be inspected does, per kind.
    pub uninspectable: Option<crate::inspect::Uninspectable>,
    /// S3 mode: the gateway's own credentials (`[s3]`; `[s3_abort]` is its old name),
    /// to read copy sources and abort refused uploads with.
    #[serde(alias = "s3_abort")]
    pub s3: Option<S3Config>,
    /// `[catalog]`: record what is stored and re-check it on every filter swap.
    pub catalog: Option<CatalogFileConfig>,
}

/// The `[catalog]` table: the digest catalog ([`crate::catalog`]).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFileConfig {
    /// The SQLite file (created if missing; default `catalog.db` in the state
    /// directory), or a `postgres://` URL: one catalog shared by a fleet of gateways.
    #[serde(alias = "url")]
    pub path: Option<crate::catalog::Location>,
    /// Digests recorded, besides those the filter holds (default all three: a later
    /// list may hold any).
    pub algorithms: Option<Vec<String>>,
    /// What a stored object a new filter lists gets: `report` (default: an audit
    /// record and a metric), `quarantine` (also copied to `quarantine_dir`, then deleted)
    /// or `delete` (also deleted at the origin or in the store).
    pub action: Option<RetroAction>,
    /// Rows queued for writing, at most (default 65536); past it rows are dropped
    /// and counted.
    pub queue: Option<usize>,
    /// Objects are told apart by `Host` as well as path (default false; always so in
    /// S3 mode, where virtual-hosted buckets are hosts): for an origin that serves
    /// several virtual hosts, whose `/index.html` are different objects.
    pub by_host: Option<bool>,
}

/// What a catalog re-check does to a stored object a new filter lists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetroAction {
    /// An audit record (`evidence: "retroactive"`) and a metric.
    #[default]
    Report,
    /// Those, and a `DELETE` of the object (S3-signed with `[s3]` where the origin is
    /// S3), or its removal from the embedded store.
    Delete,
    /// Those of `delete`, after the object is read back (a signed `GET`, or from the
    /// store) into the quarantine directory as evidence; an object that cannot be
    /// copied whole is not deleted.
    Quarantine,
}

impl CatalogFileConfig {
    /// The algorithms named, checked.
    pub fn algorithms(&self) -> Result<Vec<crate::Algorithm>, Error> {
        let Some(names) = &self.algorithms else {
            return Ok(crate::Algorithm::ALL.to_vec());
        };
        names
            .iter()
            .map(|name| {
                crate::Algorithm::ALL
                    .into_iter()
                    .find(|a| a.name() == name)
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "[catalog] algorithms: unknown digest algorithm {name:?} (md5, sha1, sha256)"
                        ))
                    })
            })
            .collect()
    }
}

/// The `[inspect]` table: bounds on the inspection pipeline ([`crate::inspect::Limits`];
/// each key defaults to the field's default).
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InspectFileConfig {
    /// Look into archives (zip, tar, gzip/bzip2/xz/zstd streams).
    pub archives: Option<bool>,
    /// Containers nested below the body.
    pub max_depth: Option<u32>,
    /// Decoded bytes per body, as a multiple of its length.
    pub decoded_ratio: Option<u64>,
    /// Decoded bytes per body, at most.
    pub max_decoded_bytes: Option<u64>,
    /// Members of one archive or multipart body.
    pub max_entries: Option<u64>,
    /// Seconds spent inspecting one body.
    pub max_seconds: Option<u64>,
    /// Memory one decompressor may use (zstd window, xz dictionary).
    pub decoder_memory_bytes: Option<u64>,
    /// Where zip archives are spooled.
    pub spool_dir: Option<PathBuf>,
    /// PDQ-hash pictures when the filter holds PDQ hashes.
    pub pictures: Option<bool>,
    /// A picture larger than this (bytes) is not PDQ-hashed.
    pub picture_max_bytes: Option<u64>,
    /// A picture of more pixels than this is not PDQ-hashed.
    pub picture_max_pixels: Option<u64>,
    /// A picture wider or taller than this is not PDQ-hashed.
    pub picture_max_side: Option<u32>,
    /// Also hash a picture's rotations and mirror images (a turned copy matches).
    pub dihedral: Option<bool>,
}

impl InspectFileConfig {
    /// The limits this table sets, on top of the defaults.
    pub fn limits(&self) -> crate::inspect::Limits {
        let mut l = crate::inspect::Limits::default();
        if let Some(v) = self.archives {
            l.archives = v;
        }
        if let Some(v) = self.max_depth {
            l.max_depth = v;
        }
        if let Some(v) = self.decoded_ratio {
            l.decoded_ratio = v;
        }
        if let Some(v) = self.max_decoded_bytes {
            l.decoded_cap = v;
            l.decoded_floor = l.decoded_floor.min(v);
        }
        if let Some(v) = self.max_entries {
            l.max_entries = v;
        }
        if let Some(v) = self.max_seconds {
            l.max_time = std::time::Duration::from_secs(v);
        }
        if let Some(v) = self.decoder_memory_bytes {
            l.decoder_memory = v;
        }
        if let Some(v) = &self.spool_dir {
            l.spool_dir = Some(v.clone());
        }
        if self.pictures == Some(false) {
            l.pictures = None;
        }
        if let Some(p) = &mut l.pictures {
            if let Some(v) = self.picture_max_bytes {
                p.max_bytes = v;
            }
            if let Some(v) = self.picture_max_pixels {
                p.decode.max_pixels = v;
            }
            if let Some(v) = self.picture_max_side {
                p.decode.max_dimension = v;
            }
            if let Some(v) = self.dihedral {
                p.dihedral = v;
            }
        }
        l
    }
}

/// The `[s3]` table: the gateway's own S3 credentials.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Access key id (it needs `s3:GetObject`, `s3:AbortMultipartUpload` and
    /// `s3:DeleteObject`, nothing more).
    pub access_key: String,
    /// Secret access key.
    pub secret_key: String,
    /// Region to sign for; `us-east-1` if absent.
    pub region: Option<String>,
}

/// The `[icap]` table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcapFileConfig {
    /// ICAP listener address.
    pub listen: Option<String>,
    /// Preview size advertised in OPTIONS, in bytes.
    pub preview_bytes: Option<usize>,
    /// HTTP status of the encapsulated refusal: 451 (default) or 403.
    pub block_status: Option<u16>,
    /// `Options-TTL` advertised in OPTIONS, in seconds.
    pub options_ttl_secs: Option<u64>,
    /// Connections served at once (also advertised as `Max-Connections`).
    pub max_connections: Option<usize>,
    /// Bytes of a streamed REQMOD body held back until the verdict.
    pub reqmod_hold_back_bytes: Option<usize>,
    /// Bytes of a streamed RESPMOD body held back until the verdict.
    pub respmod_hold_back_bytes: Option<usize>,
    /// Largest ICAP header block (ICAP and encapsulated HTTP headers), in bytes.
    pub max_header_bytes: Option<usize>,
    /// Seconds an idle connection may wait for its next request, and a request for the
    /// rest of its headers.
    pub header_timeout_secs: Option<u64>,
    /// Longest pause between body bytes, in seconds.
    pub body_timeout_secs: Option<u64>,
    /// Shutdown grace in seconds.
    pub shutdown_grace_secs: Option<u64>,
    /// Serve ICAPS with this PEM certificate chain (reloaded on SIGHUP).
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

/// Takes each field of `over` that is set into `base`.
macro_rules! take {
    ($base:ident, $over:ident: $($field:ident),* $(,)?) => {
        $( if $over.$field.is_some() { $base.$field = $over.$field; } )*
    };
}

impl FileConfig {
    /// `self` (the file) with every setting of `over` (the command line's) laid over it.
    ///
    /// A setting `over` makes replaces the file's, and so does a table, whole
    /// (`actions`: `--monitor` is `actions = { default = "monitor" }`), except
    /// `[icap]`, merged key by key, and `[confirm]`, of which `over` sets only the URL
    /// and the token file. What `over` names replaces what excludes it in the file: a
    /// filter a feed, and a feed the filter and key; an origin the store and a store the
    /// origin; so that what the command line names is what is used.
    ///
    /// ```
    /// use hashgate_host::config::FileConfig;
    ///
    /// let file: FileConfig = toml::from_str(r#"
    ///     listen = "0.0.0.0:8080"
    ///     feed = "https://feed.example/manifest.json"
    ///     admin = "127.0.0.1:9090"
    /// "#).unwrap();
    /// let flags = FileConfig { filter: Some("f.hgf".into()), listen: Some("[::1]:80".into()), ..Default::default() };
    /// let merged = file.overlay(flags);
    /// assert_eq!(merged.listen.as_deref(), Some("[::1]:80"));
    /// assert_eq!(merged.admin.as_deref(), Some("127.0.0.1:9090"));
    /// assert!(merged.feed.is_none() && merged.filter.is_some());
    /// ```
    pub fn overlay(mut self, over: FileConfig) -> FileConfig {
        if over.filter.is_some() {
            self.feed = None;
        }
        if over.feed.is_some() {
            self.filter = None;
            self.public_key = None;
        }
        if over.origin.is_some() {
            self.store = None;
        } else if over.store.is_some() {
            self.origin = None;
        }
        take!(self, over: listen, origin, store, filter, public_key, feed, root, state_dir,
            feed_poll_secs, feed_timeout_secs, feed_ca, admin, workers, audit_log, audit_key,
            audit_checkpoint_records, audit_checkpoint_secs, allow_list, allow_list_local,
            admin_token_file, storm, feedback,
            inspect_methods, max_body_bytes, header_timeout_secs, body_timeout_secs,
            origin_timeout_secs, max_connections, shutdown_grace_secs, tls_cert, tls_key,
            origin_ca, scan_responses, response_buffer_bytes, response_cache_entries,
            response_cache_secs, s3_spool_dir, tus_spool_dir, nextcloud_spool_dir, spool_expire_secs, quarantine_dir, on_guest_failure, actions,
            inspect, uninspectable, s3);
        self.catalog = match (self.catalog, over.catalog) {
            (Some(mut mine), Some(theirs)) => {
                take!(mine, theirs: path, algorithms, action, queue, by_host);
                Some(mine)
            }
            (mine, theirs) => theirs.or(mine),
        };
        self.confirm = match (self.confirm, over.confirm) {
            (Some(mut mine), Some(theirs)) => {
                mine.url = theirs.url;
                if theirs.token_file.is_some() {
                    mine.token_file = theirs.token_file;
                }
                Some(mine)
            }
            (mine, theirs) => theirs.or(mine),
        };
        self.icap = match (self.icap, over.icap) {
            (Some(mut mine), Some(theirs)) => {
                take!(mine, theirs: listen, preview_bytes, block_status, options_ttl_secs,
                    max_connections, reqmod_hold_back_bytes, respmod_hold_back_bytes,
                    max_header_bytes, header_timeout_secs, body_timeout_secs,
                    shutdown_grace_secs, tls_cert, tls_key);
                Some(mine)
            }
            (mine, theirs) => theirs.or(mine),
        };
        self
    }

    /// The response-report cache both front-ends keep (entries, how long one is
    /// trusted): `response_cache_entries`, `response_cache_secs`, each over the
    /// front-end's default given.
    pub fn response_cache(
        &self,
        entries: usize,
        ttl: std::time::Duration,
    ) -> (usize, std::time::Duration) {
        (
            self.response_cache_entries.unwrap_or(entries),
            self.response_cache_secs
                .map_or(ttl, std::time::Duration::from_secs),
        )
    }

    /// How the audit log's chain is signed: `None` without an `audit_key`.
    ///
    /// Fails when the key cannot be read, or when a key is given without an
    /// `audit_log` to sign.
    pub fn audit_checkpoints(&self) -> Result<Option<crate::enforce::audit::Checkpoints>, Error> {
        let Some(path) = &self.audit_key else {
            return Ok(None);
        };
        if self.audit_log.is_none() {
            return Err(Error::Config(
                "audit_key is set but audit_log is not: there is no log to sign".into(),
            ));
        }
        let mut checkpoints =
            crate::enforce::audit::Checkpoints::new(crate::trust::SecretKey::read(path)?);
        if let Some(n) = self.audit_checkpoint_records {
            checkpoints.records = n.max(1);
        }
        if let Some(secs) = self.audit_checkpoint_secs {
            checkpoints.interval = std::time::Duration::from_secs(secs.max(1));
        }
        Ok(Some(checkpoints))
    }

    /// Reads a TOML file.
    pub fn read(path: &Path) -> Result<FileConfig, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> FileConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn flags_win_and_what_they_leave_alone_stays() {
        let file = parse(
            r#"
            origin = "http://127.0.0.1:9000"
            audit_log = "/var/log/a.jsonl"
            [actions]
            default = "block"
            terror = "monitor"
            [icap]
            listen = "127.0.0.1:1344"
            preview_bytes = 100
            "#,
        );
        let flags = FileConfig {
            store: Some("/srv/store".into()),
            actions: Some(HashMap::from([("default".into(), Action::Monitor)])),
            icap: Some(IcapFileConfig {
                listen: Some("0.0.0.0:11344".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let merged = file.overlay(flags);
        // --store replaces a configured origin ...
        assert!(merged.origin.is_none());
        assert_eq!(merged.store.as_deref(), Some(Path::new("/srv/store")));
        assert_eq!(
            merged.audit_log.as_deref(),
            Some(Path::new("/var/log/a.jsonl"))
        );
        // ... --monitor replaces every per-category action ...
        let actions = merged.actions.unwrap();
        assert_eq!(actions.len(), 1);
        assert_eq!(actions["default"], Action::Monitor);
        // ... and [icap] is merged key by key.
        let icap = merged.icap.unwrap();
        assert_eq!(icap.listen.as_deref(), Some("0.0.0.0:11344"));
        assert_eq!(icap.preview_bytes, Some(100));
    }

    #[test]
    fn an_origin_flag_replaces_a_configured_store() {
        let merged = parse(r#"store = "/srv/store""#).overlay(FileConfig {
            origin: Some("http://o".into()),
            ..Default::default()
        });
        assert!(merged.store.is_none());
        assert_eq!(merged.origin.as_deref(), Some("http://o"));
    }

    #[test]
    fn a_feed_flag_replaces_a_configured_filter_and_key() {
        let merged = parse(
            r#"
            filter = "/f.hgf"
            pub = "/a.pub"
            "#,
        )
        .overlay(FileConfig {
            feed: Some(FeedSetting::Url("https://feed/manifest.json".into())),
            ..Default::default()
        });
        assert!(merged.filter.is_none() && merged.public_key.is_none());
        assert!(merged.feed.is_some());
    }

    #[test]
    fn a_key_flag_alone_keeps_the_configured_feed() {
        let merged = parse(r#"feed = "https://feed/manifest.json""#).overlay(FileConfig {
            public_key: Some("/a.pub".into()),
            ..Default::default()
        });
        assert!(merged.feed.is_some());
    }

    #[test]
    fn a_confirm_flag_keeps_the_tables_rules() {
        let merged = parse(
            r#"
            [confirm]
            url = "https://old"
            token_file = "/old.token"
            block = "confirmed"
            "#,
        )
        .overlay(FileConfig {
            confirm: Some(crate::enforce::ConfirmConfig::new("https://new")),
            ..Default::default()
        });
        let confirm = merged.confirm.unwrap();
        assert_eq!(confirm.url, "https://new");
        assert_eq!(confirm.token_file.as_deref(), Some(Path::new("/old.token")));
        assert_eq!(confirm.block, crate::enforce::confirm::Needs::Confirmed);
    }
}
