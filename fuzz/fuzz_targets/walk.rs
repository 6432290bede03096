//! What the inspection fuzz targets share: small limits and the walk's invariants.

use std::io::Cursor;

use hashgate_host::inspect::{inspect_reader, Envelope, Hashes, Limits};
use hashgate_host::Algorithm;

/// Small limits, so that a slow input is a finding, not a timeout of the fuzzer's own.
fn limits() -> Limits {
    Limits {
        decoded_floor: 4 << 20,
        decoded_cap: 4 << 20,
        max_entries: 100,
        spool_dir: Some(std::env::temp_dir()),
        ..Limits::default()
    }
}

/// The walk over `data` under `envelope` must end without a panic, and its report must
/// hold the root, hashed over exactly `data`. Pictures are PDQ-hashed, as with a filter
/// that holds PDQ hashes, so every decoder `image` has is fuzzed too.
pub fn walk(data: &[u8], envelope: &Envelope) {
    let hashes = Hashes {
        algorithms: &[Algorithm::Md5],
        pictures: true,
    };
    let report = inspect_reader(
        &mut Cursor::new(data),
        envelope,
        hashes,
        &limits(),
        Some(data.len() as u64),
    )
    .expect("reading from memory cannot fail");
    let root = report.root().expect("the root is always a node");
    assert_eq!(root.size, data.len() as u64);
}
