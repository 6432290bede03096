//! The hashers against the RustCrypto crates, bit for bit, on every engine this CPU has.

use proptest::prelude::*;
use sha2::Digest as _;

use super::lanes::{self, Engine, Job};
use super::*;

const ALL: [Algorithm; 3] = [Algorithm::Md5, Algorithm::Sha1, Algorithm::Sha256];

/// The three digests as the RustCrypto crates compute them.
fn reference(data: &[u8]) -> Vec<Digest> {
    vec![
        digest(Algorithm::Md5, md5::Md5::digest(data)),
        digest(Algorithm::Sha1, sha1::Sha1::digest(data)),
        digest(Algorithm::Sha256, sha2::Sha256::digest(data)),
    ]
}

/// Deterministic bytes of a seed.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn known_answers() {
    // RFC 1321 appendix A.5 and FIPS 180-1 appendix A.
    let mut h = ObjectHasher::new(&ALL);
    h.update(b"abc");
    let d = h.finish();
    assert_eq!(hex::encode(&d[0].bytes), "900150983cd24fb0d6963f7d28e17f72");
    assert_eq!(
        hex::encode(&d[1].bytes),
        "a9993e364706816aba3e25717850c26c9cd0d89d"
    );
    let d = ObjectHasher::new(&ALL).finish();
    assert_eq!(hex::encode(&d[0].bytes), "d41d8cd98f00b204e9800998ecf8427e");
}

#[test]
fn padding_at_every_boundary() {
    for len in 0..200 {
        let data = bytes(len as u64, len);
        let mut h = ObjectHasher::new(&ALL);
        h.update(&data);
        assert_eq!(h.finish(), reference(&data), "length {len}");
    }
}

/// Compresses `data` (after `heads`) into streams from `init` with `ours` on `engine`,
/// and checks every state against `theirs`, one stream at a time.
fn check_lanes<const W: usize>(
    engine: Engine,
    name: &str,
    init: [u32; W],
    ours: fn(Engine, &mut [Job<'_, W>]),
    theirs: fn(&mut [u32; W], &[[u8; 64]]),
    heads: &[Option<[u8; 64]>],
    data: &[Vec<[u8; 64]>],
) {
    let mut states = vec![init; data.len()];
    let mut jobs: Vec<Job<'_, W>> = states
        .iter_mut()
        .zip(heads)
        .zip(data)
        .map(|((s, h), d)| Job::new(s, h.as_ref(), d))
        .collect();
    ours(engine, &mut jobs);
    for (i, state) in states.iter().enumerate() {
        let mut expected = init;
        if let Some(h) = &heads[i] {
            theirs(&mut expected, &[*h]);
        }
        theirs(&mut expected, &data[i]);
        assert_eq!(
            *state,
            expected,
            "{engine:?}, {} streams, {name} of {i}",
            data.len()
        );
    }
}

#[test]
fn every_engine_compresses_like_the_crates() {
    // More streams than the widest vector has lanes, of uneven lengths, some empty,
    // some with a head block: lanes refill and the scalar tail finishes the last.
    for engine in Engine::available() {
        for streams in [1, 2, 3, 7, 8, 9, 16, 17, 40] {
            let data: Vec<Vec<[u8; 64]>> = (0..streams)
                .map(|i| {
                    let blocks = bytes(i as u64 + 100, (i * 7 % 13) * 64);
                    blocks.as_chunks::<64>().0.to_vec()
                })
                .collect();
            let heads: Vec<Option<[u8; 64]>> = (0..streams)
                .map(|i| (i % 3 == 0).then_some([i as u8; 64]))
                .collect();
            let md5 = md5::block_api::compress;
            check_lanes(
                engine,
                "MD5",
                MD5_INIT,
                lanes::compress_md5,
                md5,
                &heads,
                &data,
            );
            let sha1 = sha1::block_api::compress;
            check_lanes(
                engine,
                "SHA-1",
                SHA1_INIT,
                lanes::compress_sha1,
                sha1,
                &heads,
                &data,
            );
            let sha256 = sha2::block_api::compress256;
            check_lanes(
                engine,
                "SHA-256",
                SHA256_INIT,
                lanes::compress_sha256,
                sha256,
                &heads,
                &data,
            );
        }
    }
}

#[test]
fn one_stream_md5_compresses_like_the_crate() {
    for blocks in [0, 1, 2, 17] {
        let data = bytes(blocks as u64, blocks * 64);
        let (mut ours, mut theirs) = (MD5_INIT, MD5_INIT);
        lanes::compress_md5_one(&mut ours, data.as_chunks::<64>().0);
        md5::block_api::compress(&mut theirs, data.as_chunks::<64>().0);
        assert_eq!(ours, theirs, "{blocks} blocks");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Streams of random lengths, fed in random chunks, a random few at a time through
    /// `update_many`, give the crates' digests on every engine.
    #[test]
    fn many_streams_in_random_chunks(
        lengths in prop::collection::vec(0usize..5000, 1..24),
        cuts in prop::collection::vec(1usize..700, 1..40),
        seed in any::<u64>(),
    ) {
        let data: Vec<Vec<u8>> = lengths
            .iter()
            .enumerate()
            .map(|(i, &n)| bytes(seed ^ i as u64, n))
            .collect();
        for engine in Engine::available() {
            let mut hashers: Vec<ObjectHasher> =
                data.iter().map(|_| ObjectHasher::new(&ALL)).collect();
            let mut offsets = vec![0usize; data.len()];
            let mut round = 0;
            while offsets.iter().zip(&data).any(|(o, d)| o < &d.len()) {
                let mut batch: Vec<(&mut ObjectHasher, &[u8])> = Vec::new();
                for (i, h) in hashers.iter_mut().enumerate() {
                    // Not every stream in every pass.
                    if (i + round) % 3 == 2 {
                        continue;
                    }
                    let cut = cuts[(i + round) % cuts.len()];
                    let end = (offsets[i] + cut).min(data[i].len());
                    batch.push((h, &data[i][offsets[i]..end]));
                    offsets[i] = end;
                }
                ObjectHasher::update_many_on(engine, &mut batch);
                round += 1;
            }
            for (h, d) in hashers.into_iter().zip(&data) {
                prop_assert_eq!(h.finish(), reference(d), "{:?}", engine);
            }
        }
    }

    /// One stream fed in random chunks through `update` gives the crates' digests.
    #[test]
    fn one_stream_in_random_chunks(
        len in 0usize..20_000,
        cuts in prop::collection::vec(0usize..300, 1..20),
        seed in any::<u64>(),
    ) {
        let data = bytes(seed, len);
        let mut h = ObjectHasher::new(&ALL);
        let (mut at, mut i) = (0, 0);
        while at < data.len() {
            let end = (at + cuts[i % cuts.len()]).min(data.len());
            h.update(&data[at..end]);
            at = end;
            i += 1;
        }
        prop_assert_eq!(h.finish(), reference(&data));
    }
}
