//! The multipart splitter (our own): any bytes as a `multipart/*` body with a fixed
//! boundary, parts recursed into as the pipeline does.
#![no_main]

#[path = "walk.rs"]
mod walk;

use hashgate_host::inspect::Envelope;
use libfuzzer_sys::fuzz_target;
use walk::walk;

fuzz_target!(|data: &[u8]| {
    let envelope = Envelope {
        codings: Vec::new(),
        boundary: Some("b0undary".into()),
    };
    walk(data, &envelope);
});
