//! Follows an authority's feed (`docs/PROTOCOL.md`): polls its signed manifest, follows
//! root rotations, fetches the delta from the state it holds (or the snapshot), applies it
//! in a fresh guest instance, checks the state hash, persists, and swaps the new filter in.
//!
//! Nothing unverified is ever enforced and nothing enforced is ever lost: every failure
//! leaves the filter in force as it was, and the state directory changes only by
//! fsynced renames whose last step (the manifest) commits the new version, so a crash at
//! any point restarts on the old version or the new one, never on a mix or on nothing.
//!
//! State directory:
//!
//! | path | what |
//! | --- | --- |
//! | `manifest.json` | the accepted manifest envelope: version floor and freshness |
//! | `roots/N.json` | every root followed since the operator's `--root` |
//! | `bodies/SHA.body` | the snapshot body of the accepted version, named by its SHA-256 |
//! | `guests/SHA.wasm` | the guest component the manifest names, if it names one |

mod fetch;
/// The feed's signed documents (from `hashgate-trust`, which the authority's tools share).
pub use hashgate_trust::feed as protocol;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use sha2::{Digest as _, Sha256};

pub use self::fetch::FetchError;
use self::fetch::{Fetched, Fetcher};
use self::protocol::{Envelope, FileRef, Manifest, TrustedRoot, MAX_DOCUMENT};
use crate::durable::{write_atomically, write_atomically_with};
use crate::enforce::Enforcer;
use crate::runtime::{read_body, Staged};
use crate::trust::TRAILER_LEN;
use crate::{Error, FilterEngine, Limits, Runtime};

/// Polls answered 304 after which the manifest is fetched whole regardless.
const FULL_FETCH_EVERY: u32 = 10;
/// How far a gateway follows root rotations in one poll.
const MAX_ROTATIONS: u64 = 64;
/// Setting `HASHGATE_FAILPOINT` to this aborts the process after an update's files are
/// written and before it is committed: the crash-safety test's hook.
const FAILPOINT_BEFORE_COMMIT: &str = "feed-before-commit";

/// Where the feed is and how to follow it.
#[derive(Clone, Debug)]
pub struct FeedConfig {
    /// URL of the manifest; the files it names are relative to its directory.
    pub url: String,
    /// The operator's root of trust (a root envelope file).
    pub root: PathBuf,
    /// Where accepted state is kept across restarts.
    pub state_dir: PathBuf,
    /// How often to poll (the manifest's minimum interval wins if longer).
    pub poll: Duration,
    /// Deadline of one download.
    pub timeout: Duration,
    /// Extra CA certificates for an https feed.
    pub ca: Option<PathBuf>,
}

/// What one poll did.
pub enum Update {
    /// Nothing new (304, or the same manifest).
    Unchanged,
    /// The same version re-signed with a later expiry: freshness proven, nothing swapped.
    Fresher,
    /// A new version, ready to be swapped in.
    Applied(Box<Applied>),
}

/// A new version and how it arrived.
pub struct Applied {
    /// The engine holding it, ready to be swapped in.
    pub engine: FilterEngine,
    /// `delta` or `snapshot`: what was downloaded for the filter.
    pub via: &'static str,
    /// Whether a new guest component was downloaded and loaded.
    pub new_guest: bool,
    /// From the manifest in hand to the engine ready: downloads, checks, apply, persist.
    pub took: Duration,
}

/// A followed feed: the trusted roots, the accepted manifest, the runtime of its guest.
pub struct Feed {
    config: FeedConfig,
    fetcher: Fetcher,
    limits: Limits,
    /// Roots from the operator's `--root` onwards; the last one is trusted now.
    chain: Vec<TrustedRoot>,
    /// The accepted manifest, if any.
    accepted: Option<Manifest>,
    /// The runtime of the guest the accepted manifest names (or the embedded one).
    runtime: Arc<Runtime>,
    etag: Option<String>,
    /// Polls answered 304 since the last full download of the manifest.
    revalidated: u32,
    interval: Duration,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn feed_error(m: impl Into<String>) -> Error {
    Error::Feed(m.into())
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

impl Feed {
    /// Reads the operator's root and the state directory; no network yet.
    pub fn new(config: FeedConfig, limits: Limits) -> Result<Feed, Error> {
        let root_bytes = std::fs::read(&config.root).map_err(|e| Error::io(&config.root, e))?;
        let mut chain = vec![TrustedRoot::bootstrap(&root_bytes)
            .map_err(|e| Error::Config(format!("{}: {e}", config.root.display())))?];
        std::fs::create_dir_all(&config.state_dir).map_err(|e| Error::io(&config.state_dir, e))?;
        // Rotations followed before a restart: each re-verified from the operator's root.
        loop {
            let next = chain.last().expect("non-empty").root.version + 1;
            let path = config.state_dir.join(format!("roots/{next}.json"));
            let Some(bytes) = read_optional(&path)? else {
                break;
            };
            let root = chain.last().expect("non-empty").rotate(&bytes)?;
            chain.push(root);
        }
        let fetcher = Fetcher::new(&config.url, config.ca.as_deref(), config.timeout)?;
        Ok(Feed {
            interval: config.poll,
            fetcher,
            limits: limits.clone(),
            chain,
            accepted: None,
            runtime: Arc::new(Runtime::new(limits)?),
            etag: None,
            revalidated: 0,
            config,
        })
    }

    fn trusted(&self) -> &TrustedRoot {
        self.chain
            .last()
            .expect("the chain starts with the operator's root")
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.config.state_dir.join(rel)
    }

    /// The filter of the accepted version on disk, if there is one: its manifest
    /// re-verified against the root it was signed under, its body against the manifest's
    /// state hash, its guest against the manifest. `None` when the state is empty.
    pub fn resume(&mut self) -> Result<Option<FilterEngine>, Error> {
        let Some(bytes) = read_optional(&self.path("manifest.json"))? else {
            return Ok(None);
        };
        let manifest = match self.verify_persisted(&bytes) {
            Ok(m) => m,
            Err(e) => {
                // Signed under a root older than the operator's --root: a deliberate trust
                // reset by the operator; start from the feed.
                tracing::warn!(error = %e, "the persisted manifest is not verifiable with the current roots; ignoring it");
                return Ok(None);
            }
        };
        let runtime = match &manifest.guest {
            None => self.runtime.clone(),
            Some(file) => {
                let sha = file.sha256();
                let path = self.path(&format!("guests/{}.wasm", hex::encode(sha)));
                let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
                if sha256(&bytes) != sha {
                    return Err(feed_error(format!(
                        "{}: not the guest the manifest names",
                        path.display()
                    )));
                }
                Arc::new(Runtime::with_component(&bytes, self.limits.clone())?)
            }
        };
        let state = manifest.state_sha256();
        let path = self.body_path(&state);
        let body = read_body(&path, &state)?;
        let staged = Staged::load(runtime.clone(), &body)?;
        drop(body);
        check_staged(&staged, &manifest)?;
        let engine = staged.into_engine(path, state);
        self.accept(manifest, runtime);
        Ok(Some(engine))
    }

    /// The guest component the accepted manifest names (`None`: the embedded one).
    fn guest_sha(&self) -> Option<[u8; 32]> {
        self.accepted.as_ref()?.guest.as_ref().map(FileRef::sha256)
    }

    /// Makes `manifest` (with the guest runtime it names) the accepted version.
    fn accept(&mut self, manifest: Manifest, runtime: Arc<Runtime>) {
        self.runtime = runtime;
        self.interval = self
            .config
            .poll
            .max(Duration::from_secs(manifest.min_poll_seconds));
        self.accepted = Some(manifest);
    }

    fn verify_persisted(&self, bytes: &[u8]) -> Result<Manifest, Error> {
        let claimed = claimed_root_version(bytes)?;
        let root = self
            .chain
            .iter()
            .find(|r| r.root.version == claimed)
            .ok_or_else(|| {
                feed_error(format!(
                    "signed under root version {claimed}, which is not in the chain"
                ))
            })?;
        Ok(root.manifest(bytes)?)
    }

    fn body_path(&self, sha: &[u8; 32]) -> PathBuf {
        self.path(&format!("bodies/{}.body", hex::encode(sha)))
    }

    /// The accepted manifest.
    pub fn accepted(&self) -> Option<&Manifest> {
        self.accepted.as_ref()
    }

    /// Polls once: fetches the manifest and, if it names a new version, everything that
    /// version needs. On `Err` nothing changed, on disk or in memory.
    pub async fn update(&mut self) -> Result<Update, FetchError> {
        let url = self.fetcher.url(self.manifest_name());
        // A validator is only as good as the server's: nginx's ETag is the modification
        // second and the length, so a manifest re-signed within the same second at the
        // same length would look unchanged. Every so often, fetch it whole anyway.
        let etag = self
            .etag
            .as_deref()
            .filter(|_| self.revalidated < FULL_FETCH_EVERY);
        let fetched = self
            .fetcher
            .get(&url, etag, MAX_DOCUMENT as u64 + 1)
            .await?;
        let (bytes, etag) = match fetched {
            Fetched::NotModified => {
                self.revalidated += 1;
                return Ok(Update::Unchanged);
            }
            Fetched::Body { bytes, etag } => (bytes, etag),
        };
        self.revalidated = 0;
        if bytes.len() > MAX_DOCUMENT {
            return Err(
                feed_error(format!("the manifest is over the {MAX_DOCUMENT}-byte cap")).into(),
            );
        }
        let started = std::time::Instant::now();
        let claimed = claimed_root_version(&bytes)?;
        if claimed > self.trusted().root.version {
            self.follow_roots(claimed).await?;
        }
        let manifest = self.trusted().manifest(&bytes)?;
        let mut update = self.consider(manifest, &bytes).await?;
        if let Update::Applied(applied) = &mut update {
            applied.took = started.elapsed();
        }
        // Only a poll that succeeded may skip the next download.
        self.etag = etag;
        Ok(update)
    }

    fn manifest_name(&self) -> &str {
        self.config
            .url
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty())
            .unwrap_or("manifest.json")
    }

    async fn follow_roots(&mut self, to: u64) -> Result<(), Error> {
        let from = self.trusted().root.version;
        if to - from > MAX_ROTATIONS {
            return Err(feed_error(format!(
                "the manifest claims root version {to}, {} rotations past {from}",
                to - from
            )));
        }
        for v in from + 1..=to {
            let url = self.fetcher.url(&format!("roots/{v}.json"));
            let bytes = match self.fetcher.get(&url, None, MAX_DOCUMENT as u64 + 1).await {
                Ok(Fetched::Body { bytes, .. }) => bytes,
                Ok(Fetched::NotModified) => unreachable!("no ETag was sent"),
                Err(e) => return Err(e.error),
            };
            let next = self.trusted().rotate(&bytes)?;
            write_atomically(&self.path(&format!("roots/{v}.json")), &bytes)?;
            tracing::info!(version = v, "followed a root rotation");
            self.chain.push(next);
        }
        Ok(())
    }

    /// Whether the accepted version still bounds what may come next: it does unless the
    /// manifest keys changed since it was accepted (a rotation that recovers from a
    /// compromised key may restart the version count, as TUF allows).
    fn floor_applies(&self, accepted: &Manifest) -> bool {
        self.chain
            .iter()
            .find(|r| r.root.version == accepted.root_version)
            .is_some_and(|r| r.root.manifest == self.trusted().root.manifest)
    }

    async fn consider(&mut self, manifest: Manifest, bytes: &[u8]) -> Result<Update, Error> {
        let trusted = self.trusted().root.version;
        if manifest.root_version != trusted {
            return Err(feed_error(format!(
                "the manifest says it was signed under root version {}, the trusted root is version {trusted}",
                manifest.root_version
            )));
        }
        if now() >= manifest.expires {
            // Whether the filter in force is stale depends on its own manifest, not on
            // this one (a re-signing may carry an earlier expiry than the one accepted).
            let in_force = match &self.accepted {
                Some(accepted) if now() < accepted.expires => format!(
                    "the filter in force (version {}) stays, valid until {} (Unix time)",
                    accepted.version, accepted.expires
                ),
                Some(accepted) => format!(
                    "the filter in force (version {}) stays enforced, but it expired at {} (Unix time) and is stale",
                    accepted.version, accepted.expires
                ),
                None => "no filter from this feed is in force".to_string(),
            };
            return Err(feed_error(format!(
                "refused the fetched manifest (version {}): it expired at {} (Unix time); {in_force}",
                manifest.version, manifest.expires
            )));
        }
        if let Some(accepted) = &self.accepted {
            if manifest.series != accepted.series {
                return Err(feed_error(format!(
                    "the manifest is for series {:?}, this gateway follows {:?}",
                    manifest.series, accepted.series
                )));
            }
            if self.floor_applies(accepted) {
                if manifest.version < accepted.version {
                    return Err(feed_error(format!(
                        "rollback refused: version {} is older than the accepted version {}",
                        manifest.version, accepted.version
                    )));
                }
                if manifest.version == accepted.version {
                    if manifest.state_sha256 != accepted.state_sha256
                        || manifest.guest != accepted.guest
                    {
                        return Err(feed_error(format!(
                            "version {} was signed twice with different contents; keeping the first",
                            manifest.version
                        )));
                    }
                    if manifest.expires <= accepted.expires {
                        return Ok(Update::Unchanged);
                    }
                    write_atomically(&self.path("manifest.json"), bytes)?;
                    let runtime = self.runtime.clone();
                    self.accept(manifest, runtime);
                    return Ok(Update::Fresher);
                }
            }
        }
        let wanted = manifest.guest.as_ref().map(FileRef::sha256);
        let new_guest = wanted.is_some() && wanted != self.guest_sha();
        let runtime = self.runtime_for(&manifest).await?;
        let (body_path, staged, via) = self.stage(&manifest, &runtime).await?;
        if std::env::var("HASHGATE_FAILPOINT").as_deref() == Ok(FAILPOINT_BEFORE_COMMIT) {
            tracing::error!("failpoint {FAILPOINT_BEFORE_COMMIT}: aborting before the commit");
            std::process::abort();
        }
        // The commit: from here on a restart resumes on the new version.
        write_atomically(&self.path("manifest.json"), bytes)?;
        let engine = staged.into_engine(body_path, manifest.state_sha256());
        self.accept(manifest, runtime);
        self.collect_garbage();
        Ok(Update::Applied(Box::new(Applied {
            engine,
            via,
            new_guest,
            took: Duration::ZERO,
        })))
    }

    /// The runtime for the guest the manifest names: the current one if unchanged, else
    /// the new component, downloaded, hash-checked, refused if it imports anything,
    /// compiled, and persisted.
    async fn runtime_for(&self, manifest: &Manifest) -> Result<Arc<Runtime>, Error> {
        if manifest.guest.as_ref().map(FileRef::sha256) == self.guest_sha() {
            return Ok(self.runtime.clone());
        }
        let Some(file) = &manifest.guest else {
            return Ok(Arc::new(Runtime::new(self.limits.clone())?));
        };
        let bytes = self.download(file).await?;
        let limits = self.limits.clone();
        let component = bytes.clone();
        let runtime =
            tokio::task::spawn_blocking(move || Runtime::with_component(&component, limits))
                .await
                .map_err(|e| feed_error(format!("compiling the guest: {e}")))??;
        write_atomically(&self.path(&format!("guests/{}.wasm", file.sha256)), &bytes)?;
        tracing::info!(sha256 = %file.sha256, "loaded a new filter guest from the feed");
        Ok(Arc::new(runtime))
    }

    /// Downloads at most the listed length of `file` and checks its SHA-256.
    async fn download(&self, file: &protocol::FileRef) -> Result<bytes::Bytes, Error> {
        let url = self.fetcher.url(&file.path);
        let bytes = match self.fetcher.get(&url, None, file.length).await {
            Ok(Fetched::Body { bytes, .. }) => bytes,
            Ok(Fetched::NotModified) => unreachable!("no ETag was sent"),
            Err(e) => return Err(e.error),
        };
        if bytes.len() as u64 != file.length {
            return Err(feed_error(format!(
                "{url}: {} bytes, the manifest lists {}",
                bytes.len(),
                file.length
            )));
        }
        if sha256(&bytes) != file.sha256() {
            return Err(feed_error(format!(
                "{url}: SHA-256 is not the one the manifest lists"
            )));
        }
        Ok(bytes)
    }

    /// A fresh instance holding the manifest's state, persisted under its hash: from the
    /// delta that starts at the state held now if there is one and it works, else from
    /// the snapshot.
    async fn stage(
        &self,
        manifest: &Manifest,
        runtime: &Arc<Runtime>,
    ) -> Result<(PathBuf, Staged, &'static str), Error> {
        let state = manifest.state_sha256();
        let held = self.accepted.as_ref().map(Manifest::state_sha256);
        let delta = held.and_then(|h| {
            manifest
                .deltas
                .iter()
                .find(|d| d.from_sha256 == hex::encode(h))
        });
        if let (Some(delta), Some(held)) = (delta, held) {
            match self
                .stage_delta(manifest, &delta.file, held, state, runtime)
                .await
            {
                Ok((path, staged)) => return Ok((path, staged, "delta")),
                Err(e) => {
                    tracing::warn!(error = %e, from = delta.from, "the delta did not work; fetching the snapshot")
                }
            }
        } else if held != Some(state) {
            tracing::info!(
                version = manifest.version,
                "no delta from the state held; fetching the snapshot"
            );
        }
        let file = self.download(&manifest.snapshot).await?;
        let body = match file.len().checked_sub(TRAILER_LEN) {
            Some(n) if file[n..n + 8] == crate::trust::TRAILER_MAGIC => file.slice(..n),
            _ => file,
        };
        if sha256(&body) != state {
            return Err(feed_error(
                "the snapshot's body is not the state the manifest names",
            ));
        }
        let (runtime, manifest_c) = (runtime.clone(), manifest.clone());
        let path = self.body_path(&state);
        let (path, staged) = tokio::task::spawn_blocking(move || {
            let staged = Staged::load(runtime, &body)?;
            check_staged(&staged, &manifest_c)?;
            write_atomically(&path, &body)?;
            Ok::<_, Error>((path, staged))
        })
        .await
        .map_err(|e| feed_error(format!("loading the snapshot: {e}")))??;
        Ok((path, staged, "snapshot"))
    }

    async fn stage_delta(
        &self,
        manifest: &Manifest,
        file: &protocol::FileRef,
        held: [u8; 32],
        state: [u8; 32],
        runtime: &Arc<Runtime>,
    ) -> Result<(PathBuf, Staged), Error> {
        let delta = self.download(file).await?;
        let (runtime, held_path, path) = (
            runtime.clone(),
            self.body_path(&held),
            self.body_path(&state),
        );
        let manifest = manifest.clone();
        tokio::task::spawn_blocking(move || {
            let base = read_body(&held_path, &held)?;
            let mut staged = Staged::load(runtime, &base)?;
            drop(base);
            staged.apply_delta(&delta)?;
            check_staged(&staged, &manifest)?;
            // Hashed and persisted piece by piece as the guest hands the body out.
            write_atomically_with(&path, |file| {
                if staged.write_snapshot(file)? == state {
                    Ok(())
                } else {
                    Err(feed_error(
                        "the state after the delta is not the one the manifest names",
                    ))
                }
            })?;
            Ok((path, staged))
        })
        .await
        .map_err(|e| feed_error(format!("applying the delta: {e}")))?
    }

    /// Removes bodies and guests the accepted manifest no longer needs.
    fn collect_garbage(&self) {
        let Some(m) = &self.accepted else { return };
        let keep = [
            format!("{}.body", m.state_sha256),
            m.guest
                .as_ref()
                .map(|g| format!("{}.wasm", g.sha256))
                .unwrap_or_default(),
        ];
        for dir in ["bodies", "guests"] {
            let Ok(entries) = std::fs::read_dir(self.path(dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if !keep.contains(&name) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }

    /// Polls until the task is dropped: waits the poll interval (with ±10% jitter, so
    /// thousands of gateways do not arrive together), backs off exponentially on errors
    /// (honouring `Retry-After`), and swaps every applied version into `enforcer` as
    /// the filter of its authority at `index` (the others' stay as they are).
    pub async fn run(mut self, enforcer: Arc<Enforcer>, index: usize) {
        let feed = enforcer.authority_label(index);
        let mut failures = 0u32;
        loop {
            let wait = if failures == 0 {
                self.interval
            } else {
                let backoff = self.config.poll.saturating_mul(1 << failures.min(6));
                backoff.min(self.interval.max(Duration::from_secs(3600)))
            };
            let jitter = rand::thread_rng().gen_range(0.9..1.1);
            tokio::time::sleep(wait.mul_f64(jitter)).await;
            match self.update().await {
                Ok(update) => {
                    failures = 0;
                    self.report(&enforcer, index, update);
                }
                Err(e) => {
                    failures += 1;
                    enforcer.metrics().count_feed_poll(&feed, "failed");
                    tracing::error!(feed, error = %e.error, failures, "feed update failed; the filter in force stays");
                    if let Some(after) = e.retry_after {
                        tokio::time::sleep(after.min(Duration::from_secs(3600))).await;
                    }
                }
            }
        }
    }

    /// Applies what one poll produced to `enforcer`'s authority at `index`, with metrics
    /// and a log line.
    pub fn report(&self, enforcer: &Enforcer, index: usize, update: Update) {
        let metrics = enforcer.metrics();
        let feed = enforcer.authority_label(index);
        match update {
            Update::Unchanged => metrics.count_feed_poll(&feed, "unchanged"),
            Update::Fresher => {
                metrics.count_feed_poll(&feed, "fresher");
                tracing::info!(feed, "the feed re-signed the version in force");
            }
            Update::Applied(applied) => {
                let Applied {
                    engine,
                    via,
                    new_guest,
                    took,
                } = *applied;
                let (series, version) = (engine.info().series.clone(), engine.info().version);
                enforcer.swap_member(index, engine);
                metrics.count_feed_poll(&feed, "applied");
                metrics.set_feed_apply(took);
                metrics.count_feed_download(via);
                if new_guest {
                    metrics.count_feed_download("guest");
                }
                eprintln!("feed {feed}: now enforcing {series} version {version} (from the {via})");
            }
        }
        if let Some(m) = &self.accepted {
            metrics.set_fresh_until(&feed, m.expires);
        }
    }
}

/// The guest must have loaded what the manifest describes.
fn check_staged(staged: &Staged, manifest: &Manifest) -> Result<(), Error> {
    let info = staged.info();
    if info.series != manifest.series || info.version != manifest.version {
        return Err(feed_error(format!(
            "the snapshot is {} version {}, the manifest names {} version {}",
            info.series, info.version, manifest.series, manifest.version
        )));
    }
    Ok(())
}

/// The root version a manifest envelope claims, read before it can be verified (only to
/// know which root to verify it with).
fn claimed_root_version(bytes: &[u8]) -> Result<u64, Error> {
    #[derive(serde::Deserialize)]
    struct Claim {
        root_version: u64,
    }
    let envelope = Envelope::parse(bytes)?;
    let claim: Claim = serde_json::from_slice(&envelope.payload()?)
        .map_err(|e| feed_error(format!("manifest payload: {e}")))?;
    Ok(claim.root_version)
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}
