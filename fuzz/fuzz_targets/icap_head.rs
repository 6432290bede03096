//! The ICAP request head parser, and a whole request read as a connection reads it
//! (head, encapsulated heads, chunked body with extensions and trailers): any bytes give
//! an answer or an error, never a panic, a hang or unbounded memory.
#![no_main]

use hashgate_host::icap::fuzzing::{parse_head, read_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_head(data);
    if let Ok(n) = read_request(data) {
        // A body is never longer than the bytes it came in.
        assert!(n <= data.len());
    }
});
