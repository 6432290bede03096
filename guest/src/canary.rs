//! The canary: a fixed, harmless file whose digests every filter holds.
//!
//! Like antivirus' EICAR test file, it lets an operator prove enforcement end to end
//! without touching real material. Hosts report it as a canary, never as a hit on
//! listed material.

use crate::{Algorithm, ObjectDigests};

/// The category label of canary sections. Lists may not use it.
pub const CATEGORY: &str = "canary";

/// The canary file's exact bytes (ASCII, one line, ending in a newline).
pub const CONTENT: &[u8] = b"HASHGATE-CANARY-FILE-V1: this harmless file is listed in every hashgate filter so that operators can test enforcement.\n";

/// The canary's digest with `algorithm`.
pub fn digest(algorithm: Algorithm) -> Vec<u8> {
    let mut digests = ObjectDigests::new(&[algorithm]);
    digests.update(CONTENT);
    digests.finish().remove(0).1
}
