//! The whole pipeline: the first byte picks an envelope (codings, a multipart body),
//! the rest is the body; containers are found by their magic bytes as in production.
#![no_main]

#[path = "walk.rs"]
mod walk;

use hashgate_host::inspect::{Coding, Envelope};
use libfuzzer_sys::fuzz_target;
use walk::walk;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let all = [
        Coding::Gzip,
        Coding::Deflate,
        Coding::Brotli,
        Coding::Zstd,
        Coding::Base64,
        Coding::QuotedPrintable,
    ];
    let mut envelope = Envelope::default();
    if pick & 0x80 != 0 {
        envelope.boundary = Some("b".into());
    }
    if pick & 0x40 != 0 {
        envelope.codings.push(all[usize::from(pick & 0x07) % all.len()]);
    }
    walk(body, &envelope);
});
