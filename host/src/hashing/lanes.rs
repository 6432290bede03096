//! Multi-buffer MD5, SHA-1 and SHA-256: the blocks of many independent streams compressed side
//! by side in SIMD lanes.
//!
//! One MD5 or SHA-1 stream cannot go faster than its chain of dependent rounds, but a
//! gateway always has many streams in flight, and the rounds of different streams are
//! independent: an AVX2 register holds one word of eight streams, an AVX-512 register
//! sixteen. [`compress_md5`], [`compress_sha1`] and [`compress_sha256`] take the whole blocks of many
//! streams ([`Job`]s) and keep every lane busy: when one stream's blocks run out, the
//! next job takes its lane. When too few streams are left to pay for a vector pass, the
//! rest are finished one at a time with the RustCrypto compressors (which for SHA-1 use
//! SHA-NI where the CPU has it).
//!
//! No well-kept crate does this for Rust: `md5-many` and `md5-simd` are new, single-author
//! and MD5-only; nothing covers SHA-1. The kernels ([`super::md5x`], [`super::sha1x`],
//! [`super::sha256x`]) are small and checked bit for bit against the RustCrypto crates
//! by property tests and by a fuzz target (`fuzz/fuzz_targets/hashing_lanes.rs`).
//!
//! ```
//! use hashgate_host::hashing::lanes::{compress_md5, Engine, Job};
//!
//! // Two streams of one and three blocks, from the MD5 initial state.
//! let (one, three) = ([[1u8; 64]; 1], [[2u8; 64]; 3]);
//! let init = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];
//! let (mut a, mut b) = (init, init);
//! let mut jobs = [Job::new(&mut a, None, &one), Job::new(&mut b, None, &three)];
//! compress_md5(Engine::detect(), &mut jobs);
//!
//! let mut expected = init;
//! md5::block_api::compress(&mut expected, &three);
//! assert_eq!(b, expected);
//! ```

use std::sync::OnceLock;

use super::vector::{Row, Vector, MAX_LANES};
use super::{md5x, sha1x, sha256x};

/// The instruction set the kernels run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// Sixteen lanes (AVX-512F and BW).
    Avx512,
    /// Eight lanes (AVX2).
    Avx2,
    /// One stream at a time, with the RustCrypto compressors.
    Scalar,
}

impl Engine {
    /// The widest engine this CPU runs, detected once.
    pub fn detect() -> Engine {
        static ENGINE: OnceLock<Engine> = OnceLock::new();
        *ENGINE.get_or_init(|| Engine::available()[0])
    }

    /// Every engine this CPU runs, widest first; [`Engine::Scalar`] always.
    pub fn available() -> Vec<Engine> {
        let mut out = Vec::with_capacity(3);
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
            {
                out.push(Engine::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                out.push(Engine::Avx2);
            }
        }
        out.push(Engine::Scalar);
        out
    }

    /// Streams hashed side by side.
    pub fn lanes(self) -> usize {
        match self {
            Engine::Avx512 => 16,
            Engine::Avx2 => 8,
            Engine::Scalar => 1,
        }
    }
}

/// One stream's share of a multi-buffer pass: whole 64-byte blocks to compress, in
/// order, into its state.
pub struct Job<'a, const W: usize> {
    state: &'a mut [u32; W],
    head: Option<&'a [u8; 64]>,
    blocks: &'a [[u8; 64]],
}

impl<'a, const W: usize> Job<'a, W> {
    /// Compresses `head` (a block completed from the stream's buffer), then `blocks`,
    /// into `state`.
    pub fn new(
        state: &'a mut [u32; W],
        head: Option<&'a [u8; 64]>,
        blocks: &'a [[u8; 64]],
    ) -> Job<'a, W> {
        Job {
            state,
            head,
            blocks,
        }
    }

    /// The job's blocks in order, the head first.
    fn segments(&self) -> impl Iterator<Item = &'a [[u8; 64]]> {
        let head = self.head.map(std::slice::from_ref);
        head.into_iter()
            .chain(Some(self.blocks))
            .filter(|s| !s.is_empty())
    }
}

/// Compresses every job's blocks into its MD5 state (RFC 1321's compression function,
/// as `md5::block_api::compress`).
pub fn compress_md5(engine: Engine, jobs: &mut [Job<'_, 4>]) {
    match engine {
        #[cfg(target_arch = "x86_64")]
        Engine::Avx512 => schedule(16, 2, md5_avx512, compress_md5_one, jobs),
        #[cfg(target_arch = "x86_64")]
        Engine::Avx2 => schedule(8, 2, md5_avx2, compress_md5_one, jobs),
        _ => scalar(compress_md5_one, jobs),
    }
}

/// Compresses every job's blocks into its SHA-1 state (FIPS 180-4's compression
/// function, as `sha1::block_api::compress`).
pub fn compress_sha1(engine: Engine, jobs: &mut [Job<'_, 5>]) {
    match engine {
        #[cfg(target_arch = "x86_64")]
        Engine::Avx512 => schedule(16, 5, sha1_avx512, sha1::block_api::compress, jobs),
        #[cfg(target_arch = "x86_64")]
        Engine::Avx2 => schedule(8, 5, sha1_avx2, sha1::block_api::compress, jobs),
        _ => scalar(sha1::block_api::compress, jobs),
    }
}

/// Compresses every job's blocks into its SHA-256 state (FIPS 180-4's compression
/// function, as `sha2::block_api::compress256`): in lanes with AVX-512 only, where
/// they beat SHA-NI's one stream.
pub fn compress_sha256(engine: Engine, jobs: &mut [Job<'_, 8>]) {
    match engine {
        #[cfg(target_arch = "x86_64")]
        Engine::Avx512 => schedule(16, 8, sha256_avx512, sha2::block_api::compress256, jobs),
        // Eight lanes of AVX2 hash SHA-256 at 0.8x SHA-NI's one stream (lanes/*): not
        // worth it.
        _ => scalar(sha2::block_api::compress256, jobs),
    }
}

/// Compresses `blocks` into one MD5 state, as `md5::block_api::compress` does, but
/// faster where the CPU has AVX-512VL (one lane of [`super::vector::Avx512One`]: ~1.4x
/// here, `lanes/one-md5`).
pub fn compress_md5_one(state: &mut [u32; 4], blocks: &[[u8; 64]]) {
    #[cfg(target_arch = "x86_64")]
    if *AVX512VL.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
    }) {
        let mut rows = [Row([0; MAX_LANES]); 4];
        for (row, word) in rows.iter_mut().zip(state.iter()) {
            row.0[0] = *word;
        }
        let mut ptrs = [IDLE.as_ptr(); MAX_LANES];
        ptrs[0] = blocks.as_ptr().cast();
        let mut steps = [0; MAX_LANES];
        steps[0] = 64;
        // SAFETY: the CPU has AVX-512F and VL; lane 0 reads `blocks`, the only lane.
        unsafe { md5_avx512_one(&mut rows, &mut ptrs, &steps, blocks.len()) };
        for (word, row) in state.iter_mut().zip(&rows) {
            *word = row.0[0];
        }
        return;
    }
    md5::block_api::compress(state, blocks)
}

/// Whether the CPU has AVX-512F and VL, detected once.
#[cfg(target_arch = "x86_64")]
static AVX512VL: OnceLock<bool> = OnceLock::new();

/// A one-stream compression function.
type Scalar<const W: usize> = fn(&mut [u32; W], &[[u8; 64]]);

/// A vector kernel: compresses `blocks` blocks into each lane's state, the states
/// transposed into rows (word `w` of lane `l` at `rows[w].0[l]`).
///
/// # Safety
/// As for [`md5x::compress`]; the caller checked the CPU for the kernel's engine.
type Kernel<const W: usize> =
    unsafe fn(&mut [Row; W], &mut [*const u8; MAX_LANES], &[usize; MAX_LANES], usize);

fn scalar<const W: usize>(compress: Scalar<W>, jobs: &mut [Job<'_, W>]) {
    for job in jobs {
        for segment in job.segments() {
            compress(job.state, segment);
        }
    }
}

/// A lane's place in its job.
#[derive(Clone, Copy)]
struct Slot {
    /// The job's index.
    job: usize,
    /// Its next block.
    ptr: *const u8,
    /// Blocks left in the current segment.
    left: usize,
    /// Whether the current segment is the head (the body follows).
    in_head: bool,
}

/// A readable block for idle lanes to chew on.
static IDLE: [u8; 64] = [0; 64];

/// Runs `kernel` over `lanes` lanes until every job is done, refilling a lane from the
/// next job as soon as its stream runs out; once fewer than `min_active` streams are
/// left, they are finished with `scalar`. `min_active` is where the vector pass stops
/// paying (`lanes/*`: a lane of AVX-512 hashes MD5 at ~0.7x, SHA-1 at ~0.25x and
/// SHA-256 at ~0.14x one stream's speed on its own; 2, 5 and 8 lanes beat it).
fn schedule<const W: usize>(
    lanes: usize,
    min_active: usize,
    kernel: Kernel<W>,
    scalar: Scalar<W>,
    jobs: &mut [Job<'_, W>],
) {
    let first_segment = |index: usize, job: &Job<'_, W>| -> Option<Slot> {
        match job.head {
            Some(head) => Some(Slot {
                job: index,
                ptr: head.as_ptr(),
                left: 1,
                in_head: true,
            }),
            None => (!job.blocks.is_empty()).then(|| Slot {
                job: index,
                ptr: job.blocks.as_ptr().cast(),
                left: job.blocks.len(),
                in_head: false,
            }),
        }
    };
    let mut slots: [Option<Slot>; MAX_LANES] = [None; MAX_LANES];
    let mut next = 0;
    loop {
        for slot in slots.iter_mut().take(lanes).filter(|s| s.is_none()) {
            while next < jobs.len() {
                let index = next;
                next += 1;
                *slot = first_segment(index, &jobs[index]);
                if slot.is_some() {
                    break;
                }
            }
        }
        let active = slots.iter().flatten().count();
        if active == 0 {
            return;
        }
        if active < min_active && next == jobs.len() {
            // Too few streams to fill a vector: finish them one at a time.
            for slot in slots.iter().flatten() {
                let job = &mut jobs[slot.job];
                // SAFETY: `ptr` points into the job's head or body, `left` blocks of it.
                let rest = unsafe { std::slice::from_raw_parts(slot.ptr.cast(), slot.left) };
                scalar(job.state, rest);
                if slot.in_head {
                    scalar(job.state, job.blocks);
                }
            }
            return;
        }
        let blocks = slots.iter().flatten().map(|s| s.left).min().unwrap_or(0);
        let mut rows = [Row([0; MAX_LANES]); W];
        let mut ptrs = [IDLE.as_ptr(); MAX_LANES];
        let mut steps = [0; MAX_LANES];
        for (lane, slot) in slots.iter().enumerate() {
            if let Some(slot) = slot {
                for (row, word) in rows.iter_mut().zip(jobs[slot.job].state.iter()) {
                    row.0[lane] = *word;
                }
                ptrs[lane] = slot.ptr;
                steps[lane] = 64;
            }
        }
        // SAFETY: `schedule` is only called with the kernel of an engine the CPU has
        // (`Engine::available`); every active lane has `blocks` blocks at its pointer and
        // idle lanes read `IDLE` without advancing.
        unsafe { kernel(&mut rows, &mut ptrs, &steps, blocks) };
        for (lane, entry) in slots.iter_mut().enumerate() {
            let Some(slot) = entry else { continue };
            let job = &mut jobs[slot.job];
            for (word, row) in job.state.iter_mut().zip(&rows) {
                *word = row.0[lane];
            }
            slot.left -= blocks;
            slot.ptr = ptrs[lane];
            if slot.left == 0 {
                *entry = if slot.in_head && !job.blocks.is_empty() {
                    Some(Slot {
                        job: slot.job,
                        ptr: job.blocks.as_ptr().cast(),
                        left: job.blocks.len(),
                        in_head: false,
                    })
                } else {
                    None
                };
            }
        }
    }
}

/// Instantiates a generic kernel for one engine, loading and storing the rows around it.
macro_rules! kernel {
    ($name:ident, $vector:ty, $features:literal, $compress:path, $words:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name(
            rows: &mut [Row; $words],
            ptrs: &mut [*const u8; MAX_LANES],
            steps: &[usize; MAX_LANES],
            blocks: usize,
        ) {
            let mut state: [$vector; $words] = [<$vector>::splat(0); $words];
            for (v, row) in state.iter_mut().zip(rows.iter()) {
                *v = <$vector>::load(row);
            }
            $compress(&mut state, ptrs, steps, blocks);
            for (v, row) in state.iter().zip(rows.iter_mut()) {
                v.store(row);
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
use super::vector::{Avx2, Avx512, Avx512One};

kernel!(md5_avx2, Avx2, "avx2", md5x::compress::<Avx2>, 4);
kernel!(
    md5_avx512,
    Avx512,
    "avx512f,avx512bw",
    md5x::compress::<Avx512>,
    4
);
kernel!(
    md5_avx512_one,
    Avx512One,
    "avx512f,avx512vl",
    md5x::compress::<Avx512One>,
    4
);
kernel!(sha1_avx2, Avx2, "avx2", sha1x::compress::<Avx2>, 5);
kernel!(
    sha1_avx512,
    Avx512,
    "avx512f,avx512bw",
    sha1x::compress::<Avx512>,
    5
);
kernel!(
    sha256_avx512,
    Avx512,
    "avx512f",
    sha256x::compress::<Avx512>,
    8
);
