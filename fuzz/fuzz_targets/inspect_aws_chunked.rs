//! The aws-chunked decoder (our own): fed any bytes in any split, it must end in an
//! error or in a payload no longer than its input.
#![no_main]

use bytes::Bytes;
use hashgate_host::inspect::AwsChunkedDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, body)) = data.split_first() else {
        return;
    };
    let piece = usize::from(split).max(1);
    let mut decoder = AwsChunkedDecoder::default();
    let mut decoded = 0;
    for chunk in body.chunks(piece) {
        match decoder.push(&Bytes::copy_from_slice(chunk)) {
            Ok(pieces) => decoded += pieces.iter().map(Bytes::len).sum::<usize>(),
            Err(_) => return,
        }
    }
    let _ = decoder.finish();
    assert!(decoded <= body.len());
});
