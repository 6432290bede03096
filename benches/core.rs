//! Criterion benches for the core figures (docs/PERFORMANCE.md):
//!
//! * `hashing/*`: the host's hashing path for a SHA-256-only filter against raw `sha2`
//!   on the same 1 MiB buffers, measured in the same run (the ratio is the figure);
//! * `verdict/*`: one object's digests checked by the wasm guest (excluding hashing),
//!   for a miss and a hit, against a filter of `HASHGATE_BENCH_ENTRIES` entries
//!   (default 1,000,000; the docs quote 10,000,000);
//! * `build/*`: inserting digests natively;
//! * `lanes/*`: 16 streams of 64 KiB, one stream after another with the RustCrypto
//!   crates (`crate-*`) against all sixteen at once in SIMD lanes (`avx2-*`,
//!   `avx512-*`), on one core: the ratio of throughputs is issue 21's figure; `one-md5`
//!   is our one-stream MD5; `mixed` all three algorithms of the sixteen through
//!   `ObjectHasher::update_many`, the multi-buffer limit `benches/core.sh` compares
//!   `scan` with.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hashgate_guest::{Algorithm, BuildParams, FilterBuilder, SectionSpec};
use hashgate_host::hashing::lanes::{self, Engine, Job};
use hashgate_host::hashing::ObjectHasher;
use hashgate_host::{Digest, FilterEngine, Limits, Runtime};
use rand::{RngCore, SeedableRng};
use sha2::Digest as _;

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

fn hashing(c: &mut Criterion) {
    let buf = random_bytes(1 << 20, 1);
    let mut group = c.benchmark_group("hashing");
    group.throughput(Throughput::Bytes(buf.len() as u64));
    group.bench_function("raw-sha2-sha256", |b| {
        b.iter(|| black_box(sha2::Sha256::digest(black_box(&buf))))
    });
    group.bench_function("host-sha256-only", |b| {
        b.iter(|| {
            let mut h = ObjectHasher::new(&[hashgate_host::Algorithm::Sha256]);
            h.update(black_box(&buf));
            black_box(h.finish())
        })
    });
    group.bench_function("host-md5-sha1-sha256", |b| {
        b.iter(|| {
            let mut h = ObjectHasher::new(&hashgate_host::Algorithm::ALL);
            h.update(black_box(&buf));
            black_box(h.finish())
        })
    });
    group.finish();
}

fn lanes(c: &mut Criterion) {
    const STREAMS: usize = 16;
    let data: Vec<Vec<u8>> = (0..STREAMS)
        .map(|i| random_bytes(64 << 10, i as u64))
        .collect();
    let blocks: Vec<&[[u8; 64]]> = data.iter().map(|d| d.as_chunks::<64>().0).collect();
    let mut group = c.benchmark_group("lanes");
    group.throughput(Throughput::Bytes((STREAMS << 16) as u64));
    group.bench_function("crate-md5", |b| {
        b.iter(|| {
            for d in &data {
                black_box(md5::Md5::digest(black_box(d)));
            }
        })
    });
    group.bench_function("crate-sha1", |b| {
        b.iter(|| {
            for d in &data {
                black_box(sha1::Sha1::digest(black_box(d)));
            }
        })
    });
    group.bench_function("one-md5", |b| {
        b.iter(|| {
            for blocks in &blocks {
                let mut state = [0x67452301u32, 0xefcdab89, 0x98badcfe, 0x10325476];
                lanes::compress_md5_one(&mut state, black_box(blocks));
                black_box(state);
            }
        })
    });
    group.bench_function("crate-sha256", |b| {
        b.iter(|| {
            for d in &data {
                black_box(sha2::Sha256::digest(black_box(d)));
            }
        })
    });
    // All three algorithms of 16 objects in one pass, as `scan` hashes a tree and the
    // gateway a crowd of uploads: the multi-buffer limit of one core (benches/core.sh).
    group.bench_function("mixed", |b| {
        b.iter(|| {
            let mut hashers: Vec<ObjectHasher> = (0..STREAMS)
                .map(|_| ObjectHasher::new(&hashgate_host::Algorithm::ALL))
                .collect();
            let mut batch: Vec<(&mut ObjectHasher, &[u8])> = hashers
                .iter_mut()
                .zip(&data)
                .map(|(h, d)| (h, d.as_slice()))
                .collect();
            ObjectHasher::update_many(black_box(&mut batch));
            hashers
                .into_iter()
                .map(ObjectHasher::finish)
                .collect::<Vec<_>>()
        })
    });
    for engine in Engine::available() {
        let name = match engine {
            Engine::Avx512 => "avx512",
            Engine::Avx2 => "avx2",
            Engine::Scalar => continue,
        };
        // Any state does for timing; the initial states are the algorithms' own.
        let md5 = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];
        bench_lanes(
            &mut group,
            &format!("{name}-md5"),
            engine,
            md5,
            lanes::compress_md5,
            &blocks,
        );
        let sha1 = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0];
        bench_lanes(
            &mut group,
            &format!("{name}-sha1"),
            engine,
            sha1,
            lanes::compress_sha1,
            &blocks,
        );
        let sha256 = [
            0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
            0x5be0cd19,
        ];
        let sha256_lanes = lanes::compress_sha256;
        bench_lanes(
            &mut group,
            &format!("{name}-sha256"),
            engine,
            sha256,
            sha256_lanes,
            &blocks,
        );
    }
    group.finish();
}

/// One multi-buffer kernel over every stream's blocks, from `init`.
fn bench_lanes<const W: usize>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    engine: Engine,
    init: [u32; W],
    compress: fn(Engine, &mut [Job<'_, W>]),
    blocks: &[&[[u8; 64]]],
) {
    group.bench_function(name, |b| {
        b.iter(|| {
            let mut states = vec![init; blocks.len()];
            let mut jobs: Vec<Job<'_, W>> = states
                .iter_mut()
                .zip(blocks)
                .map(|(s, b)| Job::new(s, None, b))
                .collect();
            compress(engine, black_box(&mut jobs));
            black_box(states)
        })
    });
}

fn entries() -> usize {
    std::env::var("HASHGATE_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn build_filter(n: usize, p: f64) -> (Vec<u8>, Vec<u8>) {
    let params = BuildParams::new("bench", 1, 1, u64::MAX / 2, p);
    let spec = SectionSpec {
        algorithm: Algorithm::Sha256,
        category: None,
        entries: n as u64,
    };
    let mut builder = FilterBuilder::new(&params, &[spec]).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut digest = [0u8; 32];
    let mut member = Vec::new();
    for i in 0..n {
        rng.fill_bytes(&mut digest);
        if i == 0 {
            member = digest.to_vec();
        }
        builder.insert(Algorithm::Sha256, None, &digest).unwrap();
    }
    (builder.finish().unwrap(), member)
}

fn verdict(c: &mut Criterion) {
    let n = entries();
    let (body, member) = build_filter(n, 1e-9);
    let runtime = Arc::new(Runtime::new(Limits::default()).unwrap());
    let engine = FilterEngine::from_verified(runtime, body).unwrap();
    let digest = |bytes: Vec<u8>| {
        vec![Digest {
            algorithm: hashgate_host::Algorithm::Sha256,
            bytes,
        }]
    };
    let miss = digest(random_bytes(32, 99));
    let hit = digest(member);
    let mut group = c.benchmark_group("verdict");
    group.bench_with_input(BenchmarkId::new("miss", n), &miss, |b, d| {
        b.iter(|| black_box(engine.check(black_box(d), 4096).unwrap()))
    });
    group.bench_with_input(BenchmarkId::new("hit", n), &hit, |b, d| {
        b.iter(|| black_box(engine.check(black_box(d), 4096).unwrap()))
    });
    group.finish();
}

fn build(c: &mut Criterion) {
    let n = 100_000;
    let mut group = c.benchmark_group("build");
    group.throughput(Throughput::Elements(n as u64));
    group.sample_size(10);
    group.bench_function(BenchmarkId::new("sha256-1e-9", n), |b| {
        b.iter(|| black_box(build_filter(n, 1e-9)))
    });
    group.finish();
}

criterion_group!(benches, hashing, lanes, verdict, build);
criterion_main!(benches);
