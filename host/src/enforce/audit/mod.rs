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
//! The lines form a hash chain, signed every so often with the operator's key when one
//! is configured ([`chain`]; [`verify`] checks it), so a removed, edited or reordered
//! record is evident. The writer recovers the chain when it opens the log: from the
//! log's last line, or, when rotation left the file empty, from the `.head` file beside
//! it (which also locks the log: two processes never write one chain).
//!
//! [`AuditLog::reopen`] (the front-ends call it on `SIGHUP`) makes the writer sign the
//! chain and open the path afresh before its next batch, so logrotate can rename the
//! file away (`create`) and no record is lost or written into the renamed file after
//! the signal. A file truncated under the writer (`copytruncate`) is noticed before the
//! next batch, and the writer's last links are written again first, so the records
//! written between logrotate's copy and its truncation are not lost.

pub mod chain;
pub mod verify;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chain::Head;

use serde::Serialize;

use super::Context;
use crate::trust::SecretKey;
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
    /// The authority whose filter decided (its `[[feed]]` name), when the operator
    /// follows named authorities.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
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
    /// When the entry that hit is in a hit storm: the `on_storm` in force (`alert`: it
    /// still blocks; `monitor`: let through for the cool-down).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storm: Option<&'static str>,
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
        AuditRecord {
            time: (now_ms() as f64) / 1000.0,
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
            authority: None,
            filter_series: series.to_string(),
            filter_version: version,
            action: action.to_string(),
            quarantine: ctx.quarantine.clone().filter(|_| action == "block"),
            stored: None,
            pdq: None,
            storm: None,
        }
    }
}

/// When the writer signs the chain: after `records` links or `interval` after the first
/// unsigned one, whichever comes first, and before it closes or reopens the file.
pub struct Checkpoints {
    /// The operator's signing key (`hashgate keygen`).
    pub key: SecretKey,
    /// Links between checkpoints at most.
    pub records: u64,
    /// Longest time a link stays unsigned.
    pub interval: Duration,
}

impl Checkpoints {
    /// Checkpoints with `key` every 1,000 records or 60 seconds.
    pub fn new(key: SecretKey) -> Checkpoints {
        Checkpoints {
            key,
            records: 1000,
            interval: Duration::from_secs(60),
        }
    }
}

/// An append-only, hash-chained JSON-lines file, written with group commit (see the
/// module docs).
pub struct AuditLog {
    shared: Arc<Shared>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
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
    /// Records queued since the writer last took them, one per line.
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
    /// The last checkpoint line written (without its newline), for a witness.
    last_checkpoint: Option<String>,
}

/// Failed batches remembered.
const FAILED_KEPT: usize = 256;
/// Links kept to write again after a `copytruncate`: at most this many...
const RECENT_LINKS: usize = 1024;
/// ...and this many bytes.
const RECENT_BYTES: usize = 1 << 20;
/// How far back from its end the writer looks for the last line of a log it opens.
const TAIL_WINDOW: u64 = 1 << 20;

impl AuditLog {
    /// Opens (creating if needed) the log for appending, chained but never signed, and
    /// starts its writer.
    pub fn open(path: &Path) -> Result<AuditLog, Error> {
        AuditLog::open_signed(path, None)
    }

    /// Opens (creating if needed) the log for appending, its chain signed as
    /// `checkpoints` says, and starts its writer. A torn last line (a crash mid-write)
    /// is accounted for with a `recovered` link before anything else is written.
    ///
    /// Fails with an [`Error::Io`] when the log or its `.head` file cannot be opened or
    /// read, or when another process holds the log.
    pub fn open_signed(path: &Path, checkpoints: Option<Checkpoints>) -> Result<AuditLog, Error> {
        let writer = Writer::open(path, checkpoints).map_err(|e| Error::io(path, e))?;
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            committed: tokio::sync::Notify::new(),
        });
        let thread = std::thread::Builder::new()
            .name("hashgate-audit".into())
            .spawn({
                let shared = shared.clone();
                move || shared.write_batches(writer)
            })
            .map_err(|e| Error::io(path, e))?;
        Ok(AuditLog {
            shared,
            writer: Mutex::new(Some(thread)),
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

    /// Makes the writer sign the chain (when it signs), close the file and open its
    /// path again (creating it) before it writes anything more: what was queued before
    /// the call may still go to the old file, every record queued after it goes to the
    /// new one. If the path cannot be opened, the old file is kept and the failure
    /// logged.
    pub fn reopen(&self) {
        self.shared.lock().reopen = true;
        self.shared.changed.notify_all();
    }

    /// The last checkpoint line this writer wrote and fsynced, if any: given to someone
    /// else (the authority, in feedback reports), it makes a later cut of the log
    /// before it evident (`hashgate audit verify --witness`).
    pub fn last_checkpoint(&self) -> Option<String> {
        self.shared.lock().last_checkpoint.clone()
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

    /// The writer thread: takes what is queued, links, writes and fsyncs it, settles
    /// its tickets; signs the chain when due; until the log is dropped and nothing is
    /// left.
    fn write_batches(&self, mut writer: Writer) {
        let mut batch = Vec::new();
        loop {
            let mut state = self.lock();
            while state.queued.is_empty() && !state.closing && !state.reopen {
                match writer.checkpoint_due() {
                    Some(due) if due <= Instant::now() => break,
                    Some(due) => {
                        let wait = due.saturating_duration_since(Instant::now());
                        state = self
                            .changed
                            .wait_timeout(state, wait)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                    None => state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner()),
                }
            }
            if let Some(line) = writer.signed.take() {
                state.last_checkpoint = Some(line);
            }
            if std::mem::take(&mut state.reopen) {
                drop(state);
                writer.reopen(&self.path);
                continue;
            }
            if state.queued.is_empty() {
                let closing = state.closing;
                drop(state);
                // Nothing queued: a checkpoint is due, or the log closes.
                if let Err(e) = writer.write(&[], true) {
                    tracing::error!(path = %self.path.display(), error = %e, "signing the audit chain failed");
                }
                if let Some(line) = writer.signed.take() {
                    self.lock().last_checkpoint = Some(line);
                }
                if closing {
                    return;
                }
                continue;
            }
            std::mem::swap(&mut batch, &mut state.queued);
            let (from, to) = (state.settled + 1, state.last);
            drop(state);
            let written = writer.write(&batch, false);
            batch.clear();
            let mut state = self.lock();
            if let Some(line) = writer.signed.take() {
                state.last_checkpoint = Some(line);
            }
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

/// The writer thread's side: the open file and where its chain stands.
struct Writer {
    file: File,
    /// Whether the file is a regular file (not `/dev/full` or a pipe): only then is it
    /// measured, truncation noticed, and a `.head` file kept.
    regular: bool,
    /// The last link written.
    head: Head,
    /// Where the file ends if only this writer wrote it.
    end: u64,
    /// The last links written, to write again after a truncation.
    recent: VecDeque<Vec<u8>>,
    recent_bytes: usize,
    checkpoints: Option<Checkpoints>,
    /// Links since the last checkpoint, and when the first of them was written.
    unsigned: u64,
    unsigned_since: Option<Instant>,
    /// `<log>.head`: the chain's head after every batch (locked while the log is open).
    head_file: Option<File>,
    /// The last checkpoint written and fsynced, not yet handed to the shared state.
    signed: Option<String>,
}

impl Writer {
    fn open(path: &Path, checkpoints: Option<Checkpoints>) -> std::io::Result<Writer> {
        let file = open_append(path)?;
        let regular = file.metadata()?.is_file();
        let head_file = if regular {
            let head_path = head_path(path);
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&head_path)?;
            f.try_lock().map_err(|_| {
                std::io::Error::other(format!(
                    "the audit log is held by another writer: another process, or another log of this one configured to the same file (its lock {} is taken)",
                    head_path.display()
                ))
            })?;
            Some(f)
        } else {
            None
        };
        let mut writer = Writer {
            file,
            regular,
            head: Head::GENESIS,
            end: 0,
            recent: VecDeque::new(),
            recent_bytes: 0,
            checkpoints,
            unsigned: 0,
            unsigned_since: None,
            head_file,
            signed: None,
        };
        if regular {
            writer.recover()?;
        }
        Ok(writer)
    }

    /// Finds where the chain stands from the file's last line (or the `.head` file when
    /// the log is empty), and accounts for a torn last line with a `recovered` link.
    fn recover(&mut self) -> std::io::Result<()> {
        let len = self.file.metadata()?.len();
        let from = len.saturating_sub(TAIL_WINDOW);
        let mut tail = Vec::new();
        let mut reader = &self.file;
        reader.seek(SeekFrom::Start(from))?;
        reader.take(len - from).read_to_end(&mut tail)?;
        // The bytes after the last newline are a torn line.
        let whole = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let torn = tail[whole..].to_vec();
        let last_line = tail[..whole.saturating_sub(1)]
            .rsplit(|&b| b == b'\n')
            .next()
            .filter(|l| !l.is_empty());
        self.head = match last_line {
            // A line written before the chain: the first link chains to it.
            Some(line) => Head::after(line).unwrap_or(Head {
                seq: 0,
                hash: chain::line_hash(line),
            }),
            None if whole == 0 && from == 0 => self.stored_head().unwrap_or(Head::GENESIS),
            None => Head::GENESIS,
        };
        self.end = len;
        if !torn.is_empty() {
            tracing::warn!(
                bytes = torn.len(),
                "the audit log ends in a torn line (a crash mid-write); recording it"
            );
            self.write_recovered(torn)?;
        }
        Ok(())
    }

    /// The head the `.head` file holds, if it holds one.
    fn stored_head(&self) -> Option<Head> {
        let mut text = String::new();
        (&mut self.head_file.as_ref()?)
            .read_to_string(&mut text)
            .ok()?;
        let (seq, hash) = text.trim().split_once(' ')?;
        Some(Head {
            seq: seq.parse().ok()?,
            hash: hex::decode(hash).ok()?.try_into().ok()?,
        })
    }

    /// Writes `\n` after `foreign` (bytes at the file's end no link accounts for), if
    /// they lack one, and a `recovered` link naming them; fsyncs.
    fn write_recovered(&mut self, mut foreign: Vec<u8>) -> std::io::Result<()> {
        let mut out = Vec::new();
        if foreign.last() != Some(&b'\n') {
            out.push(b'\n');
            foreign.push(b'\n');
        }
        let record = format!(
            "{{\"event\":\"recovered\",\"time_ms\":{},\"foreign_bytes\":{},\"foreign_sha256\":\"{}\"}}",
            now_ms(),
            foreign.len(),
            hex::encode(chain::line_hash(&foreign))
        );
        let before = out.len();
        self.head.link(record.as_bytes(), &mut out);
        self.remember(out[before..].to_vec());
        self.unsigned_one();
        self.put(&out)
    }

    /// When the next checkpoint is due (`None`: nothing unsigned, or no key).
    fn checkpoint_due(&self) -> Option<Instant> {
        let interval = self.checkpoints.as_ref()?.interval;
        Some(self.unsigned_since? + interval)
    }

    /// Links and writes `records` (one per line), after what a truncation lost and
    /// before a checkpoint when one is due (or `sign` asks for one), then fsyncs.
    /// On failure the file is cut back to where it ended and the chain stands where it
    /// stood.
    fn write(&mut self, records: &[u8], sign: bool) -> std::io::Result<()> {
        self.resync()?;
        let saved = (
            self.head,
            self.unsigned,
            self.unsigned_since,
            self.recent.len(),
        );
        let mut out = Vec::with_capacity(records.len() + records.len() / 4 + 256);
        for record in records.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let before = out.len();
            self.head.link(record, &mut out);
            self.remember(out[before..].to_vec());
            self.unsigned_one();
        }
        let due = self.checkpoint_due().is_some_and(|d| d <= Instant::now());
        let mut checkpoint = None;
        if let Some(checkpoints) = &self.checkpoints {
            if self.unsigned > 0 && (sign || due || self.unsigned >= checkpoints.records) {
                let before = out.len();
                self.head.checkpoint(&checkpoints.key, now_ms(), &mut out);
                checkpoint = Some(before..out.len() - 1);
                self.remember(out[before..].to_vec());
                self.unsigned = 0;
                self.unsigned_since = None;
            }
        }
        if out.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.put(&out) {
            (self.head, self.unsigned, self.unsigned_since) = (saved.0, saved.1, saved.2);
            self.recent.truncate(saved.3);
            self.recent_bytes = self.recent.iter().map(Vec::len).sum();
            if self.regular {
                let _ = self.file.set_len(self.end);
            }
            return Err(e);
        }
        if let Some(range) = checkpoint {
            self.signed = Some(String::from_utf8_lossy(&out[range]).into_owned());
        }
        Ok(())
    }

    /// Writes and fsyncs `out`, and records the new head in the `.head` file.
    fn put(&mut self, out: &[u8]) -> std::io::Result<()> {
        self.file.write_all(out)?;
        self.file.sync_data()?;
        self.end += out.len() as u64;
        if let Some(f) = &self.head_file {
            // Fixed width, so a shorter head never leaves a longer one's tail behind.
            let line = format!("{:020} {}\n", self.head.seq, hex::encode(self.head.hash));
            f.write_all_at(line.as_bytes(), 0)?;
        }
        Ok(())
    }

    /// Before a batch: if the file shrank (`copytruncate`), writes the recent links
    /// again; if it grew by bytes this writer did not write, accounts for them.
    fn resync(&mut self) -> std::io::Result<()> {
        if !self.regular {
            return Ok(());
        }
        let len = self.file.metadata()?.len();
        if len < self.end {
            tracing::info!(
                links = self.recent.len(),
                "the audit log was truncated under its writer (copytruncate?): writing its last links again"
            );
            self.end = len;
            let again: Vec<u8> = self.recent.iter().flatten().copied().collect();
            if !again.is_empty() {
                self.put(&again)?;
            }
        } else if len > self.end {
            tracing::warn!(
                bytes = len - self.end,
                "bytes the audit writer did not write were appended to its log; recording them"
            );
            let mut foreign = vec![0; (len - self.end) as usize];
            self.file.read_exact_at(&mut foreign, self.end)?;
            self.end = len;
            self.write_recovered(foreign)?;
        }
        Ok(())
    }

    /// Signs the chain, then opens the path afresh (logrotate renamed the file).
    fn reopen(&mut self, path: &Path) {
        if let Err(e) = self.write(&[], true) {
            tracing::error!(path = %path.display(), error = %e, "signing the audit chain before reopening failed");
        }
        match open_append(path).and_then(|f| Ok((f.metadata()?.len(), f))) {
            Ok((len, file)) => {
                self.file = file;
                self.end = len;
                self.recent.clear();
                self.recent_bytes = 0;
                if let Some(f) = &self.head_file {
                    let _ = f.sync_data();
                }
            }
            Err(e) => tracing::error!(
                path = %path.display(),
                error = %e,
                "reopening the log failed; still writing to the file open before"
            ),
        }
    }

    fn remember(&mut self, link: Vec<u8>) {
        self.recent_bytes += link.len();
        self.recent.push_back(link);
        while self.recent.len() > RECENT_LINKS || self.recent_bytes > RECENT_BYTES {
            let old = self.recent.pop_front().expect("not empty");
            self.recent_bytes -= old.len();
        }
    }

    fn unsigned_one(&mut self) {
        self.unsigned += 1;
        self.unsigned_since.get_or_insert_with(Instant::now);
    }
}

impl Drop for Writer {
    /// Signs what is unsigned and keeps the `.head` file.
    fn drop(&mut self) {
        let _ = self.write(&[], true);
        if let Some(f) = &self.head_file {
            let _ = f.sync_data();
        }
    }
}

/// The `.head` file beside a log.
fn head_path(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".head");
    PathBuf::from(name)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Opens the log for appending, and, when it is a regular file, for reading (the writer
/// reads its tail on open and bytes it did not write). A pipe is opened write-only, so
/// the open waits for its reader as any writer's would.
fn open_append(path: &Path) -> std::io::Result<File> {
    let special = std::fs::metadata(path).is_ok_and(|m| !m.is_file());
    OpenOptions::new()
        .create(true)
        .read(!special)
        .append(true)
        .open(path)
}

impl AuditLog {
    /// Writes what is queued, signs the chain, stops the writer and waits for it: a
    /// server calls it once it has stopped serving, so that its last records are
    /// signed even if something still holds the log when the process exits. Records
    /// appended after it are not written.
    pub fn close(&self) {
        self.shared.lock().closing = true;
        self.shared.changed.notify_all();
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

impl Drop for AuditLog {
    /// [`AuditLog::close`].
    fn drop(&mut self) {
        self.close();
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

    use super::verify::verify;
    use crate::trust::SecretKey;

    fn key() -> SecretKey {
        SecretKey::from_seed(&[9; 32])
    }

    fn signed(path: &Path, records: u64) -> AuditLog {
        let checkpoints = Checkpoints {
            records,
            ..Checkpoints::new(key())
        };
        AuditLog::open_signed(path, Some(checkpoints)).unwrap()
    }

    fn write(log: &AuditLog, sizes: std::ops::Range<u64>) {
        for n in sizes {
            log.wait(log.append(&record(n))).unwrap();
        }
    }

    fn events(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| match serde_json::from_str::<serde_json::Value>(l) {
                Ok(v) => v["event"].as_str().unwrap_or("record").to_string(),
                Err(_) => "not-json".to_string(),
            })
            .collect()
    }

    #[test]
    fn the_chain_is_signed_every_n_records_and_at_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = signed(&path, 3);
        write(&log, 0..7);
        drop(log);
        let e = events(&path);
        assert_eq!(e.iter().filter(|e| *e == "checkpoint").count(), 3, "{e:?}");
        assert_eq!(e.last().unwrap(), "checkpoint");
        let proof = verify(&[path], Some(&key().public_key())).unwrap();
        assert_eq!((proof.first, proof.last, proof.records), (1, 10, 10));
        assert_eq!(proof.signed_through, Some(10));
    }

    #[test]
    fn the_last_checkpoint_is_there_for_a_witness() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = signed(&path, 2);
        assert_eq!(log.last_checkpoint(), None);
        write(&log, 0..2);
        let line = log.last_checkpoint().expect("a checkpoint after 2 records");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().last(), Some(line.as_str()));
        assert!(line.contains("\"event\":\"checkpoint\""));
    }

    #[test]
    fn a_witnessed_checkpoint_makes_a_cut_from_the_end_evident() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = signed(&path, 2);
        write(&log, 0..2);
        let witness = log.last_checkpoint().unwrap();
        write(&log, 2..4);
        drop(log);
        let key = key().public_key();
        let files = [path.clone()];
        let proof =
            verify::verify_witnessed(&files, Some(&key), std::slice::from_ref(&witness)).unwrap();
        assert_eq!(proof.last, 6);
        // Everything from the witnessed checkpoint on removed: without a key the chain
        // alone still verifies, against the witness it does not.
        let text = std::fs::read_to_string(&path).unwrap();
        let kept: Vec<&str> = text.lines().take(2).collect();
        std::fs::write(&path, kept.join("\n") + "\n").unwrap();
        assert!(verify(&files, None).is_ok());
        let e = verify::verify_witnessed(&files, Some(&key), std::slice::from_ref(&witness))
            .unwrap_err();
        assert!(
            matches!(
                e,
                verify::VerifyError::Cut {
                    witnessed: 3,
                    last: 2
                }
            ),
            "{e}"
        );
        // A forged witness is refused.
        let forged = witness.replace("\"time_ms\":1", "\"time_ms\":2");
        assert!(matches!(
            verify::verify_witnessed(&files, Some(&key), &[forged]),
            Err(verify::VerifyError::BadWitness(_))
        ));
    }

    #[test]
    fn an_unsigned_record_is_signed_within_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let checkpoints = Checkpoints {
            interval: Duration::from_millis(50),
            ..Checkpoints::new(key())
        };
        let log = AuditLog::open_signed(&path, Some(checkpoints)).unwrap();
        write(&log, 0..1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while events(&path).len() < 2 {
            assert!(Instant::now() < deadline, "no checkpoint within 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(events(&path), ["record", "checkpoint"]);
        drop(log);
        // Nothing was unsigned at close: no second checkpoint.
        assert_eq!(events(&path).len(), 2);
    }

    #[test]
    fn the_chain_goes_on_across_rename_rotation_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let rotated = dir.path().join("audit.jsonl.1");
        let log = signed(&path, 1000);
        write(&log, 0..3);
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen();
        write(&log, 3..5);
        drop(log);
        // A restart after a rotation that left the log empty: the head is in `.head`.
        std::fs::rename(&path, dir.path().join("audit.jsonl.0")).unwrap();
        let log = signed(&path, 1000);
        write(&log, 5..6);
        drop(log);
        let files = [
            rotated.clone(),
            dir.path().join("audit.jsonl.0"),
            path.clone(),
        ];
        let proof = verify(&files, Some(&key().public_key())).unwrap();
        // 6 records, a checkpoint at each rotation and close.
        assert_eq!((proof.first, proof.last, proof.records), (1, 9, 9));
        assert_eq!(events(&rotated).last().unwrap(), "checkpoint");
        // logrotate's `compress`: the oldest file gzipped reads the same.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&std::fs::read(&rotated).unwrap()).unwrap();
        std::fs::write(&rotated, gz.finish().unwrap()).unwrap();
        let again = verify(&files, Some(&key().public_key())).unwrap();
        assert_eq!(again.records, proof.records);
        // The newest file alone starts mid-chain and still verifies.
        let alone = verify(&[path], Some(&key().public_key())).unwrap();
        assert_eq!((alone.first, alone.records), (8, 2));
    }

    #[test]
    fn records_written_between_copy_and_truncate_are_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let copy = dir.path().join("audit.jsonl.1");
        let log = signed(&path, 1000);
        write(&log, 0..4);
        // What logrotate's copytruncate does, with two records landing in between.
        std::fs::copy(&path, &copy).unwrap();
        write(&log, 4..6);
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        write(&log, 6..7);
        drop(log);
        let proof = verify(&[copy, path.clone()], Some(&key().public_key())).unwrap();
        assert_eq!((proof.last, proof.records), (8, 8), "{proof:?}");
        assert!(proof.replayed >= 4, "{proof:?}");
        assert!(verify(&[path], Some(&key().public_key())).is_ok());
    }

    #[test]
    fn a_torn_line_from_a_crash_is_recorded_not_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = signed(&path, 1000);
        write(&log, 0..2);
        drop(log);
        // A crash mid-write leaves part of a line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"seq":4,"prev":"ab"#).unwrap();
        let key = key().public_key();
        let cut = verify(std::slice::from_ref(&path), Some(&key)).unwrap_err();
        assert_eq!(cut.line(), Some(4));
        assert_eq!(cut.why(), Some(&verify::Break::Truncated));
        let log = signed(&path, 1000);
        write(&log, 2..3);
        drop(log);
        let proof = verify(std::slice::from_ref(&path), Some(&key)).unwrap();
        assert_eq!(proof.recovered.len(), 1);
        assert_eq!(proof.recovered[0].number, 4);
        assert_eq!(events(&path)[4], "recovered");
    }

    #[test]
    fn bytes_another_writer_appends_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = signed(&path, 1000);
        write(&log, 0..1);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"forged\":1}\n{\"forged\":2}\n").unwrap();
        write(&log, 1..2);
        drop(log);
        let proof = verify(&[path], Some(&key().public_key())).unwrap();
        assert_eq!(proof.recovered.len(), 1);
        assert_eq!(proof.recovered[0].number, 2);
    }

    #[test]
    fn a_second_writer_of_one_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let _log = AuditLog::open(&path).unwrap();
        let e = AuditLog::open(&path).err().unwrap().to_string();
        assert!(e.contains("held by another writer"), "{e}");
    }

    #[test]
    fn verify_names_the_first_line_of_each_kind_of_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = signed(&path, 4);
        write(&log, 0..8);
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<String> = text.lines().map(String::from).collect();
        let key = key().public_key();
        let check = |lines: &[String]| {
            let bad = dir.path().join("bad.jsonl");
            std::fs::write(&bad, lines.join("\n") + "\n").unwrap();
            verify(&[bad], Some(&key)).unwrap_err()
        };
        use verify::Break;
        let mut deleted = lines.clone();
        deleted.remove(2);
        let e = check(&deleted);
        assert_eq!(
            (e.line(), e.why()),
            (Some(3), Some(&Break::Missing { from: 3, to: 3 }))
        );
        let mut edited = lines.clone();
        edited[2] = edited[2].replace("\"size\":2", "\"size\":3");
        let e = check(&edited);
        assert_eq!((e.line(), e.why()), (Some(3), Some(&Break::Edited)));
        let mut swapped = lines.clone();
        swapped.swap(5, 6);
        assert_eq!(check(&swapped).line(), Some(6));
        // A checkpoint (line 5) edited: its signature fails.
        let mut resigned = lines.clone();
        resigned[4] = resigned[4].replace("\"time_ms\":1", "\"time_ms\":2");
        let e = check(&resigned);
        assert_eq!(e.line(), Some(5), "{e}");
        // Cut mid-line.
        let bad = dir.path().join("cut.jsonl");
        std::fs::write(&bad, &text[..text.len() - 20]).unwrap();
        let e = verify(&[bad], Some(&key)).unwrap_err();
        assert_eq!(
            (e.line(), e.why()),
            (Some(lines.len() as u64), Some(&Break::Truncated))
        );
        // Checked with another key.
        let other = SecretKey::from_seed(&[1; 32]).public_key();
        let e = verify(std::slice::from_ref(&path), Some(&other)).unwrap_err();
        assert_eq!(e.line(), Some(5));
        // Records never signed prove nothing.
        let unsigned = dir.path().join("unsigned.jsonl");
        let log = AuditLog::open(&unsigned).unwrap();
        write(&log, 0..2);
        drop(log);
        assert!(matches!(
            verify(std::slice::from_ref(&unsigned), Some(&key)),
            Err(verify::VerifyError::Unsigned { records: 2 })
        ));
        assert_eq!(verify(&[unsigned], None).unwrap().records, 2);
    }
}
