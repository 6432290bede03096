//! The `Encapsulated` header: an accepted value gives heads that tile the bytes from 0
//! to the body's offset.
#![no_main]

use hashgate_host::icap::fuzzing::parse_encapsulated;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((mut heads, body)) = parse_encapsulated(value) {
        // Contiguous from 0 to the body, in whichever order they were named.
        heads.sort_by_key(|h| h.start);
        let mut at = 0;
        for head in &heads {
            assert_eq!(head.start, at, "{value:?}");
            assert!(head.start <= head.end, "{value:?}");
            at = head.end;
        }
        assert!(heads.is_empty() || at == body, "{value:?}");
    }
});
