//! The base64 decoder (our own), as a MIME part's transfer encoding.
#![no_main]

#[path = "walk.rs"]
mod walk;

use hashgate_host::inspect::{Coding, Envelope};
use libfuzzer_sys::fuzz_target;
use walk::walk;

fuzz_target!(|data: &[u8]| {
    let envelope = Envelope {
        codings: vec![Coding::Base64],
        boundary: None,
    };
    walk(data, &envelope);
});
