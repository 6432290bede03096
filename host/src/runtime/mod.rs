//! Runs the filter guest with wasmtime.
//!
//! [`Runtime`] compiles the component once and pre-instantiates it ([`InstancePre`]);
//! each [`FilterEngine`] owns one long-lived instance that holds a filter in its linear
//! memory, behind a mutex: a verdict costs about a microsecond, far less than the hashing
//! that precedes it, so one instance serves every worker thread. Every call runs under an
//! epoch deadline and a memory cap; a guest that traps is discarded and a fresh instance
//! is loaded from the same verified snapshot, so one bad call never takes the process down.

mod bindings;
pub mod types;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits,
    StoreLimitsBuilder,
};

use self::bindings::exports::hashgate::filter::filter::{self as wit, CheckError, LoadError};
use self::bindings::{FilterGuest, FilterGuestPre};
use crate::trust::PublicKey;
use crate::{Digest, Error, FilterInfo, Verdict};

/// How often the epoch ticks; deadlines are counted in ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Resource limits for guest instances.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest linear memory an instance may grow to. Must exceed the largest filter.
    pub max_memory: usize,
    /// Deadline of a `check` or scanner call.
    pub call_deadline: Duration,
    /// Deadline of a `load` (parses and hashes the whole snapshot).
    pub load_deadline: Duration,
    /// Instances that may exist at once (pooling allocator slots).
    pub max_instances: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_memory: 4 << 30,
            call_deadline: Duration::from_secs(1),
            load_deadline: Duration::from_secs(120),
            max_instances: 16,
        }
    }
}

/// The compiled guest: an engine, the component, and its pre-instantiation.
pub struct Runtime {
    engine: Engine,
    pre: FilterGuestPre<GuestState>,
    limits: Limits,
    ticker: Arc<AtomicBool>,
}

struct GuestState {
    limits: StoreLimits,
}

impl Runtime {
    /// Compiles the embedded reference guest ([`crate::GUEST_COMPONENT`]).
    pub fn new(limits: Limits) -> Result<Runtime, Error> {
        Runtime::with_component(crate::GUEST_COMPONENT, limits)
    }

    /// Compiles a guest component given as bytes. Refuses components that import
    /// anything: a filter guest must have no capabilities at all.
    pub fn with_component(component: &[u8], limits: Limits) -> Result<Runtime, Error> {
        let imports = component_imports(component)?;
        if !imports.is_empty() {
            return Err(Error::Component(format!(
                "the component imports {}; a filter guest must import nothing",
                imports.join(", ")
            )));
        }
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(limits.max_instances)
            .total_core_instances(limits.max_instances)
            .total_memories(limits.max_instances)
            .total_tables(limits.max_instances)
            .max_memory_size(limits.max_memory);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| Error::Component(e.to_string()))?;
        let component = Component::new(&engine, component)
            .map_err(|e| Error::Component(format!("compiling: {e:#}")))?;
        let linker = Linker::<GuestState>::new(&engine);
        let pre: InstancePre<GuestState> = linker
            .instantiate_pre(&component)
            .map_err(|e| Error::Component(format!("pre-instantiating: {e:#}")))?;
        let pre = FilterGuestPre::new(pre)
            .map_err(|e| Error::Component(format!("exports do not match wit/: {e:#}")))?;

        let ticker = Arc::new(AtomicBool::new(true));
        let (running, weak) = (ticker.clone(), engine.weak());
        thread::Builder::new()
            .name("hashgate-epoch".into())
            .spawn(move || {
                while running.load(Ordering::Relaxed) {
                    thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| Error::Component(format!("starting the epoch thread: {e}")))?;
        Ok(Runtime {
            engine,
            pre,
            limits,
            ticker,
        })
    }

    /// What the snapshot whose first bytes are `head` is (series, version, algorithms,
    /// sections), read by the guest from the header alone, without loading or verifying
    /// it. Lets a scan start hashing for the right algorithms while the snapshot is still
    /// being verified and loaded; nothing is decided on it.
    pub fn describe(&self, head: &[u8]) -> Result<FilterInfo, Error> {
        let mut instance = self.instantiate()?;
        instance.store.set_epoch_deadline(instance.call_deadline);
        instance
            .guest
            .hashgate_filter_filter()
            .call_describe(&mut instance.store, head)
            .map_err(trapped)?
            .map_err(load_error)
    }

    /// A fresh instance with no filter loaded.
    fn instantiate(&self) -> Result<Instance, Error> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.max_memory)
            .build();
        let mut store = Store::new(&self.engine, GuestState { limits });
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(ticks(self.limits.load_deadline));
        let guest = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| Error::GuestTrap(format!("instantiating: {e:#}")))?;
        Ok(Instance {
            store,
            guest,
            call_deadline: ticks(self.limits.call_deadline),
            load_deadline: ticks(self.limits.load_deadline),
        })
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker.store(false, Ordering::Relaxed);
    }
}

fn ticks(d: Duration) -> u64 {
    (d.as_nanos() / EPOCH_TICK.as_nanos()).max(1) as u64 + 1
}

/// The names the component imports at its top level: what a host would have to supply.
/// Empty for a valid filter guest. (Nested components that wit-component uses to shape
/// exported types have imports of their own, satisfied inside the component.)
pub fn component_imports(component: &[u8]) -> Result<Vec<String>, Error> {
    if !wasmparser::Parser::is_component(component) {
        return Err(Error::Component("not a WebAssembly component".to_string()));
    }
    let mut imports = Vec::new();
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        let payload = payload.map_err(|e| Error::Component(format!("not a component: {e}")))?;
        match payload {
            wasmparser::Payload::Version { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            wasmparser::Payload::ComponentImportSection(section) if depth == 1 => {
                for import in section {
                    let import =
                        import.map_err(|e| Error::Component(format!("bad import: {e}")))?;
                    imports.push(import.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(imports)
}

/// One guest instance and its store.
struct Instance {
    store: Store<GuestState>,
    guest: FilterGuest,
    call_deadline: u64,
    load_deadline: u64,
}

/// Maps a wasmtime error (trap, deadline, memory cap) to the host's error.
fn trapped(e: wasmtime::Error) -> Error {
    Error::GuestTrap(format!("{e:#}"))
}

impl Instance {
    fn load(&mut self, snapshot: &[u8]) -> Result<FilterInfo, Error> {
        self.store.set_epoch_deadline(self.load_deadline);
        let result = self
            .guest
            .hashgate_filter_filter()
            .call_load(&mut self.store, snapshot)
            .map_err(trapped)?;
        result.map_err(load_error)
    }

    fn apply_delta(&mut self, delta: &[u8]) -> Result<FilterInfo, Error> {
        self.store.set_epoch_deadline(self.load_deadline);
        let result = self
            .guest
            .hashgate_filter_filter()
            .call_apply_delta(&mut self.store, delta)
            .map_err(trapped)?;
        result.map_err(load_error)
    }

    fn read_snapshot(&mut self, offset: u64, len: u32) -> Result<Vec<u8>, Error> {
        self.store.set_epoch_deadline(self.call_deadline);
        self.guest
            .hashgate_filter_filter()
            .call_read_snapshot(&mut self.store, offset, len)
            .map_err(trapped)?
            .map_err(check_error)
    }

    fn check(&mut self, digests: &[Digest], size: u64) -> Result<wit::Verdict, Error> {
        self.store.set_epoch_deadline(self.call_deadline);
        let result = self
            .guest
            .hashgate_filter_filter()
            .call_check(&mut self.store, digests, size)
            .map_err(trapped)?;
        result.map_err(check_error)
    }

    fn check_pdq(&mut self, hashes: &[Vec<u8>]) -> Result<Vec<wit::PdqHit>, Error> {
        self.store.set_epoch_deadline(self.call_deadline);
        let result = self
            .guest
            .hashgate_filter_filter()
            .call_check_pdq(&mut self.store, hashes)
            .map_err(trapped)?;
        result.map_err(check_error)
    }

    fn check_packed(
        &mut self,
        algorithm: crate::Algorithm,
        packed: &[u8],
    ) -> Result<Vec<wit::Hit>, Error> {
        self.store.set_epoch_deadline(self.load_deadline);
        let result = self
            .guest
            .hashgate_filter_filter()
            .call_check_packed(&mut self.store, algorithm, packed)
            .map_err(trapped)?;
        result.map_err(check_error)
    }

    fn scan_bytes(
        &mut self,
        chunks: &mut dyn Iterator<Item = &[u8]>,
    ) -> Result<wit::ScanResult, Error> {
        self.store.set_epoch_deadline(self.load_deadline);
        let filter = self.guest.hashgate_filter_filter();
        let scanner = filter
            .scanner()
            .call_constructor(&mut self.store)
            .map_err(trapped)?;
        let mut result = Ok(());
        for chunk in chunks {
            result = filter
                .scanner()
                .call_write(&mut self.store, scanner, chunk)
                .map_err(trapped);
            if result.is_err() {
                break;
            }
        }
        let verdict = result.and_then(|()| {
            filter
                .scanner()
                .call_finish(&mut self.store, scanner)
                .map_err(trapped)
        });
        let dropped = scanner.resource_drop(&mut self.store).map_err(trapped);
        let result = verdict?.map_err(check_error)?;
        dropped?;
        Ok(result)
    }
}

fn load_error(e: LoadError) -> Error {
    match e {
        LoadError::Malformed(m) | LoadError::Integrity(m) => Error::Load(m),
        LoadError::UnsupportedVersion(v) => Error::Load(format!("unsupported format version {v}")),
        LoadError::WrongBase(m) => Error::WrongBase(m),
    }
}

fn check_error(e: CheckError) -> Error {
    match e {
        CheckError::NoFilter => Error::NoFilter,
        CheckError::BadDigest(m) => Error::Check(m),
    }
}

/// Where an engine's snapshot comes from when its instance must be rebuilt.
enum Source {
    /// A signed file, re-read and re-verified on recovery: the host keeps no second copy
    /// of the filter in memory.
    File { path: PathBuf, key: Box<PublicKey> },
    /// Bytes already verified, kept in memory (tests).
    Bytes(Arc<Vec<u8>>),
    /// A snapshot body the feed updater persisted, checked against its SHA-256 (which a
    /// signed manifest named) when it is re-read.
    Body { path: PathBuf, sha256: [u8; 32] },
}

/// A loaded filter: one guest instance holding one verified snapshot.
///
/// Shared by reference between worker threads. If the guest traps, the failing call
/// returns [`Error::GuestTrap`] and the next call runs on a fresh instance loaded from
/// the same snapshot.
pub struct FilterEngine {
    runtime: Arc<Runtime>,
    source: Source,
    info: FilterInfo,
    instance: Mutex<Option<Instance>>,
}

impl FilterEngine {
    /// Reads a signed snapshot file, verifies its signature with `key`, and loads it.
    pub fn open(
        runtime: Arc<Runtime>,
        path: &Path,
        key: &PublicKey,
    ) -> Result<FilterEngine, Error> {
        let source = Source::File {
            path: path.to_path_buf(),
            key: Box::new(key.clone()),
        };
        FilterEngine::start(runtime, source)
    }

    /// Loads a snapshot body that the caller has already verified.
    pub fn from_verified(runtime: Arc<Runtime>, body: Vec<u8>) -> Result<FilterEngine, Error> {
        FilterEngine::start(runtime, Source::Bytes(Arc::new(body)))
    }

    fn start(runtime: Arc<Runtime>, source: Source) -> Result<FilterEngine, Error> {
        let (instance, info) = load_instance(&runtime, &source)?;
        Ok(FilterEngine {
            runtime,
            source,
            info,
            instance: Mutex::new(Some(instance)),
        })
    }

    /// The runtime (compiled guest) this engine runs on.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// What the loaded filter is.
    pub fn info(&self) -> &FilterInfo {
        &self.info
    }

    /// The verdict for one object's digests.
    pub fn check(&self, digests: &[Digest], size: u64) -> Result<Verdict, Error> {
        let verdict = self.with_instance(|i| i.check(digests, size))?;
        Verdict::resolve(verdict, digests, &self.info)
    }

    /// Whether the filter holds PDQ hashes (pictures are then PDQ-hashed and checked).
    pub fn holds_pdq(&self) -> bool {
        !self.info.pdq_sections.is_empty()
    }

    /// Which listed PDQ hashes are near `hashes`, one picture's hashes (its own first,
    /// then its dihedral ones if computed). Empty when the filter has no PDQ section, at
    /// the cost of no guest call.
    pub fn check_pdq(
        &self,
        hashes: &[crate::perceptual::PdqHash],
    ) -> Result<Vec<crate::runtime::types::PdqHit>, Error> {
        if self.info.pdq_sections.is_empty() || hashes.is_empty() {
            return Ok(Vec::new());
        }
        let queries: Vec<Vec<u8>> = hashes.iter().map(|h| h.0.to_vec()).collect();
        let hits = self.with_instance(|i| i.check_pdq(&queries))?;
        hits.into_iter()
            .map(|h| {
                let section = self.info.pdq_sections.get(h.section as usize);
                let listed = <[u8; 32]>::try_from(h.listed.as_slice()).ok();
                match (section, listed) {
                    (Some(s), Some(listed)) if (h.query as usize) < hashes.len() => {
                        Ok(crate::runtime::types::PdqHit {
                            query: h.query as usize,
                            listed: crate::perceptual::PdqHash(listed),
                            distance: h.distance,
                            category: s.category.clone(),
                            threshold: s.threshold,
                        })
                    }
                    _ => Err(Error::Check(format!(
                        "the guest named PDQ query {} / section {} that do not exist",
                        h.query, h.section
                    ))),
                }
            })
            .collect()
    }

    /// Which of many digests of one `algorithm`, packed back to back, are listed: one
    /// guest call for all of them (a catalog re-check). Each hit is a digest's index in
    /// `packed` and the category of the section it matched.
    pub fn check_packed(
        &self,
        algorithm: crate::Algorithm,
        packed: &[u8],
    ) -> Result<Vec<(usize, Option<String>)>, Error> {
        let width = algorithm.digest_len();
        let hits = self.with_instance(|i| i.check_packed(algorithm, packed))?;
        hits.into_iter()
            .map(|h| {
                let index = h.digest as usize;
                let section = self.info.sections.get(h.section as usize);
                match section {
                    Some(s) if (index + 1) * width <= packed.len() => {
                        Ok((index, s.category.clone()))
                    }
                    _ => Err(Error::Check(format!(
                        "the guest named digest {} / section {} that do not exist",
                        h.digest, h.section
                    ))),
                }
            })
            .collect()
    }

    /// The verdict for raw bytes, hashed inside the guest (the portable path).
    pub fn scan_bytes<'a>(
        &self,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Verdict, Error> {
        let mut chunks = chunks.into_iter();
        let result = self.with_instance(|i| i.scan_bytes(&mut chunks))?;
        Verdict::resolve(result.verdict, &result.digests, &self.info)
    }

    fn with_instance<T>(
        &self,
        call: impl FnOnce(&mut Instance) -> Result<T, Error>,
    ) -> Result<T, Error> {
        // A panic while holding the lock cannot leave the instance half-updated in a way
        // we rely on: a poisoned lock is treated like a trapped instance.
        let mut slot = self.instance.lock().unwrap_or_else(|p| {
            let mut guard = p.into_inner();
            *guard = None;
            guard
        });
        if slot.is_none() {
            let (instance, _) = load_instance(&self.runtime, &self.source)?;
            *slot = Some(instance);
        }
        let result = call(slot.as_mut().expect("instance present"));
        if let Err(Error::GuestTrap(reason)) = &result {
            tracing::warn!(%reason, "filter guest trapped; the instance will be replaced");
            *slot = None;
        }
        result
    }
}

fn load_instance(runtime: &Runtime, source: &Source) -> Result<(Instance, FilterInfo), Error> {
    let mut instance = runtime.instantiate()?;
    let info = match source {
        Source::File { path, key } => {
            let file = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            let body = crate::trust::verify(&file, std::slice::from_ref(key.as_ref()))?;
            instance.load(body)?
        }
        Source::Bytes(bytes) => instance.load(bytes)?,
        Source::Body { path, sha256 } => instance.load(&read_body(path, sha256)?)?,
    };
    Ok((instance, info))
}

/// Reads a persisted snapshot body and checks it against the SHA-256 it must have.
pub fn read_body(path: &Path, sha256: &[u8; 32]) -> Result<Vec<u8>, Error> {
    use sha2::Digest as _;
    let body = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if sha2::Sha256::digest(&body).as_slice() != sha256 {
        return Err(Error::Digest {
            path: path.to_path_buf(),
        });
    }
    Ok(body)
}

/// A fresh instance being prepared to replace a serving engine: loaded, perhaps patched
/// with a delta, not yet serving anything. Serving engines are never touched while an
/// update is prepared, so a failed update leaves them exactly as they were.
pub struct Staged {
    runtime: Arc<Runtime>,
    instance: Instance,
    info: FilterInfo,
}

impl Staged {
    /// A fresh instance of `runtime` holding `body` (already verified by the caller).
    pub fn load(runtime: Arc<Runtime>, body: &[u8]) -> Result<Staged, Error> {
        let mut instance = runtime.instantiate()?;
        let info = instance.load(body)?;
        Ok(Staged {
            runtime,
            instance,
            info,
        })
    }

    /// Applies a delta in this instance. [`Error::WrongBase`] if it was made for another
    /// snapshot; on any error the instance keeps what it held.
    pub fn apply_delta(&mut self, delta: &[u8]) -> Result<&FilterInfo, Error> {
        self.info = self.instance.apply_delta(delta)?;
        Ok(&self.info)
    }

    /// Writes the snapshot body the instance holds to `out`, piece by piece, and returns
    /// its SHA-256.
    pub fn write_snapshot(&mut self, out: &mut dyn std::io::Write) -> Result<[u8; 32], Error> {
        use sha2::Digest as _;
        const PIECE: u32 = 4 << 20;
        let mut sha = sha2::Sha256::new();
        let mut offset = 0u64;
        loop {
            let piece = self.instance.read_snapshot(offset, PIECE)?;
            if piece.is_empty() {
                return Ok(sha.finalize().into());
            }
            sha.update(&piece);
            out.write_all(&piece)
                .map_err(|e| Error::io("the snapshot being persisted", e))?;
            offset += piece.len() as u64;
        }
    }

    /// What the instance holds.
    pub fn info(&self) -> &FilterInfo {
        &self.info
    }

    /// Makes this instance a serving engine whose snapshot, should the instance ever be
    /// rebuilt, is re-read from `path` and checked against `sha256`.
    pub fn into_engine(self, path: PathBuf, sha256: [u8; 32]) -> FilterEngine {
        FilterEngine {
            runtime: self.runtime,
            source: Source::Body { path, sha256 },
            info: self.info,
            instance: Mutex::new(Some(self.instance)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_that_is_not_the_one_named_is_a_digest_error_not_a_signature_error() {
        use sha2::Digest as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.body");
        std::fs::write(&path, b"the body").unwrap();
        let right: [u8; 32] = sha2::Sha256::digest(b"the body").into();
        assert_eq!(read_body(&path, &right).unwrap(), b"the body");
        std::fs::write(&path, b"the bodY").unwrap();
        let e = read_body(&path, &right).unwrap_err();
        assert!(matches!(&e, Error::Digest { path: p } if p == &path), "{e}");
        assert!(e.to_string().contains("x.body"), "{e}");
    }
}
