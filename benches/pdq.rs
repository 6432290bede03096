//! Criterion benches for perceptual matching (docs/PERFORMANCE.md), each against a
//! baseline measured in the same run:
//!
//! * `pdq-lookup/*`: one picture's hash against a PDQ section of
//!   `HASHGATE_BENCH_PDQ_N` listed hashes (default 1,000,000), by the guest's
//!   multi-index (`index-miss`: an unrelated picture, `index-hit`: 20 bits from a listed
//!   one; `engine-miss`: the same miss through the guest component on wasmtime, the
//!   production path) against comparing it with every listed hash (`brute-force`);
//! * `pdq-hash/*`: a 1,600 x 1,004 JPEG decoded (`decode`, the baseline) against decoded
//!   and hashed (`decode+pdq`), and with the seven turned and mirrored hashes too
//!   (`decode+pdq-dihedral`); and `pdq-1mp`: PDQ alone of 1,000 x 1,000 decoded RGB
//!   pixels, which `benches/pdq_cpp.sh` compares with Meta's C++ on the same size.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use hashgate_guest::{BuildParams, Filter, FilterBuilder, PdqSpec};
use hashgate_host::perceptual::{decode, hash_picture, pdq, Luma, PdqHash, Picture, PictureLimits};
use hashgate_host::{FilterEngine, Limits, Runtime};
use rand::{RngCore, SeedableRng};

fn listed() -> usize {
    std::env::var("HASHGATE_BENCH_PDQ_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn random_hashes(n: usize, seed: u64) -> Vec<[u8; 32]> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let mut h = [0u8; 32];
            rng.fill_bytes(&mut h);
            h
        })
        .collect()
}

fn lookup(c: &mut Criterion) {
    let hashes = random_hashes(listed(), 1);
    let params = BuildParams::new("bench-pdq", 1, 1_700_000_000, 4_000_000_000, 1e-9);
    let spec = PdqSpec {
        category: None,
        entries: hashes.len() as u64,
    };
    let mut builder = FilterBuilder::with_pdq(&params, &[], &[spec], Vec::new()).unwrap();
    for h in &hashes {
        builder.insert_pdq(None, h).unwrap();
    }
    let snapshot = builder.finish().unwrap();
    // The production path: the guest component on wasmtime, as the host runs it.
    let loading = std::time::Instant::now();
    let runtime = Arc::new(Runtime::new(Limits::default()).unwrap());
    let engine = FilterEngine::from_verified(runtime, snapshot.clone()).unwrap();
    eprintln!(
        "pdq-lookup: loaded into the guest component in {:.2} s",
        loading.elapsed().as_secs_f64()
    );
    let loading = std::time::Instant::now();
    let filter = Filter::parse(snapshot).unwrap();
    let loaded = loading.elapsed();
    let section = &filter.pdq_sections()[0];
    // Memory is a figure of the issue too; criterion has no column for it.
    eprintln!(
        "pdq-lookup: {} listed, loaded and indexed in {:.2} s, index {:.1} bytes per hash, \
         slots {:.1} bytes per hash",
        section.entries,
        loaded.as_secs_f64(),
        section.index_bytes() as f64 / section.entries as f64,
        (section.slots * 32) as f64 / section.entries as f64,
    );
    let miss = random_hashes(1, 2)[0];
    let mut hit = hashes[hashes.len() / 2];
    // 20 bits away: one bit in each of the first 20 bytes.
    for byte in hit.iter_mut().take(20) {
        *byte ^= 1;
    }
    let mut group = c.benchmark_group("pdq-lookup");
    group.bench_function("index-miss", |b| {
        b.iter(|| filter.check_pdq(black_box(&[miss])).unwrap())
    });
    group.bench_function("index-hit", |b| {
        b.iter(|| {
            let found = filter.check_pdq(black_box(&[hit])).unwrap();
            assert_eq!(found.len(), 1);
            found
        })
    });
    group.bench_function("engine-miss", |b| {
        b.iter(|| engine.check_pdq(black_box(&[PdqHash(miss)])).unwrap())
    });
    group.sample_size(10);
    group.bench_function("brute-force", |b| {
        b.iter(|| {
            hashes
                .iter()
                .filter(|h| hashgate_guest::pdq::distance(&h[..], black_box(&miss)) <= 31)
                .count()
        })
    });
    group.finish();
}

fn hashing(c: &mut Criterion) {
    let jpeg = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/pdq/bridge-mods/aaa-orig.jpg"
    ))
    .unwrap();
    let limits = PictureLimits::default();
    let mut group = c.benchmark_group("pdq-hash");
    group.sample_size(20);
    group.bench_function("decode", |b| {
        b.iter(|| decode(black_box(&jpeg), Picture::Jpeg, &limits).unwrap())
    });
    group.bench_function("decode+pdq", |b| {
        b.iter(|| hash_picture(black_box(&jpeg), Picture::Jpeg, &limits, false).unwrap())
    });
    group.bench_function("decode+pdq-dihedral", |b| {
        b.iter(|| hash_picture(black_box(&jpeg), Picture::Jpeg, &limits, true).unwrap())
    });
    // What the C++ reference's `compute` is given: RGB pixels, here 1,000 x 1,000.
    let bridge = image::load_from_memory(&jpeg).unwrap().resize_exact(
        1000,
        1000,
        image::imageops::FilterType::Triangle,
    );
    let rgb = bridge.to_rgb8().into_raw();
    group.bench_function("pdq-1mp", |b| {
        b.iter(|| pdq::hash(Luma::from_rgb8(black_box(&rgb), 1000, 1000)))
    });
    group.finish();
}

criterion_group!(benches, lookup, hashing);
criterion_main!(benches);
