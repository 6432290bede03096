//! A whole scan as `hashgate scan` runs it: the files listed, the filter verified and
//! loaded on a thread of its own while the first files are already hashed, every file
//! decided under the scan's policy (report, never block), and the totals.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::{list_files, scan_while_loading, Event, ScanCatalog, Summary};
use crate::catalog::Catalog;
use crate::enforce::audit::Checkpoints;
use crate::enforce::{Action, AllowList, AuditLog, Enforcer, Metrics, Policy};
use crate::inspect::{Limits, Uninspectable};
use crate::trust::{PublicKey, SecretKey};
use crate::{Error, FilterEngine, FilterInfo, Runtime};

/// What to scan, against what, how.
pub struct Job<'a> {
    /// Files and directories, as named on the command line ([`list_files`]).
    pub paths: &'a [PathBuf],
    /// The signed filter snapshots: one, or one per authority (each file is checked
    /// against every one; each loads in its own guest instance).
    pub filters: &'a [PathBuf],
    /// The key each must be signed with, in the same order (one key for all of them
    /// when only one is given).
    pub keys: &'a [PublicKey],
    /// The guest runtime to load it into.
    pub runtime: Arc<Runtime>,
    /// The inspection pipeline's bounds (archives on or off among them).
    pub limits: Limits,
    /// What an object that cannot be inspected counts as.
    pub uninspectable: Uninspectable,
    /// Exact digests never reported.
    pub allow_list: Option<&'a Path>,
    /// Where every hit is also recorded (fsynced), if anywhere.
    pub audit_log: Option<&'a Path>,
    /// The operator's key the audit log's chain is signed with, if any.
    pub audit_key: Option<&'a Path>,
    /// Hashing threads.
    pub threads: usize,
    /// The catalog of an incremental scan (`scan --catalog`), if any: files whose
    /// record stands are not read, every file read is recorded, rows of files gone
    /// from the scanned paths are dropped.
    pub catalog: Option<&'a crate::catalog::Location>,
    /// The digests the catalog records (those the filter holds are hashed anyway).
    pub catalog_algorithms: Vec<crate::Algorithm>,
}

/// Why a scan could not be run at all (a file that cannot be scanned is an
/// [`Event::Error`] and a count in the [`Summary`], not this).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Occurs when the filter cannot be read, verified or loaded, or changes on disk
    /// while the scan starts ([`Error::Io`] or [`Error::Filter`], naming the file).
    #[error(transparent)]
    Filter(Error),
    /// Occurs when the allow-list or the audit log cannot be opened.
    #[error(transparent)]
    Setup(Error),
    /// Occurs when the catalog cannot be opened, read or written. A write that fails
    /// after the scan ran is reported with its findings: they stand, the record does
    /// not.
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
}

/// What a finished scan found, and with which filter.
#[derive(Debug)]
pub struct Finished {
    /// The totals (listing errors included in `errors`).
    pub summary: Summary,
    /// The filters it was decided with, in the order given.
    pub filters: Vec<FilterInfo>,
    /// For an incremental scan: rows of files gone that were dropped, or why the
    /// catalog could not be brought up to date (the findings stand all the same).
    pub catalog: Option<Result<u64, crate::catalog::CatalogError>>,
}

/// Runs `job`, reporting each finding to `on_event` as it is made: first one
/// [`Event::Listed`], then the rest from the hashing threads.
pub fn run(job: &Job<'_>, on_event: &(dyn Fn(Event<'_>) + Sync)) -> Result<Finished, JobError> {
    let key_for = |i: usize| job.keys.get(i).or(job.keys.first());
    if job.filters.is_empty()
        || job.keys.is_empty()
        || (job.keys.len() != 1 && job.keys.len() != job.filters.len())
    {
        return Err(JobError::Setup(Error::Config(
            "give --pub once, or once per --filter".into(),
        )));
    }
    // Which digests to compute, from the headers alone: the signatures are checked
    // (and the filters loaded) meanwhile, and nothing is decided before they are.
    let mut described = Vec::new();
    for path in job.filters {
        let failed = |error| JobError::Filter(Error::loading(path, error));
        described.push(describe(&job.runtime, path).map_err(failed)?);
    }
    let algorithms: Vec<crate::Algorithm> = crate::Algorithm::ALL
        .into_iter()
        .filter(|a| described.iter().any(|d| d.algorithms.contains(a)))
        .collect();
    let pictures = described.iter().any(|d| !d.pdq_sections.is_empty());
    let loading: OnceLock<Result<Enforcer, JobError>> = OnceLock::new();
    let load = || {
        // Set even if loading panics: the scanning threads wait for it.
        let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut engines = Vec::new();
            for (i, (path, described)) in job.filters.iter().zip(&described).enumerate() {
                let failed = |error| JobError::Filter(Error::loading(path, error));
                let key = key_for(i).expect("checked above");
                let engine = FilterEngine::open(job.runtime.clone(), path, key).map_err(failed)?;
                if engine.info().algorithms != described.algorithms
                    || engine.info().pdq_sections.len() != described.pdq_sections.len()
                {
                    return Err(failed(Error::Load(
                        "the file changed while the scan started".into(),
                    )));
                }
                if let Some(warning) = engine.info().expiry_warning() {
                    eprintln!("{warning}");
                }
                engines.push(engine);
            }
            enforcer(engines, job).map_err(JobError::Setup)
        }))
        .unwrap_or_else(|_| {
            Err(JobError::Filter(Error::Load(
                "loading the filter failed unexpectedly".into(),
            )))
        });
        let _ = loading.set(loaded);
    };
    // The filter loads, the catalog's rows are read and the files are listed at once:
    // for an unchanged tree each takes about as long as deciding on it.
    let roots: Vec<PathBuf> = job.paths.iter().map(|p| absolute(p)).collect();
    let read_catalog = || -> Result<Option<ScanCatalog>, JobError> {
        let Some(location) = job.catalog else {
            return Ok(None);
        };
        let catalog = Catalog::at(location)?;
        Ok(Some(ScanCatalog::new(
            catalog,
            &roots,
            job.catalog_algorithms.clone(),
        )?))
    };
    let mut listing_errors = 0u64;
    let (targets, catalog, mut summary) = std::thread::scope(|s| {
        s.spawn(load);
        let reading = s.spawn(read_catalog);
        let targets = list_files(job.paths, &mut |path, error| {
            listing_errors += 1;
            on_event(Event::Error { path, error });
        });
        on_event(Event::Listed {
            files: targets.len() as u64,
            bytes: targets.iter().map(|t| t.size).sum(),
        });
        let catalog = reading.join().unwrap_or_else(|_| {
            Err(JobError::Catalog(crate::catalog::CatalogError::Thread(
                "reading the catalog failed unexpectedly".into(),
            )))
        })?;
        let hashes = crate::inspect::Hashes {
            algorithms: &algorithms,
            pictures,
        };
        let summary = scan_while_loading(
            hashes,
            &job.limits,
            &|| loading.wait().as_ref().ok(),
            &targets,
            job.threads,
            catalog.as_ref(),
            on_event,
        );
        Ok::<_, JobError>((targets, catalog, summary))
    })?;
    // A listing that failed somewhere may have missed files that are still there:
    // their rows are kept.
    let catalog = catalog.map(|c| c.finish(&targets, listing_errors == 0));
    let enforcer = loading
        .into_inner()
        .expect("the loader always sets the result")?;
    summary.errors += listing_errors;
    Ok(Finished {
        summary,
        filters: enforcer
            .filter()
            .members()
            .iter()
            .map(|m| m.engine.info().clone())
            .collect(),
        catalog,
    })
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The scan's verdict core: hits are reported (monitored), never blocked; the
/// allow-list and the `uninspectable` policy apply. Several filters are authorities
/// named by their series (`series-2`, ... where two share one).
fn enforcer(mut engines: Vec<FilterEngine>, job: &Job<'_>) -> Result<Enforcer, Error> {
    let policy = Policy {
        default_action: Action::Monitor,
        uninspectable: job.uninspectable,
        allow: job
            .allow_list
            .map(AllowList::read)
            .transpose()?
            .unwrap_or_default(),
        ..Policy::default()
    };
    let checkpoints = job
        .audit_key
        .map(|path| SecretKey::read(path).map(Checkpoints::new))
        .transpose()?;
    let audit = job
        .audit_log
        .map(|path| AuditLog::open_signed(path, checkpoints))
        .transpose()?;
    if engines.len() == 1 {
        let engine = engines.pop().expect("one");
        return Ok(Enforcer::new(engine, policy, audit, Metrics::new()));
    }
    let mut names: Vec<String> = Vec::new();
    let authorities = engines
        .into_iter()
        .map(|engine| {
            let series = engine.info().series.clone();
            let mut name = series.clone();
            let mut n = 1;
            while names.contains(&name) {
                n += 1;
                name = format!("{series}-{n}");
            }
            names.push(name.clone());
            crate::enforce::AuthorityFilter {
                name,
                engine,
                actions: None,
            }
        })
        .collect();
    Enforcer::with_authorities(authorities, policy, audit, Metrics::new())
}

/// What `filter` says it is, from its header alone (unverified).
pub fn describe(runtime: &Runtime, filter: &Path) -> Result<FilterInfo, Error> {
    use std::io::Read as _;
    // The header and the most section records a snapshot can have.
    const HEAD_MAX: u64 = 176 + 48 * 64;
    let mut head = Vec::new();
    std::fs::File::open(filter)
        .and_then(|f| f.take(HEAD_MAX).read_to_end(&mut head))
        .map_err(|e| Error::io(filter, e))?;
    runtime.describe(&head)
}
