//! Multi-buffer hashing against the RustCrypto crates: the input is cut into up to 20
//! streams, each fed in chunks through `ObjectHasher::update_many` on every engine the
//! CPU has, a random subset of the streams per pass; every digest must equal the crates'.
#![no_main]

use hashgate_host::hashing::lanes::Engine;
use hashgate_host::hashing::ObjectHasher;
use hashgate_host::{Algorithm, Digest};
use libfuzzer_sys::fuzz_target;
use sha2::Digest as _;

fn reference(data: &[u8]) -> Vec<Digest> {
    let d = |algorithm, bytes: &[u8]| Digest {
        algorithm,
        bytes: bytes.to_vec(),
    };
    vec![
        d(Algorithm::Md5, &md5::Md5::digest(data)),
        d(Algorithm::Sha1, &sha1::Sha1::digest(data)),
        d(Algorithm::Sha256, &sha2::Sha256::digest(data)),
    ]
}

fuzz_target!(|input: &[u8]| {
    let Some((&shape, data)) = input.split_first() else {
        return;
    };
    let streams = usize::from(shape % 20) + 1;
    // Stream i takes every streams-th byte window of 97 bytes, so lengths differ.
    let mut parts: Vec<Vec<u8>> = vec![Vec::new(); streams];
    for (i, window) in data.chunks(97).enumerate() {
        parts[(i * 7 + usize::from(shape)) % streams].extend_from_slice(window);
    }
    for engine in Engine::available() {
        let mut hashers: Vec<ObjectHasher> =
            (0..streams).map(|_| ObjectHasher::new(&Algorithm::ALL)).collect();
        let mut at = vec![0usize; streams];
        let mut pass = 0usize;
        while at.iter().zip(&parts).any(|(a, p)| *a < p.len()) {
            let mut batch: Vec<(&mut ObjectHasher, &[u8])> = Vec::new();
            for (i, h) in hashers.iter_mut().enumerate() {
                if (i + pass) % 4 == 3 {
                    continue;
                }
                let cut = 1 + (i * 131 + pass * 61 + usize::from(shape)) % 700;
                let end = (at[i] + cut).min(parts[i].len());
                batch.push((h, &parts[i][at[i]..end]));
                at[i] = end;
            }
            ObjectHasher::update_many_on(engine, &mut batch);
            pass += 1;
        }
        for (h, p) in hashers.into_iter().zip(&parts) {
            assert_eq!(h.finish(), reference(p), "{engine:?}");
        }
    }
});
