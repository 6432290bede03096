//! Catalog writes from a server: never on a serving thread, never holding up an answer.
//!
//! A front-end hands each stored object to [`Recorder::record`], which puts it on a
//! bounded queue and returns at once. One thread of its own takes what is queued and
//! writes it in batches, one transaction each. When the queue is full (the disk is slow)
//! or a batch cannot be written (the disk is full, the file is corrupt), the rows are
//! counted as lost, logged, and the catalog is *degraded* until a batch is written
//! again: uploads go on, and nothing is dropped without a count. A catalog whose
//! connection broke (PostgreSQL restarted, the network between) is connected to again,
//! at most once a second, and the rows of the batches in between are counted as lost.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Catalog, CatalogError, Entry, Kind, Location};

/// Rows written per transaction, at most.
const BATCH: usize = 512;
/// How long the writer gathers rows for one transaction, at most.
const GATHER: Duration = Duration::from_millis(20);
/// How often a lost catalog is connected to again, at most.
const RECONNECT: Duration = Duration::from_secs(1);

/// What a recorder has done since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecorderStats {
    /// Rows written (and removed).
    pub written: u64,
    /// Rows lost because the queue was full.
    pub dropped: u64,
    /// Rows lost because their batch could not be written.
    pub failed: u64,
    /// Whether the last batch failed, or rows were dropped since the last one written.
    pub degraded: bool,
}

enum Op {
    Put(Box<Entry>),
    Remove(Kind, Vec<u8>),
    /// [`Catalog::relocate`]: from, to, whether the source stays.
    Relocate(Vec<u8>, Vec<u8>, bool),
    /// Answered once everything queued before it is written (tests, shutdown).
    Flush(mpsc::Sender<()>),
}

#[derive(Default)]
struct Counts {
    written: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    degraded: AtomicBool,
}

/// The writer of one catalog: a bounded queue and the thread that drains it.
pub struct Recorder {
    tx: SyncSender<Op>,
    counts: Arc<Counts>,
}

impl Recorder {
    /// Starts writing to `catalog` on a thread of its own, with room for `capacity`
    /// rows in the queue.
    pub fn start(catalog: Catalog, capacity: usize) -> Recorder {
        Recorder::spawn(catalog.location().clone(), Some(catalog), capacity)
    }

    /// Starts writing to the catalog at `location`, connecting to it on the writer's
    /// thread (a PostgreSQL server that is down when a gateway starts leaves the
    /// catalog degraded, not the gateway stopped).
    pub fn connecting(location: Location, capacity: usize) -> Recorder {
        Recorder::spawn(location, None, capacity)
    }

    fn spawn(location: Location, catalog: Option<Catalog>, capacity: usize) -> Recorder {
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let counts = Arc::new(Counts::default());
        let thread_counts = counts.clone();
        // Degraded until the first batch is written, if not connected yet.
        counts.degraded.store(catalog.is_none(), Ordering::Relaxed);
        let writer = Writer {
            location,
            catalog,
            next_attempt: Instant::now(),
            failures: 0,
        };
        std::thread::Builder::new()
            .name("hashgate-catalog".into())
            .spawn(move || write_loop(writer, rx, &thread_counts))
            .expect("spawning the catalog thread");
        Recorder { tx, counts }
    }

    /// Queues `entry` (replacing any row of its kind and key). Never blocks: when the
    /// queue is full the row is counted as dropped.
    pub fn record(&self, entry: Entry) {
        self.send(Op::Put(Box::new(entry)));
    }

    /// Queues the removal of the row of `kind` and `key` (a `DELETE`).
    pub fn remove(&self, kind: Kind, key: Vec<u8>) {
        self.send(Op::Remove(kind, key));
    }

    /// Queues giving the rows at and under `from` the same place under `to`
    /// ([`Catalog::relocate`]: a WebDAV `MOVE`, or a `COPY` when `keep`).
    pub fn relocate(&self, from: Vec<u8>, to: Vec<u8>, keep: bool) {
        self.send(Op::Relocate(from, to, keep));
    }

    fn send(&self, op: Op) {
        match self.tx.try_send(op) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                let dropped = self.counts.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                self.counts.degraded.store(true, Ordering::Relaxed);
                // One line per power of two: a long outage does not flood the log.
                if dropped.is_power_of_two() {
                    tracing::error!(
                        dropped,
                        "catalog queue full: rows not recorded (counted in /metrics)"
                    );
                }
            }
        }
    }

    /// Waits until everything queued so far is written (or failed), up to `timeout`.
    /// Returns whether it was.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Op::Flush(tx)).is_err() {
            return false;
        }
        rx.recv_timeout(timeout).is_ok()
    }

    /// What it has done so far.
    pub fn stats(&self) -> RecorderStats {
        RecorderStats {
            written: self.counts.written.load(Ordering::Relaxed),
            dropped: self.counts.dropped.load(Ordering::Relaxed),
            failed: self.counts.failed.load(Ordering::Relaxed),
            degraded: self.counts.degraded.load(Ordering::Relaxed),
        }
    }
}

/// The writer thread's catalog: connected, or to be connected again.
struct Writer {
    location: Location,
    catalog: Option<Catalog>,
    /// When connecting may be tried again.
    next_attempt: Instant,
    /// Batches failed in a row.
    failures: u64,
}

/// Why a batch was not written.
enum Failure {
    /// The catalog failed.
    Catalog(CatalogError),
    /// Not connected, and too soon to try again.
    Waiting,
}

impl Writer {
    /// The catalog, connected to again if it was lost and it is time to try.
    fn catalog(&mut self) -> Result<&mut Catalog, Failure> {
        if self.catalog.is_none() {
            if Instant::now() < self.next_attempt {
                return Err(Failure::Waiting);
            }
            self.next_attempt = Instant::now() + RECONNECT;
            self.catalog = Some(Catalog::at(&self.location).map_err(Failure::Catalog)?);
            tracing::info!(catalog = %self.location, "catalog connected");
        }
        Ok(self.catalog.as_mut().expect("just connected"))
    }

    /// Writes `ops` in order (each removal after the puts queued before it).
    fn apply(&mut self, ops: Vec<Op>) -> Result<(), Failure> {
        let catalog = self.catalog()?;
        let mut puts = Vec::new();
        for op in ops {
            match op {
                Op::Put(entry) => puts.push(*entry),
                Op::Remove(kind, key) => {
                    // Earlier puts first: a PUT then a DELETE of one key leaves no row.
                    catalog
                        .put(&std::mem::take(&mut puts))
                        .map_err(Failure::Catalog)?;
                    catalog.remove(kind, &key).map_err(Failure::Catalog)?;
                }
                Op::Relocate(from, to, keep) => {
                    catalog
                        .put(&std::mem::take(&mut puts))
                        .map_err(Failure::Catalog)?;
                    catalog
                        .relocate(&from, &to, keep)
                        .map_err(Failure::Catalog)?;
                }
                Op::Flush(_) => {}
            }
        }
        catalog.put(&puts).map_err(Failure::Catalog)
    }
}

fn write_loop(mut writer: Writer, rx: Receiver<Op>, counts: &Counts) {
    while let Ok(first) = rx.recv() {
        // Gather for a moment: one transaction per row costs more than the row (a WAL
        // write and a commit each); a batch makes it a small fraction.
        // Sleeping rather than waiting on the queue: a sender then never has to wake
        // this thread (a futex wake per row would cost the serving threads more).
        if !matches!(first, Op::Flush(_)) {
            std::thread::sleep(GATHER);
        }
        let mut ops = vec![first];
        while ops.len() < BATCH {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let mut flushes = Vec::new();
        let mut rows = 0u64;
        for op in &mut ops {
            match op {
                Op::Flush(done) => flushes.push(done.clone()),
                Op::Put(_) | Op::Remove(..) | Op::Relocate(..) => rows += 1,
            }
        }
        match writer.apply(ops) {
            Ok(()) => {
                counts.written.fetch_add(rows, Ordering::Relaxed);
                counts.degraded.store(false, Ordering::Relaxed);
                if writer.failures > 0 {
                    tracing::info!(failed_batches = writer.failures, "catalog writes recovered");
                }
                writer.failures = 0;
            }
            Err(failure) => {
                counts.failed.fetch_add(rows, Ordering::Relaxed);
                counts.degraded.store(true, Ordering::Relaxed);
                writer.failures += 1;
                if let Failure::Catalog(e) = &failure {
                    if e.lost_connection() {
                        writer.catalog = None;
                    }
                    // One line per power of two: a long outage does not flood the log.
                    if writer.failures.is_power_of_two() {
                        tracing::error!(error = %e, rows, failed_batches = writer.failures,
                            "catalog write failed: rows not recorded (counted in /metrics)");
                    }
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}
