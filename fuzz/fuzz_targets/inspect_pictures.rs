//! Picture decoding through the pipeline: the first byte picks a picture format whose
//! magic bytes are put before the rest, so every input reaches a decoder of `image` under
//! the pipeline's limits; the walk must end without a panic, in bounded memory (the
//! fuzzer's `-rss_limit_mb`), whatever the pixels announce.
#![no_main]

#[path = "walk.rs"]
mod walk;

use hashgate_host::inspect::Envelope;
use libfuzzer_sys::fuzz_target;
use walk::walk;

const MAGIC: [&[u8]; 7] = [
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"RIFF\0\0\0\0WEBP",
    b"GIF89a",
    b"BM",
    b"II*\0",
    b"MM\0*",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let mut input = MAGIC[pick as usize % MAGIC.len()].to_vec();
    input.extend_from_slice(rest);
    walk(&input, &Envelope::default());
});
