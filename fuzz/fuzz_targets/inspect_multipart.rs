//! The multipart splitter (our own): any bytes as a `multipart/*` body with a fixed
//! boundary, parts recursed into as the pipeline does.
#![no_main]

use std::io::Cursor;

use hashgate_host::inspect::{inspect_reader, Envelope, Limits};
use hashgate_host::Algorithm;
use libfuzzer_sys::fuzz_target;

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
/// hold the root, hashed over exactly `data`.
fn walk(data: &[u8], envelope: &Envelope) {
    let report = inspect_reader(
        &mut Cursor::new(data),
        envelope,
        &[Algorithm::Md5],
        &limits(),
        Some(data.len() as u64),
    )
    .expect("reading from memory cannot fail");
    let root = report.root().expect("the root is always a node");
    assert_eq!(root.size, data.len() as u64);
}

fuzz_target!(|data: &[u8]| {
    let envelope = Envelope {
        codings: Vec::new(),
        boundary: Some("b0undary".into()),
    };
    walk(data, &envelope);
});
