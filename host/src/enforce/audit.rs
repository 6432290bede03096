//! The audit log: one JSON line per hit or failed verdict, appended and fsynced before
//! the client gets its answer.
//!
//! Records are written by a thread of the log's own with group commit: an
//! [`AuditLog::append`] queues the line and returns at once with a [`Ticket`]; the writer
//! takes everything queued, writes it and fsyncs once, then wakes whoever waits
//! ([`AuditLog::committed`], or [`AuditLog::wait`] off the async runtime). A serving
//! thread therefore never stalls in an fsync (every connection on its core would stall
//! with it), and a burst of hits costs one fsync, not one each.
//!
//! [`AuditLog::reopen`] (the front-ends call it on `SIGHUP`) makes the writer open the
//! path afresh before its next batch, so logrotate can rename the file away and no
//! record is lost or written into the renamed file after the signal.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::Context;
use crate::{Error, Hit};

/// One audit record.
#[derive(Clone, Debug, Serialize)]
pub struct AuditRecord {
    /// Unix time in seconds, with milliseconds.
    pub time: f64,
    /// Request id.
    pub request_id: String,
    /// Client address.
    pub client: String,
    /// HTTP method.
    pub method: String,
    /// Host.
    pub host: String,
    /// Path.
    pub path: String,
    /// The member the object was, if not the whole body: names from the body down,
    /// joined with `!` (a form part's file name, an archive member's path:
    /// `upload.zip!photos/a.jpg`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part: Option<String>,
    /// The layers the object's bytes went through (`multipart>zip>file`), if not the
    /// body as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<String>,
    /// Why the object could not be inspected (`uninspectable-block` and
    /// `uninspectable-pass` records): its kind and the detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Object size in bytes.
    pub size: u64,
    /// Algorithm of the digest that hit, if any.
    pub algorithm: Option<String>,
    /// Hex digest that hit, if any.
    pub digest: Option<String>,
    /// Category of the hit.
    pub category: Option<String>,
    /// Whether the hit is the canary file.
    pub canary: bool,
    /// What the hit rests on: `filter-hit` (probable, not sent for confirmation),
    /// `confirmed`, `not-listed` (a false positive), `confirmation-unavailable`,
    /// `retroactive` (a stored object a later filter lists, found by a catalog re-check),
    /// or `perceptual` (a picture near a listed PDQ hash; see `pdq`).
    pub evidence: Option<&'static str>,
    /// For a `retroactive` record, when confirmation is configured: what the authority
    /// said of the digest before the re-check acted (`confirmed`, `not-listed`,
    /// `confirmation-unavailable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmation: Option<&'static str>,
    /// Filter series.
    pub filter_series: String,
    /// Filter version.
    pub filter_version: u64,
    /// `block`, `monitor`, `fail-closed`, `fail-open`, `uninspectable-block` or
    /// `uninspectable-pass`.
    pub action: String,
    /// The quarantine copy of the blocked body, if one was kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<String>,
    /// For a `retroactive` record: when the object was stored (Unix seconds) and the
    /// filter that let it through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored: Option<serde_json::Value>,
    /// For a PDQ match (`algorithm` `pdq`, `digest` the listed hash): the picture's
    /// hash that was near, its quality, the transform it was of (`original`, `rotate90`,
    /// ...), the distance in bits and the section's match distance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pdq: Option<serde_json::Value>,
}

impl AuditRecord {
    /// A record for `hit` (or a failed verdict when `None`).
    pub fn new(
        ctx: &Context,
        size: u64,
        hit: Option<&Hit>,
        action: &str,
        series: &str,
        version: u64,
    ) -> AuditRecord {
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| (d.as_millis() as f64) / 1000.0)
            .unwrap_or(0.0);
        AuditRecord {
            time,
            request_id: ctx.request_id.clone(),
            client: ctx.client.clone(),
            method: ctx.method.clone(),
            host: ctx.host.clone(),
            path: ctx.path.clone(),
            part: ctx.part.clone(),
            layers: ctx.layers.clone(),
            problem: None,
            size,
            algorithm: hit.map(|h| h.algorithm.name().to_string()),
            digest: hit.map(|h| hex::encode(&h.bytes)),
            category: hit.and_then(|h| h.category.clone()),
            canary: hit.is_some_and(|h| h.is_canary()),
            evidence: hit.map(|_| "filter-hit"),
            confirmation: None,
            filter_series: series.to_string(),
            filter_version: version,
            action: action.to_string(),
            quarantine: ctx.quarantine.clone().filter(|_| action == "block"),
            stored: None,
            pdq: None,
        }
    }
}

/// An append-only JSON-lines file, written with group commit (see the module docs).
pub struct AuditLog {
    shared: Arc<Shared>,
    writer: Option<std::thread::JoinHandle<()>>,
}

/// A queued record: settled (durable or failed) once the log's commit reaches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

/// What the appenders and the writer share.
struct Shared {
    path: PathBuf,
    state: Mutex<State>,
    /// Wakes the writer (records queued, or closing) and blocking waiters (a commit).
    changed: Condvar,
    /// Wakes async waiters on a commit.
    committed: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    /// Lines queued since the writer last took them.
    queued: Vec<u8>,
    /// The last ticket handed out.
    last: u64,
    /// Every ticket up to this one is settled.
    settled: u64,
    /// Ticket ranges whose batch failed to be written, newest last (a few are kept:
    /// a waiter looks right after its batch settles).
    failed: VecDeque<(u64, u64)>,
    /// Why the last failed batch failed.
    error: Option<String>,
    /// Open the path afresh before the next write.
    reopen: bool,
    closing: bool,
}

/// Failed batches remembered.
const FAILED_KEPT: usize = 256;

impl AuditLog {
    /// Opens (creating if needed) the log for appending, and starts its writer.
    pub fn open(path: &Path) -> Result<AuditLog, Error> {
        let file = open_append(path).map_err(|e| Error::io(path, e))?;
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            committed: tokio::sync::Notify::new(),
        });
        let writer = std::thread::Builder::new()
            .name("hashgate-audit".into())
            .spawn({
                let shared = shared.clone();
                move || shared.write_batches(file)
            })
            .map_err(|e| Error::io(path, e))?;
        Ok(AuditLog {
            shared,
            writer: Some(writer),
        })
    }

    /// Queues one record; it is durable once [`AuditLog::committed`] (or
    /// [`AuditLog::wait`]) for the ticket returns `Ok`.
    pub fn append(&self, record: &AuditRecord) -> Ticket {
        let mut state = self.shared.lock();
        serde_json::to_writer(&mut state.queued, record).expect("records serialize");
        state.queued.push(b'\n');
        state.last += 1;
        let ticket = Ticket(state.last);
        drop(state);
        self.shared.changed.notify_all();
        ticket
    }

    /// Makes the writer close the file and open its path again (creating it) before
    /// it writes anything more: what was queued before the call may still go to the old
    /// file, every record queued after it goes to the new one. If the path cannot be
    /// opened, the old file is kept and the failure logged.
    pub fn reopen(&self) {
        self.shared.lock().reopen = true;
        self.shared.changed.notify_all();
    }

    /// Waits, without blocking the thread, until `ticket`'s record is fsynced.
    pub async fn committed(&self, ticket: Ticket) -> Result<(), Error> {
        loop {
            let notified = self.shared.committed.notified();
            tokio::pin!(notified);
            // Registered before looking, so a commit in between is not missed.
            notified.as_mut().enable();
            if let Some(result) = self.shared.outcome(&self.shared.lock(), ticket) {
                return result;
            }
            notified.await;
        }
    }

    /// [`AuditLog::committed`] for threads that may block (the scanner's).
    pub fn wait(&self, ticket: Ticket) -> Result<(), Error> {
        let mut state = self.shared.lock();
        loop {
            if let Some(result) = self.shared.outcome(&state, ticket) {
                return result;
            }
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `None` while `ticket` is not settled; then whether its batch was written.
    fn outcome(&self, state: &State, ticket: Ticket) -> Option<Result<(), Error>> {
        if state.settled < ticket.0 {
            return None;
        }
        let failed = state
            .failed
            .iter()
            .any(|&(from, to)| (from..=to).contains(&ticket.0));
        Some(if failed {
            let why = state.error.clone().unwrap_or_default();
            Err(Error::io(&self.path, std::io::Error::other(why)))
        } else {
            Ok(())
        })
    }

    /// The writer: takes what is queued, writes and fsyncs it, settles its tickets;
    /// until the log is dropped and nothing is left.
    fn write_batches(&self, mut file: File) {
        let mut batch = Vec::new();
        loop {
            let mut state = self.lock();
            while state.queued.is_empty() && !state.closing && !state.reopen {
                state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            if std::mem::take(&mut state.reopen) {
                drop(state);
                match open_append(&self.path) {
                    Ok(new) => file = new,
                    Err(e) => tracing::error!(
                        path = %self.path.display(),
                        error = %e,
                        "reopening the log failed; still writing to the file open before"
                    ),
                }
                continue;
            }
            if state.queued.is_empty() {
                return;
            }
            std::mem::swap(&mut batch, &mut state.queued);
            let (from, to) = (state.settled + 1, state.last);
            drop(state);
            let written = file.write_all(&batch).and_then(|()| file.sync_data());
            batch.clear();
            let mut state = self.lock();
            if let Err(e) = written {
                state.failed.push_back((from, to));
                if state.failed.len() > FAILED_KEPT {
                    state.failed.pop_front();
                }
                state.error = Some(e.to_string());
            }
            state.settled = to;
            drop(state);
            self.changed.notify_all();
            self.committed.notify_waiters();
        }
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Drop for AuditLog {
    /// Writes what is queued, then stops the writer.
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.changed.notify_all();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64) -> AuditRecord {
        AuditRecord::new(&Context::default(), n, None, "block", "s", 1)
    }

    #[test]
    fn every_record_is_written_once_in_order_and_settled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = Arc::new(AuditLog::open(&path).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let ticket = log.append(&record(t * 1000 + i));
                        log.wait(ticket).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let last = log.append(&record(9999));
        runtime.block_on(log.committed(last)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut sizes: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["size"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(sizes.len(), 201);
        assert_eq!(sizes.pop(), Some(9999));
        sizes.sort_unstable();
        sizes.dedup();
        assert_eq!(sizes.len(), 200);
    }

    #[test]
    fn after_reopen_records_go_to_a_new_file_at_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let rotated = dir.path().join("audit.jsonl.1");
        let log = AuditLog::open(&path).unwrap();
        log.wait(log.append(&record(1))).unwrap();
        // What logrotate does: rename, then signal.
        std::fs::rename(&path, &rotated).unwrap();
        log.wait(log.append(&record(2))).unwrap();
        log.reopen();
        log.wait(log.append(&record(3))).unwrap();
        let sizes = |p: &Path| -> Vec<u64> {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).unwrap()["size"]
                        .as_u64()
                        .unwrap()
                })
                .collect()
        };
        assert_eq!(sizes(&rotated), [1, 2]);
        assert_eq!(sizes(&path), [3]);
    }

    #[test]
    fn a_failed_reopen_keeps_writing_to_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        // The path now names a directory: it cannot be opened for appending.
        std::fs::rename(&path, dir.path().join("kept")).unwrap();
        std::fs::create_dir(&path).unwrap();
        log.reopen();
        log.wait(log.append(&record(7))).unwrap();
        let kept = std::fs::read_to_string(dir.path().join("kept")).unwrap();
        assert_eq!(kept.lines().count(), 1);
    }

    #[test]
    fn a_failed_write_settles_its_tickets_with_the_error() {
        // /dev/full takes the open and refuses every write.
        let log = AuditLog::open(Path::new("/dev/full")).unwrap();
        let ticket = log.append(&record(1));
        let e = log.wait(ticket).unwrap_err().to_string();
        assert!(e.contains("/dev/full") && e.contains("No space"), "{e}");
    }
}
