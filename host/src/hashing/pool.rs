//! The uploads a process serves, hashed together: a [`LanePool`] collects the frames of
//! the uploads hashed on the serving threads and hashes them in one pass of the SIMD
//! lanes ([`ObjectHasher::update_many`]), so that sixteen 64 KiB uploads cost about what
//! one costs one stream at a time.
//!
//! Nothing waits on a dedicated thread: whichever upload fills the queue, or needs its
//! digests, drains it, hashing the other uploads' frames with its own ("flat
//! combining"). One drain runs at a time in a pool and takes the queue as it stands when
//! it starts, so each upload's frames are hashed in order. So that every core can hash
//! at once, and the uploads one thread serves meet in one pool, each thread has a pool
//! of its own ([`LanePool::local`]). The frames are the
//! reference-counted buffers the front-end forwards anyway (no copy); what one upload
//! may have queued, and what all may have, is bounded.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use bytes::Bytes;
//! use hashgate_host::hashing::{pool::LanePool, ObjectHasher};
//! use hashgate_host::Algorithm;
//!
//! let pool = LanePool::local();
//! let (mut a, mut b) = (pool.hasher(&[Algorithm::Md5]), pool.hasher(&[Algorithm::Md5]));
//! a.update(&Bytes::from_static(b"abc")).await;
//! b.update(&Bytes::from_static(b"abd")).await;
//! let mut alone = ObjectHasher::new(&[Algorithm::Md5]);
//! alone.update(b"abc");
//! assert_eq!(a.finish().await, alone.finish());
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::lanes::Engine;
use super::ObjectHasher;
use crate::{Algorithm, Digest};

/// Queued bytes (all uploads) that make the next upload to queue drain the pool: enough
/// for every lane to have a run of blocks, little enough to still be in cache.
const DRAIN_AT: usize = 4 << 20;
/// Queued bytes of one upload that make it drain the pool before it queues more. Above
/// [`DRAIN_AT`]: the queue's total drains first, while the uploads have about equal
/// shares, which keeps the lanes full; one upload far ahead of the others would leave
/// them empty, its blocks hashed alone.
const OWN_LIMIT: usize = 2 << 20;

/// Bytes of each upload hashed side by side in one round of a drain: sixteen uploads'
/// rounds fit in a core's L2 cache while the three algorithms go over them.
const ROUND: usize = 64 * 1024;
/// Uploads a drain keeps in its lanes to the end (see [`LanePool::drain_queued`]): five
/// lanes of AVX-512 beat one stream of SHA-1 on SHA-NI (see [`super::lanes`]).
const COMPANY: usize = 5;

/// Times an upload that needs its digests lets the other tasks of its thread run first,
/// while fewer uploads than the lanes hold have frames queued: on a loaded server those
/// tasks read their bodies meanwhile and their frames join the same pass; on an idle
/// one there are none, and a turn costs about a microsecond.
const WAIT_TURNS: usize = 3;

/// Frames waiting to be hashed, in arrival order.
#[derive(Default)]
struct Queue {
    frames: Vec<(Arc<Stream>, Bytes)>,
    bytes: usize,
}

impl Queue {
    /// Uploads with frames queued (a few dozen frames at most: a scan is cheap).
    fn uploads(&self) -> usize {
        let mut seen: Vec<*const Stream> =
            self.frames.iter().map(|(s, _)| Arc::as_ptr(s)).collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len()
    }
}

/// One upload in the pool.
struct Stream {
    hasher: Mutex<ObjectHasher>,
    /// Its bytes queued and not yet hashed.
    queued: AtomicUsize,
}

/// Frames of many uploads hashed together (see the module docs).
#[derive(Default)]
pub struct LanePool {
    queue: Mutex<Queue>,
    /// Held by the one drain running; async, so that an upload waiting for it lets its
    /// serving thread serve others meanwhile.
    drain: tokio::sync::Mutex<()>,
}

/// Locks `m`, whether or not a holder panicked (the data is a queue or a hasher, left
/// consistent between operations).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LanePool {
    /// The calling thread's pool, for an upload it serves: the uploads of one serving
    /// thread meet there, and one drain runs at a time in a pool, so one pool for the
    /// process would hash on one core only. A pool outlives its thread (an upload that
    /// moved to another thread still drains it there).
    pub fn local() -> &'static LanePool {
        thread_local! {
            static POOL: &'static LanePool = Box::leak(Box::default());
        }
        POOL.with(|p| *p)
    }

    /// A hasher for one upload, hashed with `algorithms` in this pool.
    pub fn hasher(&'static self, algorithms: &[Algorithm]) -> PooledHasher {
        PooledHasher {
            pool: self,
            stream: Arc::new(Stream {
                hasher: Mutex::new(ObjectHasher::new(algorithms)),
                queued: AtomicUsize::new(0),
            }),
            len: 0,
        }
    }

    /// Queues `frame` of `stream`; returns the bytes queued in all.
    fn push(&self, stream: &Arc<Stream>, frame: &Bytes) -> usize {
        stream.queued.fetch_add(frame.len(), Ordering::AcqRel);
        let mut q = lock(&self.queue);
        q.frames.push((stream.clone(), frame.clone()));
        q.bytes += frame.len();
        q.bytes
    }

    /// Hashes the frames queued when it starts (waiting for a drain under way first):
    /// all of `owner`'s, and of every other upload a share (see [`LanePool::drain_queued`]).
    async fn drain(&self, owner: &Arc<Stream>) {
        let _running = self.drain.lock().await;
        self.drain_queued(Some(owner));
    }

    /// [`LanePool::drain`] for no upload in particular, if none is under way; otherwise
    /// nothing: the running one, or the next upload to need its digests, hashes what is
    /// queued.
    fn try_drain(&self) {
        if let Ok(_running) = self.drain.try_lock() {
            self.drain_queued(None);
        }
    }

    /// Hashes the queue as it stands, the caller holding `drain`: in rounds of up to
    /// [`ROUND`] bytes of each upload side by side, everything `owner` has queued, and of
    /// the others as much as the [`COMPANY`]-th most has, so that enough lanes stay busy
    /// to the end; what an upload far ahead of the others has beyond that goes back to
    /// the front of the queue for the next pass, instead of being hashed alone.
    fn drain_queued(&self, owner: Option<&Arc<Stream>>) {
        let frames = {
            let mut q = lock(&self.queue);
            q.bytes = 0;
            std::mem::take(&mut q.frames)
        };
        if frames.is_empty() {
            return;
        }
        // Each upload's frames in order; uploads in order of their first frame.
        let mut streams: Vec<(Arc<Stream>, VecDeque<Bytes>)> = Vec::new();
        let mut index: HashMap<*const Stream, usize> = HashMap::new();
        for (stream, frame) in frames {
            let i = *index.entry(Arc::as_ptr(&stream)).or_insert_with(|| {
                streams.push((stream.clone(), VecDeque::new()));
                streams.len() - 1
            });
            streams[i].1.push_back(frame);
        }
        let (streams, mut queues): (Vec<Arc<Stream>>, Vec<VecDeque<Bytes>>) =
            streams.into_iter().unzip();
        let totals: Vec<usize> = queues
            .iter()
            .map(|f| f.iter().map(Bytes::len).sum())
            .collect();
        let mut sorted = totals.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let share = sorted
            .get(COMPANY - 1)
            .copied()
            .unwrap_or(usize::MAX)
            .max(ROUND);
        let mut budgets: Vec<usize> = streams
            .iter()
            .zip(&totals)
            .map(|(s, &total)| {
                let mine = owner.is_some_and(|o| Arc::ptr_eq(o, s));
                if mine {
                    total
                } else {
                    total.min(share)
                }
            })
            .collect();
        let mut hashers: Vec<MutexGuard<'_, ObjectHasher>> =
            streams.iter().map(|s| lock(&s.hasher)).collect();
        let shares = budgets.clone();
        loop {
            // The next round: up to ROUND bytes of each upload with budget left, in
            // stream order beside its hasher.
            let round: Vec<Option<Bytes>> = queues
                .iter_mut()
                .zip(budgets.iter_mut())
                .map(|(frames, budget)| {
                    let front = frames.front_mut()?;
                    let take = front.len().min(*budget).min(ROUND);
                    if take == 0 {
                        return None;
                    }
                    *budget -= take;
                    let piece = front.split_to(take);
                    if front.is_empty() {
                        frames.pop_front();
                    }
                    Some(piece)
                })
                .collect();
            let mut batch: Vec<(&mut ObjectHasher, &[u8])> = hashers
                .iter_mut()
                .zip(&round)
                .filter_map(|(h, piece)| Some((&mut **h, piece.as_deref()?)))
                .collect();
            if batch.is_empty() {
                break;
            }
            ObjectHasher::update_many(&mut batch);
        }
        drop(hashers);
        // What was not hashed goes back in front of anything queued meanwhile.
        let mut leftover: Vec<(Arc<Stream>, Bytes)> = Vec::new();
        for (((stream, frames), share), left) in
            streams.into_iter().zip(queues).zip(shares).zip(budgets)
        {
            stream.queued.fetch_sub(share - left, Ordering::AcqRel);
            leftover.extend(frames.into_iter().map(|f| (stream.clone(), f)));
        }
        if !leftover.is_empty() {
            let mut q = lock(&self.queue);
            q.bytes += leftover.iter().map(|(_, f)| f.len()).sum::<usize>();
            q.frames.splice(0..0, leftover);
        }
    }
}

/// Whether the calling thread's runtime runs other tasks (connections) than this one:
/// uploads that could share a pass. A lone connection has none to wait for, and a turn
/// through the runtime costs it more than the pool can save (measured: +30% CPU per
/// 4 KiB PUT on one connection with three turns).
pub fn company() -> bool {
    tokio::runtime::Handle::try_current().is_ok_and(|h| h.metrics().num_alive_tasks() > 1)
}

/// One upload's hasher in a [`LanePool`].
pub struct PooledHasher {
    pool: &'static LanePool,
    stream: Arc<Stream>,
    len: u64,
}

impl PooledHasher {
    /// Bytes fed so far.
    pub fn bytes_fed(&self) -> u64 {
        self.len
    }

    /// Queues the next frame (a reference-counted handle, not a copy); drains the pool
    /// when the queue, or this upload's share of it, is full.
    pub async fn update(&mut self, frame: &Bytes) {
        if frame.is_empty() {
            return;
        }
        self.len += frame.len() as u64;
        let queued = self.pool.push(&self.stream, frame);
        if self.stream.queued.load(Ordering::Acquire) >= OWN_LIMIT {
            self.pool.drain(&self.stream).await;
        } else if queued >= DRAIN_AT {
            self.pool.try_drain();
        }
    }

    /// The digests, once every frame is hashed.
    pub async fn finish(self) -> Vec<Digest> {
        let mut turns = 0;
        while self.stream.queued.load(Ordering::Acquire) > 0 {
            let queued = lock(&self.pool.queue).uploads();
            if turns < WAIT_TURNS && queued < Engine::detect().lanes() && company() {
                turns += 1;
                tokio::task::yield_now().await;
                continue;
            }
            self.pool.drain(&self.stream).await;
        }
        let hasher = std::mem::replace(&mut *lock(&self.stream.hasher), ObjectHasher::new(&[]));
        hasher.finish()
    }
}

impl Drop for PooledHasher {
    /// An upload given up on (the client went away): its frames leave the queue unhashed.
    fn drop(&mut self) {
        if self.stream.queued.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut q = lock(&self.pool.queue);
        let ours = |s: &Arc<Stream>| Arc::ptr_eq(s, &self.stream);
        let dropped: usize = q
            .frames
            .iter()
            .filter(|(s, _)| ours(s))
            .map(|(_, f)| f.len())
            .sum();
        q.frames.retain(|(s, _)| !ours(s));
        q.bytes -= dropped;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_uploads_get_their_own_digests() {
        let algorithms = Algorithm::ALL;
        let tasks: Vec<_> = (0..24u8)
            .map(|i| {
                tokio::spawn(async move {
                    let data: Vec<u8> = (0..100_000u32).map(|x| (x as u8) ^ i).collect();
                    let mut h = LanePool::local().hasher(&algorithms);
                    for chunk in data.chunks(7_000 + usize::from(i) * 333) {
                        h.update(&Bytes::copy_from_slice(chunk)).await;
                        tokio::task::yield_now().await;
                    }
                    let mut alone = ObjectHasher::new(&algorithms);
                    alone.update(&data);
                    (h.finish().await, alone.finish())
                })
            })
            .collect();
        for t in tasks {
            let (pooled, alone) = t.await.unwrap();
            assert_eq!(pooled, alone);
        }
    }

    #[tokio::test]
    async fn an_upload_given_up_on_leaves_the_queue() {
        let pool: &'static LanePool = Box::leak(Box::default());
        let mut gone = pool.hasher(&[Algorithm::Sha1]);
        gone.update(&Bytes::from(vec![1; 1000])).await;
        let mut kept = pool.hasher(&[Algorithm::Sha1]);
        kept.update(&Bytes::from(vec![2; 10])).await;
        drop(gone);
        assert_eq!(lock(&pool.queue).frames.len(), 1);
        assert_eq!(lock(&pool.queue).bytes, 10);
        let mut alone = ObjectHasher::new(&[Algorithm::Sha1]);
        alone.update(&[2; 10]);
        assert_eq!(kept.finish().await, alone.finish());
        assert_eq!(lock(&pool.queue).bytes, 0);
    }
}
