//! Scanning data at rest: the front-end behind `hashgate scan`.
//!
//! Files are listed first (so progress can be shown against a total), then hashed on
//! several threads that pull the next file from a shared cursor; each thread reuses one
//! read buffer. Decisions come from the shared verdict core ([`Enforcer`]: allow-list,
//! audit log, metrics), as for the gateway. A file that cannot be read is reported and
//! the scan goes on.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::enforce::{Context, Enforcer, Outcome};
use crate::hashing::ObjectHasher;
use crate::{Error, Hit};

/// Read size per file read: large enough that syscalls cost nothing next to hashing.
const READ_CHUNK: usize = 256 * 1024;

/// One file to scan.
#[derive(Clone, Debug)]
pub struct Target {
    /// Where it is.
    pub path: PathBuf,
    /// Its size when listed.
    pub size: u64,
}

/// What the scan reports as it goes.
#[derive(Debug)]
pub enum Event<'a> {
    /// The file's digests hit the filter (listed material, probably).
    Hit {
        /// The file.
        path: &'a Path,
        /// Its size.
        size: u64,
        /// The digests that hit.
        hits: &'a [Hit],
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
}

/// Lists the regular files under `paths` (directories are walked recursively, symbolic
/// links are not followed). Entries that cannot be read are passed to `on_error`.
pub fn list_files(paths: &[PathBuf], on_error: &mut dyn FnMut(&Path, &Error)) -> Vec<Target> {
    let mut targets = Vec::new();
    for root in paths {
        for entry in walkdir::WalkDir::new(root).follow_links(false) {
            match entry {
                Ok(entry) if entry.file_type().is_file() => {
                    let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                    targets.push(Target {
                        path: entry.into_path(),
                        size,
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
    targets: &[Target],
    threads: usize,
    on_event: &(dyn Fn(Event<'_>) + Sync),
) -> Summary {
    let algorithms = enforcer.filter().info().algorithms.clone();
    scan_while_loading(&algorithms, &|| Some(enforcer), targets, threads, on_event)
}

/// [`scan`] with the verdict core possibly still loading: files are hashed for
/// `algorithms` at once, and each thread calls `enforcer` only to decide (blocking until
/// it is there). Loading a 54 MB filter (verify, copy into the guest, validate) then runs
/// on another core while the first files are hashed, instead of before them. If
/// `enforcer` gives `None` (the filter failed to load) the threads stop; the caller
/// reports why.
pub fn scan_while_loading<'e>(
    algorithms: &[crate::Algorithm],
    enforcer: &(dyn Fn() -> Option<&'e Enforcer> + Sync),
    targets: &[Target],
    threads: usize,
    on_event: &(dyn Fn(Event<'_>) + Sync),
) -> Summary {
    let next = AtomicUsize::new(0);
    let totals: [AtomicU64; 5] = Default::default();
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let mut buf = vec![0u8; READ_CHUNK];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(target) = targets.get(i) else { break };
                    let path = target.path.as_path();
                    let hashed = hash_file(path, algorithms, &mut buf);
                    let Some(enforcer) = enforcer() else { break };
                    // One filter for the whole scan: the enforcer of a scan never swaps.
                    let filter = enforcer.filter();
                    let outcome = hashed.and_then(|(digests, bytes)| {
                        let ctx = Context {
                            method: "SCAN".into(),
                            path: path.display().to_string(),
                            ..Context::default()
                        };
                        let decision = enforcer.decide(&filter, &ctx, &digests, bytes);
                        match decision.outcome {
                            Outcome::Unavailable => Err(Error::GuestTrap(
                                "no verdict for this file (see the log)".into(),
                            )),
                            _ => Ok((decision.hits, bytes)),
                        }
                    });
                    match outcome {
                        Ok((hits, bytes)) => {
                            totals[0].fetch_add(1, Ordering::Relaxed);
                            totals[1].fetch_add(bytes, Ordering::Relaxed);
                            let (canary, listed): (Vec<&Hit>, Vec<&Hit>) =
                                hits.iter().partition(|h| h.is_canary());
                            if !listed.is_empty() {
                                totals[2].fetch_add(1, Ordering::Relaxed);
                                let listed: Vec<Hit> = listed.into_iter().cloned().collect();
                                on_event(Event::Hit {
                                    path,
                                    size: bytes,
                                    hits: &listed,
                                });
                            } else if !canary.is_empty() {
                                totals[3].fetch_add(1, Ordering::Relaxed);
                                on_event(Event::Canary { path });
                            }
                            on_event(Event::Scanned { bytes });
                        }
                        Err(error) => {
                            totals[4].fetch_add(1, Ordering::Relaxed);
                            on_event(Event::Error {
                                path,
                                error: &error,
                            });
                        }
                    }
                }
            });
        }
    });
    let [files, bytes, hits, canaries, errors] = totals.map(AtomicU64::into_inner);
    Summary {
        files,
        bytes,
        hits,
        canaries,
        errors,
    }
}

/// Hashes one file with `algorithms`, reading through `buf`.
pub fn hash_file(
    path: &Path,
    algorithms: &[crate::Algorithm],
    buf: &mut [u8],
) -> Result<(Vec<crate::Digest>, u64), Error> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = ObjectHasher::new(algorithms);
    loop {
        match file.read(buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    let len = hasher.len();
    Ok((hasher.finish(), len))
}
