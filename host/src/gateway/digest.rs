//! Hashing an upload as it passes. Small bodies are hashed inline on the connection's
//! task; large ones (or of unknown length) on a blocking thread fed through a bounded
//! channel, so that hashing overlaps with forwarding: at low concurrency a second core
//! does the hashing instead of waiting.

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::hashing::ObjectHasher;
use crate::{Algorithm, Digest};

/// Bodies at least this long are hashed off the connection's task.
const OFFLOAD_FROM: u64 = 256 * 1024;
/// Frames queued for the hashing thread (bounds memory per upload).
const QUEUE: usize = 16;

/// An upload's hasher.
pub enum Digester {
    /// Hashing on the caller's task.
    Inline(Box<ObjectHasher>),
    /// Hashing on a blocking thread.
    Offloaded {
        /// Frames to hash.
        tx: mpsc::Sender<Bytes>,
        /// The thread, returning the hasher when the channel closes.
        task: JoinHandle<ObjectHasher>,
        /// Bytes sent so far.
        len: u64,
    },
}

impl Digester {
    /// A digester for a body of `expected` bytes (if known). Must be called inside a
    /// tokio runtime.
    pub fn new(algorithms: &[Algorithm], expected: Option<u64>) -> Digester {
        let hasher = ObjectHasher::new(algorithms);
        if expected.is_some_and(|n| n < OFFLOAD_FROM) {
            return Digester::Inline(Box::new(hasher));
        }
        let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
        let task = tokio::task::spawn_blocking(move || {
            let mut hasher = hasher;
            while let Some(frame) = rx.blocking_recv() {
                hasher.update(&frame);
            }
            hasher
        });
        Digester::Offloaded { tx, task, len: 0 }
    }

    /// Bytes fed so far.
    pub fn bytes_fed(&self) -> u64 {
        match self {
            Digester::Inline(h) => h.len(),
            Digester::Offloaded { len, .. } => *len,
        }
    }

    /// Feeds the next frame (a reference-counted handle, not a copy).
    pub async fn update(&mut self, frame: &Bytes) {
        match self {
            Digester::Inline(h) => h.update(frame),
            Digester::Offloaded { tx, len, .. } => {
                *len += frame.len() as u64;
                // The thread only stops when the channel closes, so a send cannot fail
                // unless the thread panicked; `finish` reports that.
                let _ = tx.send(frame.clone()).await;
            }
        }
    }

    /// The digests, once every frame is hashed. `None` if the hashing thread failed.
    pub async fn finish(self) -> Option<Vec<Digest>> {
        match self {
            Digester::Inline(h) => Some((*h).finish()),
            Digester::Offloaded { tx, task, .. } => {
                drop(tx);
                task.await.ok().map(ObjectHasher::finish)
            }
        }
    }
}
