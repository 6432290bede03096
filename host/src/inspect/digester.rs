//! Hashing a body that is not a container as it passes.
//!
//! Small bodies, and every body once more uploads are being hashed in the process than
//! the machine has cores, are hashed on the serving threads: while the thread serves other
//! connections, in its [`LanePool`], the blocks of the uploads in flight side by side in
//! SIMD lanes, so that a crowd of uploads costs a fraction of hashing each alone;
//! otherwise alone, frame by frame as they come. A new upload's own
//! thread would only time-slice the same cores with the serving threads and every other
//! upload (at 16 MiB on 16 connections over https on 2 cores, that made the p99
//! 0.56–1.7 s, against 0.20–0.28 s inline).
//!
//! Large bodies (or of unknown length) while a core is spare are hashed on blocking
//! threads fed through bounded channels, so that hashing overlaps with forwarding: at
//! low concurrency the second core hashes instead of waiting. With several algorithms
//! and the process otherwise idle, they are split over as many threads as there are
//! cores (MD5 alone on one, SHA-1 and SHA-256 on another): each frame is shared, not
//! copied, and one object's MD5, serial and the slowest, no longer waits for the others.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::hashing::lanes::Engine;
use crate::hashing::pool::{self, LanePool, PooledHasher};
use crate::hashing::{split, ObjectHasher};
use crate::{Algorithm, Digest};

/// Bodies at least this long are hashed off the connection's task.
const OFFLOAD_FROM: u64 = 256 * 1024;
/// Frames queued for the hashing thread (bounds memory per upload).
const QUEUE: usize = 16;

/// Uploads being hashed in the process (all front-ends and threads): cores are the
/// process's, so the count is too.
static HASHING: AtomicUsize = AtomicUsize::new(0);

/// One upload counted in [`HASHING`] while it lives.
pub struct Counted(());

impl Counted {
    /// Counts one more upload; returns it with the count, itself included.
    fn new() -> (Counted, usize) {
        (Counted(()), HASHING.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        HASHING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The cores this process may use.
fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// An upload's hasher.
pub enum Digester {
    /// Hashing on the caller's task, alone (no other connection on this thread, or no
    /// SIMD lanes to share).
    Inline(Box<ObjectHasher>, Counted),
    /// Hashing on the serving threads, in the process's lane pool.
    Pooled(PooledHasher, Counted),
    /// Hashing on blocking threads, one per group of algorithms.
    Offloaded {
        /// One per thread.
        workers: Vec<Worker>,
        /// Bytes sent so far.
        len: u64,
        /// Counted as hashing until dropped.
        _counted: Counted,
    },
}

/// A blocking thread hashing some of an upload's algorithms.
pub struct Worker {
    /// Frames to hash.
    tx: mpsc::Sender<Bytes>,
    /// The thread, returning the hasher when the channel closes.
    task: JoinHandle<ObjectHasher>,
}

impl Digester {
    /// A digester for a body of `expected` bytes (if known). Must be called inside a
    /// tokio runtime.
    pub fn new(algorithms: &[Algorithm], expected: Option<u64>) -> Digester {
        let (counted, hashing) = Counted::new();
        if expected.is_some_and(|n| n < OFFLOAD_FROM) || hashing > cores() {
            return if Engine::detect() == Engine::Scalar || !pool::company() {
                Digester::Inline(Box::new(ObjectHasher::new(algorithms)), counted)
            } else {
                Digester::Pooled(LanePool::local().hasher(algorithms), counted)
            };
        }
        // The cores no other upload is hashing on, this one's included.
        let spare = cores() + 1 - hashing;
        let workers = split::groups(algorithms, spare)
            .into_iter()
            .map(|group| {
                let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
                let task = tokio::task::spawn_blocking(move || {
                    let mut hasher = ObjectHasher::new(&group);
                    while let Some(frame) = rx.blocking_recv() {
                        hasher.update(&frame);
                    }
                    hasher
                });
                Worker { tx, task }
            })
            .collect();
        Digester::Offloaded {
            workers,
            len: 0,
            _counted: counted,
        }
    }

    /// Bytes fed so far.
    pub fn bytes_fed(&self) -> u64 {
        match self {
            Digester::Inline(h, _) => h.len(),
            Digester::Pooled(h, _) => h.bytes_fed(),
            Digester::Offloaded { len, .. } => *len,
        }
    }

    /// Feeds the next frame (a reference-counted handle, not a copy).
    pub async fn update(&mut self, frame: &Bytes) {
        match self {
            Digester::Inline(h, _) => h.update(frame),
            Digester::Pooled(h, _) => h.update(frame).await,
            Digester::Offloaded { workers, len, .. } => {
                *len += frame.len() as u64;
                for w in workers {
                    // The thread only stops when the channel closes, so a send cannot
                    // fail unless the thread panicked; `finish` reports that.
                    let _ = w.tx.send(frame.clone()).await;
                }
            }
        }
    }

    /// The digests, once every frame is hashed, in the order of [`ObjectHasher::finish`].
    /// `None` if a hashing thread failed.
    pub async fn finish(self) -> Option<Vec<Digest>> {
        match self {
            Digester::Inline(h, _) => Some((*h).finish()),
            Digester::Pooled(h, _) => Some(h.finish().await),
            Digester::Offloaded { workers, .. } => {
                let mut digests = Vec::with_capacity(3);
                for Worker { tx, task } in workers {
                    drop(tx);
                    digests.extend(task.await.ok()?.finish());
                }
                digests.sort_by_key(|d| Algorithm::ALL.iter().position(|a| *a == d.algorithm));
                Some(digests)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn large_bodies_go_to_a_thread_only_while_a_core_is_spare() {
        let algorithms = [Algorithm::Sha256];
        let large = Some(OFFLOAD_FROM);
        assert!(matches!(
            Digester::new(&algorithms, Some(OFFLOAD_FROM - 1)),
            Digester::Inline(..) | Digester::Pooled(..)
        ));
        // Other tests may hash meanwhile: they only make this upload's place later.
        let mut uploads: Vec<Digester> = (0..cores())
            .map(|_| Digester::new(&algorithms, large))
            .collect();
        let crowded = Digester::new(&algorithms, large);
        assert!(matches!(
            crowded,
            Digester::Inline(..) | Digester::Pooled(..)
        ));
        // Inline or not, the digest is the same.
        let mut crowded = crowded;
        crowded.update(&Bytes::from_static(b"abc")).await;
        let mut first = uploads.remove(0);
        first.update(&Bytes::from_static(b"abc")).await;
        let (a, b) = (
            crowded.finish().await.unwrap(),
            first.finish().await.unwrap(),
        );
        assert_eq!(a[0].bytes, b[0].bytes);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn split_threads_give_the_digests_of_one() {
        let data: Vec<u8> = (0..3_000_000u32).map(|x| (x % 251) as u8).collect();
        let mut d = Digester::new(&Algorithm::ALL, None);
        for chunk in data.chunks(65_536) {
            d.update(&Bytes::copy_from_slice(chunk)).await;
        }
        let mut alone = ObjectHasher::new(&Algorithm::ALL);
        alone.update(&data);
        assert_eq!(d.finish().await.unwrap(), alone.finish());
    }
}
