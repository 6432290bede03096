//! Criterion benches for the inspection pipeline (docs/PERFORMANCE.md), each against a
//! baseline measured in the same run on the same bytes, on one core:
//!
//! * `inspect-tar-gz/*`: a `.tar.gz` of 1,000 members: `inflate+sha256` (flate2 on
//!   zlib-rs, then SHA-256 of the decoded bytes) against the pipeline (which also hashes
//!   the upload as sent, the tar stream and every member), with a SHA-256-only filter and
//!   with MD5 + SHA-1 + SHA-256;
//! * `inspect-zip/*`: a deflated zip of 1,000 members: inflating and SHA-256 of each
//!   member against the pipeline (which also spools and hashes the archive as sent).
//!
//! The archive holds `HASHGATE_BENCH_INSPECT_MB` MiB (default 256) of decoded data that
//! deflates about 2:1.

use std::hint::black_box;
use std::io::{Cursor, Read, Write};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hashgate_host::inspect::{inspect_reader, Envelope, Hashes, Limits};
use hashgate_host::Algorithm;
use rand::{RngCore, SeedableRng};
use sha2::Digest as _;

const MEMBERS: usize = 1000;

fn decoded_bytes() -> usize {
    std::env::var("HASHGATE_BENCH_INSPECT_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
        << 20
}

/// One member's bytes: 4 bits of entropy per byte, so deflate gets about 2:1.
fn member(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v.iter_mut().for_each(|b| *b = b'a' + (*b & 0x0f));
    v
}

fn tar_gz() -> Vec<u8> {
    let each = decoded_bytes() / MEMBERS;
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for i in 0..MEMBERS {
        let data = member(each, i as u64);
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, format!("dir/member-{i}"), &data[..])
            .unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

fn zip() -> Vec<u8> {
    let each = decoded_bytes() / MEMBERS;
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(1));
    for i in 0..MEMBERS {
        w.start_file(format!("dir/member-{i}"), options).unwrap();
        w.write_all(&member(each, i as u64)).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn pipeline(bytes: &[u8], algorithms: &[Algorithm]) -> usize {
    let report = inspect_reader(
        &mut Cursor::new(bytes),
        &Envelope::default(),
        Hashes::digests(algorithms),
        &Limits::default(),
        Some(bytes.len() as u64),
    )
    .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    report.nodes.len()
}

fn tar_gz_bench(c: &mut Criterion) {
    let archive = tar_gz();
    let mut group = c.benchmark_group("inspect-tar-gz");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(archive.len() as u64));
    group.bench_function("inflate+sha256", |b| {
        b.iter(|| {
            let mut d = flate2::read::MultiGzDecoder::new(&archive[..]);
            let mut h = sha2::Sha256::new();
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = d.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            black_box(h.finalize())
        })
    });
    group.bench_function("pipeline-sha256", |b| {
        b.iter(|| black_box(pipeline(&archive, &[Algorithm::Sha256])))
    });
    group.bench_function("pipeline-md5-sha1-sha256", |b| {
        b.iter(|| black_box(pipeline(&archive, &Algorithm::ALL)))
    });
    group.finish();
}

fn zip_bench(c: &mut Criterion) {
    let archive = zip();
    let mut group = c.benchmark_group("inspect-zip");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(archive.len() as u64));
    group.bench_function("inflate+sha256", |b| {
        b.iter(|| {
            let mut z = zip::ZipArchive::new(Cursor::new(&archive[..])).unwrap();
            let mut buf = vec![0u8; 256 * 1024];
            for i in 0..z.len() {
                let mut f = z.by_index(i).unwrap();
                let mut h = sha2::Sha256::new();
                loop {
                    let n = f.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                black_box(h.finalize());
            }
        })
    });
    group.bench_function("pipeline-sha256", |b| {
        b.iter(|| black_box(pipeline(&archive, &[Algorithm::Sha256])))
    });
    group.finish();
}

criterion_group!(benches, tar_gz_bench, zip_bench);
criterion_main!(benches);
