//! Scanning data at rest: the front-end behind `hashgate scan`.
//!
//! Files are listed first (so progress can be shown against a total), then inspected on
//! several threads that pull the next file from a shared cursor. A file whose first
//! bytes announce a container goes through the inspection pipeline ([`crate::inspect`]),
//! so the members of its archives are hashed and reported too (`photos.zip!a.jpg`).
//! Plain files, most of any tree, are hashed as the pipeline would hash them, but each
//! thread hashes as many at once as the SIMD lanes hold ([`crate::hashing::lanes`]),
//! and the last file, if it is large, has its algorithms split over the cores
//! ([`crate::hashing::split`]). Decisions come from the shared verdict
//! core ([`Enforcer`]: allow-list, uninspectable policy, audit log, metrics), as for the
//! gateway. A file that cannot be read is reported and the scan goes on.

use std::fs::File;
use std::io::Read as _;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::catalog::{self, FileStamp};

use crate::enforce::{Context, Enforcer, Outcome};
use crate::hashing::lanes::Engine;
use crate::hashing::{split, ObjectHasher};
use crate::inspect::{
    is_plain, Envelope, Hashes, InspectError, Limits, Problem, Report, UninspectableAction,
    PREFIX_LEN,
};
use crate::{Error, Hit};

pub mod job;

/// One file to scan.
#[derive(Clone, Debug)]
pub struct Target {
    /// Where it is.
    pub path: PathBuf,
    /// Its size when listed.
    pub size: u64,
    /// Its identity and times when listed (an incremental scan compares them with the
    /// catalog's record), if they could be read.
    pub stamp: Option<FileStamp>,
}

/// What the scan reports as it goes.
#[derive(Debug)]
pub enum Event<'a> {
    /// An object's digests hit the filter (listed material, probably): the file, or a
    /// member of it.
    Hit {
        /// The file.
        path: &'a Path,
        /// The member of the file that hit (`a.zip!b.jpg` is `b.jpg` of `a.zip`,
        /// names joined with `!`), if not the file itself.
        member: Option<&'a str>,
        /// The layers down to it (`gzip>tar>file`), if not the file itself.
        layers: Option<&'a str>,
        /// Its size (decoded).
        size: u64,
        /// The authority whose filter it hit, when several filters are checked.
        authority: Option<&'a str>,
        /// The digests that hit.
        hits: &'a [Hit],
        /// The listed PDQ hashes it is near, if it is a picture.
        pdq: &'a [crate::enforce::PdqMatch],
    },
    /// Part of the file could not be looked into (encrypted, malformed, a limit).
    Uninspectable {
        /// The file.
        path: &'a Path,
        /// What and where.
        problem: &'a Problem,
        /// Whether the policy counts it as a failure (`block`) or lets it be (`pass`).
        blocked: bool,
    },
    /// The file is the canary: enforcement works; not listed material.
    Canary {
        /// The file.
        path: &'a Path,
    },
    /// The file or directory could not be scanned.
    Error {
        /// The file or directory.
        path: &'a Path,
        /// Why.
        error: &'a Error,
    },
    /// The files to scan are listed ([`job::run`] reports this once, before the rest):
    /// how many, how many bytes in all.
    Listed {
        /// Files listed.
        files: u64,
        /// Their sizes, summed.
        bytes: u64,
    },
    /// A file was scanned (clean or not); `bytes` were read from it.
    Scanned {
        /// Bytes read.
        bytes: u64,
    },
}

/// Totals of one scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Files scanned to the end.
    pub files: u64,
    /// Bytes hashed.
    pub bytes: u64,
    /// Files that hit the filter (canaries not counted).
    pub hits: u64,
    /// Canary files found.
    pub canaries: u64,
    /// Files or directories that could not be scanned.
    pub errors: u64,
    /// Files with parts that could not be inspected and that the policy blocks.
    pub uninspectable: u64,
    /// Files not read because the catalog's record of them stands (`scan --catalog`:
    /// same inode, size and times); counted in `files`, not in `bytes`.
    pub from_catalog: u64,
}

/// Lists the regular files under `paths`. A path named is taken as named: a symbolic link
/// to a file or directory is followed (as `find -H` does); anything else that is not a
/// regular file or a directory (a FIFO, a socket, a device, a dangling link) is an
/// error, never a silent skip. Inside directories, links are not followed and only
/// regular files are listed. Entries that cannot be read are passed to `on_error`.
pub fn list_files(paths: &[PathBuf], on_error: &mut dyn FnMut(&Path, &Error)) -> Vec<Target> {
    let mut targets = Vec::new();
    for root in paths {
        match std::fs::metadata(root) {
            Ok(m) if m.is_file() => {
                targets.push(Target {
                    path: root.clone(),
                    size: m.len(),
                    stamp: Some(FileStamp::of(&m)),
                });
                continue;
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                let error = Error::io(
                    root,
                    std::io::Error::other("not a regular file or a directory"),
                );
                on_error(root, &error);
                continue;
            }
            Err(e) => {
                on_error(root, &Error::io(root, e));
                continue;
            }
        }
        let walk = walkdir::WalkDir::new(root)
            .follow_links(false)
            .follow_root_links(true);
        for entry in walk {
            match entry {
                Ok(entry) if entry.file_type().is_file() => {
                    let metadata = entry.metadata().ok();
                    targets.push(Target {
                        size: metadata.as_ref().map_or(0, |m| m.len()),
                        stamp: metadata.as_ref().map(FileStamp::of),
                        path: entry.into_path(),
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    let path = e.path().unwrap_or(root).to_path_buf();
                    let error = Error::io(&path, e.into());
                    on_error(&path, &error);
                }
            }
        }
    }
    targets
}

/// Scans `targets` on `threads` threads and reports each finding to `on_event`, which
/// is called from the worker threads.
pub fn scan(
    enforcer: &Enforcer,
    limits: &Limits,
    targets: &[Target],
    threads: usize,
    on_event: &(dyn Fn(Event<'_>) + Sync),
) -> Summary {
    let filter = enforcer.filter();
    scan_while_loading(
        Hashes::of(&filter),
        limits,
        &|| Some(enforcer),
        targets,
        threads,
        None,
        on_event,
    )
}

/// What an incremental scan (`scan --catalog`) knows and writes: the rows recorded by
/// earlier scans, and the catalog to record this one's files in.
pub struct ScanCatalog {
    previous: std::collections::HashMap<Vec<u8>, catalog::Entry>,
    keep: Vec<crate::Algorithm>,
    writer: Mutex<catalog::Catalog>,
    pending: Mutex<Vec<catalog::Entry>>,
    failed: Mutex<Option<catalog::CatalogError>>,
    /// The working directory, for the keys of relative paths.
    cwd: PathBuf,
}

/// Rows a scan writes per transaction.
const CATALOG_BATCH: usize = 1000;

impl ScanCatalog {
    /// Reads what `catalog` holds for files under `roots` (absolute), to record the
    /// digests of `keep` (those the filter needs are hashed anyway).
    pub fn new(
        mut catalog: catalog::Catalog,
        roots: &[PathBuf],
        keep: Vec<crate::Algorithm>,
    ) -> Result<ScanCatalog, catalog::CatalogError> {
        Ok(ScanCatalog {
            previous: catalog.files_under(roots)?,
            keep,
            writer: Mutex::new(catalog),
            pending: Mutex::new(Vec::new()),
            failed: Mutex::new(None),
            cwd: std::env::current_dir().unwrap_or_default(),
        })
    }

    /// The algorithms the catalog records.
    pub fn algorithms(&self) -> &[crate::Algorithm] {
        &self.keep
    }

    /// The record of `path`, if its stamp is `stamp` and it holds every digest of
    /// `algorithms`.
    fn reuse(
        &self,
        key: &[u8],
        stamp: &FileStamp,
        algorithms: &[crate::Algorithm],
    ) -> Option<&catalog::Entry> {
        let entry = self.previous.get(key)?;
        (entry.stamp.as_ref() == Some(stamp) && entry.covers(algorithms)).then_some(entry)
    }

    fn record(&self, key: Vec<u8>, stamp: FileStamp, report: &Report) {
        let mut entry = catalog::Entry::of_report(catalog::Kind::File, key, report, &self.keep);
        entry.stamp = Some(stamp);
        let full = {
            let mut pending = self.pending.lock().expect("not poisoned");
            pending.push(entry);
            (pending.len() >= CATALOG_BATCH).then(|| std::mem::take(&mut *pending))
        };
        if let Some(batch) = full {
            self.write(&batch);
        }
    }

    fn write(&self, batch: &[catalog::Entry]) {
        if let Err(e) = self.writer.lock().expect("not poisoned").put(batch) {
            self.failed.lock().expect("not poisoned").get_or_insert(e);
        }
    }

    /// The catalog key of a file: its absolute path's bytes.
    pub fn key(&self, path: &Path) -> Vec<u8> {
        use std::os::unix::ffi::OsStrExt;
        if path.is_absolute() {
            return path.as_os_str().as_bytes().to_vec();
        }
        let absolute =
            std::path::absolute(self.cwd.join(path)).unwrap_or_else(|_| path.to_path_buf());
        absolute.as_os_str().as_bytes().to_vec()
    }

    /// Writes what is pending and drops the rows of files under the scan's roots that
    /// are not among `targets` (they are gone). Returns how many rows were dropped, or
    /// the first error any write met.
    pub fn finish(self, targets: &[Target], drop_gone: bool) -> Result<u64, catalog::CatalogError> {
        let pending = std::mem::take(&mut *self.pending.lock().expect("not poisoned"));
        self.write(&pending);
        let present: std::collections::HashSet<Vec<u8>> =
            targets.iter().map(|t| self.key(&t.path)).collect();
        if let Some(e) = self.failed.into_inner().expect("not poisoned") {
            return Err(e);
        }
        let mut writer = self.writer.into_inner().expect("not poisoned");
        if !drop_gone {
            return Ok(0);
        }
        // The rows under the roots were read when the scan began (`previous`); files
        // recorded since by this scan are among `targets`.
        let gone: Vec<Vec<u8>> = self
            .previous
            .into_keys()
            .filter(|k| !present.contains(k))
            .collect();
        writer.remove_files(&gone)
    }
}

/// [`scan`] with the verdict core possibly still loading: files are hashed for
/// `algorithms` at once, and each thread calls `enforcer` only to decide (blocking until
/// it is there). Loading a 54 MB filter (verify, copy into the guest, validate) then runs
/// on another core while the first files are hashed, instead of before them. If
/// `enforcer` gives `None` (the filter failed to load) the threads stop; the caller
/// reports why. With a `catalog`, a file whose record stands is decided from it without
/// being read, and every file read is recorded (with the catalog's algorithms too).
pub fn scan_while_loading<'e>(
    hashes: Hashes<'_>,
    limits: &Limits,
    enforcer: &(dyn Fn() -> Option<&'e Enforcer> + Sync),
    targets: &[Target],
    threads: usize,
    catalog: Option<&ScanCatalog>,
    on_event: &(dyn Fn(Event<'_>) + Sync),
) -> Summary {
    let mut hashed: Vec<crate::Algorithm> = hashes.algorithms.to_vec();
    if let Some(catalog) = catalog {
        for a in catalog.algorithms() {
            if !hashed.contains(a) {
                hashed.push(*a);
            }
        }
        hashed.sort_by_key(|a| crate::Algorithm::ALL.iter().position(|x| x == a));
    }
    let algorithms = &hashed[..];
    let scan = Scan {
        catalog,
        needed: algorithms,
        algorithms,
        pictures: hashes.pictures && limits.pictures.is_some(),
        limits,
        enforcer,
        targets,
        threads: threads.max(1),
        on_event,
        next: AtomicUsize::new(0),
        totals: Default::default(),
    };
    std::thread::scope(|s| {
        for _ in 0..scan.threads {
            s.spawn(|| scan.work());
        }
    });
    let [files, bytes, hits, canaries, errors, uninspectable, from_catalog] =
        scan.totals.map(AtomicU64::into_inner);
    Summary {
        files,
        bytes,
        hits,
        canaries,
        errors,
        uninspectable,
        from_catalog,
    }
}

/// Bytes read from each file of a batch per pass: sixteen of them fit in a core's L2
/// cache while the three algorithms go over them.
const CHUNK: usize = 64 * 1024;
/// A file left to hash alone at the end of a scan is split over the cores from this
/// size on (below it, starting threads costs more than it saves).
const SPLIT_FROM: u64 = 1 << 20;

/// Files taken from the catalog decided per batched check.
const RECORDED_BATCH: usize = 4096;

/// One scan's shared state: the cursor into the targets and the totals.
struct Scan<'s, 'e> {
    /// The catalog of an incremental scan.
    catalog: Option<&'s ScanCatalog>,
    /// What a record must hold to stand in for reading the file.
    needed: &'s [crate::Algorithm],
    algorithms: &'s [crate::Algorithm],
    /// Whether pictures are PDQ-hashed (the filter holds PDQ hashes).
    pictures: bool,
    limits: &'s Limits,
    enforcer: &'s (dyn Fn() -> Option<&'e Enforcer> + Sync),
    targets: &'s [Target],
    threads: usize,
    on_event: &'s (dyn Fn(Event<'_>) + Sync),
    next: AtomicUsize,
    /// Files, bytes, hits, canaries, errors, uninspectable, from the catalog.
    totals: [AtomicU64; 7],
}

/// A plain file being hashed in a worker's batch.
struct InFlight<'s> {
    path: &'s Path,
    file: File,
    before: Stamp,
    hasher: ObjectHasher,
    /// Its buffer ([`CHUNK`] bytes), of which the first `filled` are read and not yet
    /// hashed.
    buf: Vec<u8>,
    filled: usize,
    /// Whether the file has ended.
    ended: bool,
}

/// A file opened and its first bytes read into a [`CHUNK`]-byte buffer.
struct Opened {
    file: File,
    /// Its size and modification time when opened.
    before: Stamp,
    buf: Vec<u8>,
    /// Bytes read into `buf`.
    filled: usize,
}

impl<'s> Scan<'s, '_> {
    /// One worker: takes files from the cursor until there are none. Plain files are
    /// hashed side by side, as many as the SIMD lanes hold ([`ObjectHasher::update_many`]);
    /// a container is inspected when it comes; the last file, when it is large and
    /// alone, has its algorithms split over the cores.
    fn work(&self) {
        let lanes = Engine::detect().lanes();
        let mut batch: Vec<InFlight<'s>> = Vec::with_capacity(lanes);
        // Buffers of files done, for the next ones (no allocation or zeroing per file).
        let mut spare: Vec<Vec<u8>> = Vec::with_capacity(lanes);
        // Files taken from the catalog, decided a batch at a time.
        let mut recorded: Vec<(&'s Path, &'s catalog::Entry)> = Vec::with_capacity(RECORDED_BATCH);
        loop {
            while batch.len() < lanes {
                let i = self.next.fetch_add(1, Ordering::Relaxed);
                let Some(target) = self.targets.get(i) else {
                    break;
                };
                let path = target.path.as_path();
                if let Some(entry) = self.recorded(target) {
                    recorded.push((path, entry));
                    if recorded.len() >= RECORDED_BATCH
                        && self.decide_recorded(&mut recorded).is_break()
                    {
                        return;
                    }
                    continue;
                }
                let alone = batch.is_empty() && i + 1 >= self.targets.len();
                let buf = spare.pop().unwrap_or_else(|| vec![0; CHUNK]);
                let opened = match open(path, buf) {
                    Ok(opened) => opened,
                    Err(error) => {
                        if self.conclude(path, Err(error), true).is_break() {
                            return;
                        }
                        continue;
                    }
                };
                let Opened {
                    mut file,
                    before,
                    buf,
                    filled,
                } = opened;
                let prefix = &buf[..filled];
                let flow = if !is_plain(prefix, self.pictures) {
                    let len = file.metadata().map(|m| m.len()).ok();
                    let mut input = prefix.chain(&mut file);
                    let inspected = crate::inspect::inspect_reader(
                        &mut input,
                        &Envelope::default(),
                        Hashes {
                            algorithms: self.algorithms,
                            pictures: self.pictures,
                        },
                        self.limits,
                        len,
                    )
                    .map_err(|e| inspect_error(path, e))
                    // A walk stopped by a limit reads less than the whole file.
                    .and_then(|r| unchanged(path, &file, before, None).map(|()| r));
                    spare.push(buf);
                    self.settle(path, before, inspected)
                } else if alone && target.size >= SPLIT_FROM {
                    let mut input = prefix.chain(&mut file);
                    let hashed = split::hash_reader(&mut input, self.algorithms, self.threads)
                        .map_err(|e| Error::io(path, e))
                        .and_then(|(digests, len)| {
                            unchanged(path, &file, before, Some(len))?;
                            Ok(Report::plain(len, digests))
                        });
                    spare.push(buf);
                    self.settle(path, before, hashed)
                } else {
                    batch.push(InFlight {
                        path,
                        file,
                        before,
                        hasher: ObjectHasher::new(self.algorithms),
                        ended: filled < PREFIX_LEN,
                        buf,
                        filled,
                    });
                    ControlFlow::Continue(())
                };
                if flow.is_break() {
                    return;
                }
            }
            if batch.is_empty() {
                let _ = self.decide_recorded(&mut recorded);
                return;
            }
            // One pass: a chunk more of every file, hashed side by side.
            let mut failed: Vec<(usize, std::io::Error)> = Vec::new();
            for (i, f) in batch.iter_mut().enumerate() {
                if f.ended {
                    continue;
                }
                match split::read_full(&mut f.file, &mut f.buf[f.filled..]) {
                    Ok(n) => {
                        f.filled += n;
                        f.ended = f.filled < f.buf.len();
                    }
                    Err(e) => failed.push((i, e)),
                }
            }
            let mut pass: Vec<(&mut ObjectHasher, &[u8])> = batch
                .iter_mut()
                .map(|f| (&mut f.hasher, &f.buf[..f.filled]))
                .collect();
            ObjectHasher::update_many(&mut pass);
            for f in batch.iter_mut() {
                f.filled = 0;
            }
            // Failed files first (highest index first, so the others keep theirs), then
            // the ones that ended.
            for (i, e) in failed.into_iter().rev() {
                let f = batch.swap_remove(i);
                spare.push(f.buf);
                if self
                    .conclude(f.path, Err(Error::io(f.path, e)), true)
                    .is_break()
                {
                    return;
                }
            }
            let mut i = 0;
            while i < batch.len() {
                if !batch[i].ended {
                    i += 1;
                    continue;
                }
                let f = batch.swap_remove(i);
                spare.push(f.buf);
                let len = f.hasher.len();
                let report = unchanged(f.path, &f.file, f.before, Some(len))
                    .map(|()| Report::plain(len, f.hasher.finish()));
                if self.settle(f.path, f.before, report).is_break() {
                    return;
                }
            }
        }
    }

    /// For an incremental scan: the catalog's record of `target`, if it stands (same
    /// inode, size and times; every digest needed), so that it is not read.
    fn recorded(&self, target: &Target) -> Option<&'s catalog::Entry> {
        // The catalog records no PDQ: with a filter that holds PDQ hashes, every file is
        // read again (a record cannot say whether it is a picture).
        let catalog = self.catalog.filter(|_| !self.pictures)?;
        let path = target.path.as_path();
        let entry = catalog.reuse(&catalog.key(path), target.stamp.as_ref()?, self.needed)?;
        self.totals[6].fetch_add(1, Ordering::Relaxed);
        Some(entry)
    }

    /// Decides on files taken from the catalog, emptying `recorded`: their digests are
    /// checked a batch at a time (one guest call per algorithm, not one per file), and
    /// only a file with a hit or a problem goes through [`Scan::conclude`]; a clean one
    /// is counted as `conclude` would count it. Should a batched check fail, every file
    /// goes through `conclude`.
    fn decide_recorded(&self, recorded: &mut Vec<(&Path, &catalog::Entry)>) -> ControlFlow<()> {
        let Some(enforcer) = (self.enforcer)() else {
            return ControlFlow::Break(());
        };
        let filter = enforcer.filter();
        // Whether each file needs `conclude`: a hit, a problem, a digest not as wide
        // as its algorithm's.
        let mut needs: Vec<bool> = recorded
            .iter()
            .map(|(_, e)| !e.problems.is_empty())
            .collect();
        let checked = (|| -> Result<(), Error> {
            for &algorithm in filter.algorithms() {
                let width = algorithm.digest_len();
                let (mut packed, mut owners) = (Vec::new(), Vec::new());
                for (i, (_, entry)) in recorded.iter().enumerate() {
                    let nodes = std::iter::once(&entry.digests)
                        .chain(entry.members.iter().map(|m| &m.digests));
                    for digests in nodes {
                        match digests.iter().find(|d| d.algorithm == algorithm) {
                            Some(d) if d.bytes.len() == width => {
                                packed.extend_from_slice(&d.bytes);
                                owners.push(i);
                            }
                            _ => needs[i] = true,
                        }
                    }
                }
                let holding = filter
                    .members()
                    .iter()
                    .filter(|m| m.engine.info().algorithms.contains(&algorithm));
                for m in holding {
                    for (index, _) in m.engine.check_packed(algorithm, &packed)? {
                        needs[owners[index]] = true;
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = &checked {
            tracing::warn!(error = %e, "a batched check failed: deciding file by file");
        }
        for ((path, entry), needs) in recorded.drain(..).zip(needs) {
            if needs || checked.is_err() {
                if self.conclude(path, Ok(entry.report()), false).is_break() {
                    return ControlFlow::Break(());
                }
            } else {
                self.totals[0].fetch_add(1, Ordering::Relaxed);
                (self.on_event)(Event::Scanned { bytes: 0 });
            }
        }
        ControlFlow::Continue(())
    }

    /// Records a file read (an incremental scan), then decides on it.
    fn settle(
        &self,
        path: &Path,
        before: Stamp,
        inspected: Result<Report, Error>,
    ) -> ControlFlow<()> {
        if let (Some(catalog), Ok(report)) = (self.catalog, &inspected) {
            catalog.record(catalog.key(path), before.file, report);
        }
        self.conclude(path, inspected, true)
    }

    /// Decides on one file's inspection and reports it; breaks when there is no
    /// verdict core (the filter failed to load). `read`: whether its bytes were read
    /// now (not taken from the catalog).
    fn conclude(
        &self,
        path: &Path,
        inspected: Result<Report, Error>,
        read: bool,
    ) -> ControlFlow<()> {
        let totals = &self.totals;
        let on_event = self.on_event;
        let Some(enforcer) = (self.enforcer)() else {
            return ControlFlow::Break(());
        };
        // One filter for the whole scan: the enforcer of a scan never swaps.
        let filter = enforcer.filter();
        let report = match inspected {
            Ok(report) => report,
            Err(error) => {
                totals[4].fetch_add(1, Ordering::Relaxed);
                on_event(Event::Error {
                    path,
                    error: &error,
                });
                return ControlFlow::Continue(());
            }
        };
        let ctx = Context {
            method: "SCAN".into(),
            path: path.display().to_string(),
            ..Context::default()
        };
        let decision = enforcer.decide_report(&filter, &ctx, &report);
        let bytes = if read {
            report.root().map_or(0, |r| r.size)
        } else {
            0
        };
        if decision.outcome == Outcome::Unavailable {
            totals[4].fetch_add(1, Ordering::Relaxed);
            let error = Error::GuestTrap("no verdict for this file (see the log)".into());
            on_event(Event::Error {
                path,
                error: &error,
            });
            return ControlFlow::Continue(());
        }
        totals[0].fetch_add(1, Ordering::Relaxed);
        totals[1].fetch_add(bytes, Ordering::Relaxed);
        let (mut listed, mut canary) = (false, false);
        for node in &decision.hits {
            let (canaries, found): (Vec<&Hit>, Vec<&Hit>) =
                node.hits.iter().partition(|h| h.is_canary());
            canary |= !canaries.is_empty();
            if found.is_empty() && node.pdq.is_empty() {
                continue;
            }
            listed = true;
            let found: Vec<Hit> = found.into_iter().cloned().collect();
            on_event(Event::Hit {
                path,
                member: node.member.as_deref(),
                layers: node.layers.as_deref(),
                size: node.size,
                authority: node.authority.as_deref(),
                hits: &found,
                pdq: &node.pdq,
            });
        }
        if listed {
            totals[2].fetch_add(1, Ordering::Relaxed);
        } else if canary {
            totals[3].fetch_add(1, Ordering::Relaxed);
            on_event(Event::Canary { path });
        }
        let mut blocked_any = false;
        for (problem, action) in &decision.problems {
            let blocked = *action == UninspectableAction::Block;
            blocked_any |= blocked;
            on_event(Event::Uninspectable {
                path,
                problem,
                blocked,
            });
        }
        if blocked_any {
            totals[5].fetch_add(1, Ordering::Relaxed);
        }
        on_event(Event::Scanned { bytes });
        ControlFlow::Continue(())
    }
}

/// Opens `path` and reads its first bytes into `buf`, to tell a plain file from a
/// container.
fn open(path: &Path, mut buf: Vec<u8>) -> Result<Opened, Error> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let before = Stamp::of(&file).map_err(|e| Error::io(path, e))?;
    let filled =
        split::read_full(&mut file, &mut buf[..PREFIX_LEN]).map_err(|e| Error::io(path, e))?;
    Ok(Opened {
        file,
        before,
        buf,
        filled,
    })
}

/// A file's size and modification time, to tell whether it changed under the scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    /// What the catalog records of it.
    file: FileStamp,
}

impl Stamp {
    fn of(file: &File) -> std::io::Result<Stamp> {
        let m = file.metadata()?;
        Ok(Stamp {
            len: m.len(),
            modified: m.modified().ok(),
            file: FileStamp::of(&m),
        })
    }
}

/// Checks that `file` is as it was when opened and, if given, that `read` bytes of it
/// were read: a file written, truncated or grown while it was hashed gave a torn read,
/// whose digests belong to no version of the file. It is an error (scan it again), not
/// clean.
fn unchanged(path: &Path, file: &File, before: Stamp, read: Option<u64>) -> Result<(), Error> {
    let after = Stamp::of(file).map_err(|e| Error::io(path, e))?;
    let read = read.unwrap_or(before.len);
    if after == before && read == before.len {
        return Ok(());
    }
    let why = format!(
        "changed while it was being scanned ({} bytes when opened, {} read, {} now{}); scan it again",
        before.len,
        read,
        after.len,
        if after.modified != before.modified { ", modified" } else { "" },
    );
    Err(Error::io(path, std::io::Error::other(why)))
}

fn inspect_error(path: &Path, e: InspectError) -> Error {
    match e {
        InspectError::Read(e) | InspectError::Spool(e) => Error::io(path, e),
        InspectError::Worker(why) => Error::io(path, std::io::Error::other(why)),
    }
}

/// Inspects one file: hashes it with `hashes` and, within `limits`, what its archives
/// hold.
pub fn inspect_file(path: &Path, hashes: Hashes<'_>, limits: &Limits) -> Result<Report, Error> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map(|m| m.len()).ok();
    crate::inspect::inspect_reader(&mut file, &Envelope::default(), hashes, limits, len)
        .map_err(|e| inspect_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_changes_under_the_scan_is_an_error_not_clean() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 10_000]).unwrap();
        let opened = open(&path, vec![0; CHUNK]).unwrap();
        assert!(unchanged(&path, &opened.file, opened.before, Some(10_000)).is_ok());
        // A torn read: fewer bytes than the file had.
        assert!(unchanged(&path, &opened.file, opened.before, Some(9_000)).is_err());
        // Truncated (or grown) meanwhile.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(4_000)
            .unwrap();
        let err = unchanged(&path, &opened.file, opened.before, Some(10_000)).unwrap_err();
        assert!(
            err.to_string()
                .contains("changed while it was being scanned"),
            "{err}"
        );
        assert!(unchanged(&path, &opened.file, opened.before, None).is_err());
    }
}
