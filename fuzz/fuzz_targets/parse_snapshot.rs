//! Snapshot parsing must never panic, whatever the bytes; what parses must answer checks
//! without panicking too. Each input is tried as is, and again with its payload SHA-256
//! recomputed, so that mutations behind the digest check (section records, bitmaps) are
//! explored too.
#![no_main]

use hashgate_guest::{Algorithm, Filter};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fn exercise(bytes: Vec<u8>) {
    if let Ok(filter) = Filter::parse(bytes) {
        for algorithm in Algorithm::ALL {
            let digest = vec![0xa5u8; algorithm.digest_len()];
            let _ = filter.check(&[(algorithm, &digest)]);
        }
        for section in filter.sections() {
            let _ = filter.fill(section);
        }
        // Format v2: PDQ sections answer too (near and far queries).
        let _ = filter.check_pdq(&[[0xa5u8; 32], [0u8; 32]]);
    }
}

fuzz_target!(|data: &[u8]| {
    exercise(data.to_vec());
    if data.len() >= 176 {
        let sections = u16::from_le_bytes([data[10], data[11]]) as usize;
        let start = 176 + 48 * sections;
        if start <= data.len() {
            let mut fixed = data.to_vec();
            let digest = Sha256::digest(&data[start..]);
            fixed[144..176].copy_from_slice(&digest);
            exercise(fixed);
        }
    }
});
