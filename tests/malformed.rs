//! Malformed, corrupt and tampered snapshots: each is refused with a clear error, by the
//! native parser and by the wasm guest (an error, never a trap), and signature problems
//! are caught by the host before the guest sees a byte.

mod common;

use hashgate_guest::{Algorithm, Filter};
use hashgate_host::{trust, Error, FilterEngine};
use sha2::Digest as _;

/// A small valid body: two SHA-256 sections (one category and the canary).
fn valid_body() -> Vec<u8> {
    let entries: Vec<_> = common::random_digests(Algorithm::Sha256, 20, 9)
        .into_iter()
        .map(|d| (Algorithm::Sha256, Some("cat"), d))
        .collect();
    common::build_body(&entries, 1e-6)
}

const SECTION0: usize = 176;

fn put(body: &mut [u8], offset: usize, bytes: &[u8]) {
    body[offset..offset + bytes.len()].copy_from_slice(bytes);
}

/// Recomputes the payload digest so a test reaches the check behind it.
fn fix_payload_digest(body: &mut [u8]) {
    let sections = u16::from_le_bytes([body[10], body[11]]) as usize;
    let start = 176 + 48 * sections;
    let digest = sha2::Sha256::digest(&body[start.min(body.len())..]);
    put(body, 144, &digest);
}

/// Asserts both implementations refuse `body`, with `expect` in the error message.
#[track_caller]
fn refused(body: Vec<u8>, expect: &str) {
    let native = Filter::parse(body.clone()).expect_err("native parser accepted it");
    assert!(
        native.to_string().contains(expect),
        "native error {native:?} does not mention {expect:?}"
    );
    match FilterEngine::from_verified(common::runtime(), body) {
        Err(Error::Load(message)) => assert!(
            message.contains(expect),
            "guest error {message:?} does not mention {expect:?}"
        ),
        Err(other) => panic!("the guest failed other than by refusing: {other}"),
        Ok(_) => panic!("the guest accepted a malformed snapshot"),
    }
}

#[test]
fn the_valid_body_is_accepted() {
    let body = valid_body();
    Filter::parse(body.clone()).unwrap();
    FilterEngine::from_verified(common::runtime(), body).unwrap();
}

#[test]
fn truncated_at_every_header_offset() {
    let body = valid_body();
    let header_end = SECTION0 + 2 * 48;
    for len in 0..header_end {
        refused(body[..len].to_vec(), "truncated");
    }
    // And inside the payload.
    refused(body[..body.len() - 1].to_vec(), "truncated");
}

#[test]
fn bad_magic() {
    let mut b = valid_body();
    b[0] = b'X';
    refused(b, "magic");
}

#[test]
fn unknown_format_version() {
    let mut b = valid_body();
    put(&mut b, 8, &2u16.to_le_bytes());
    refused(b, "version 2");
}

#[test]
fn zero_and_too_many_sections() {
    let mut b = valid_body();
    put(&mut b, 10, &0u16.to_le_bytes());
    refused(b, "section_count");
    let mut b = valid_body();
    put(&mut b, 10, &65u16.to_le_bytes());
    refused(b, "section_count");
}

#[test]
fn nonzero_flags_and_reserved() {
    let mut b = valid_body();
    b[12] = 1;
    refused(b, "flags");
    let mut b = valid_body();
    b[116] = 1;
    refused(b, "reserved");
    let mut b = valid_body();
    b[SECTION0 + 3] = 1;
    refused(b, "section.reserved");
}

#[test]
fn bad_series() {
    let mut b = valid_body();
    put(&mut b, 16, b"has space");
    refused(b, "series");
    let mut b = valid_body();
    b[16 + 63] = b'x'; // text after the terminating NUL
    refused(b, "series");
    let mut b = valid_body();
    put(&mut b, 16, &[0u8; 64]); // empty
    refused(b, "series");
}

#[test]
fn expiry_not_after_creation() {
    let mut b = valid_body();
    let created = u64::from_le_bytes(b[88..96].try_into().unwrap());
    put(&mut b, 96, &created.to_le_bytes());
    refused(b, "expires");
}

#[test]
fn zero_hashes() {
    let mut b = valid_body();
    put(&mut b, 112, &0u32.to_le_bytes());
    refused(b, "hashes");
}

#[test]
fn absurd_hashes() {
    for k in [65u32, 1000, u32::MAX] {
        let mut b = valid_body();
        put(&mut b, 112, &k.to_le_bytes());
        refused(b, "hashes");
    }
}

#[test]
fn zero_bits() {
    let mut b = valid_body();
    put(&mut b, SECTION0 + 16, &0u64.to_le_bytes());
    refused(b, "section.bits");
}

#[test]
fn entries_out_of_range_or_disagreeing() {
    let mut b = valid_body();
    put(&mut b, SECTION0 + 8, &0u64.to_le_bytes());
    refused(b, "section.entries");
    let mut b = valid_body();
    put(&mut b, SECTION0 + 8, &u64::MAX.to_le_bytes());
    refused(b, "section.entries");
    let mut b = valid_body();
    put(&mut b, 104, &999u64.to_le_bytes());
    refused(b, "entries");
}

#[test]
fn payload_length_disagrees() {
    let mut b = valid_body();
    let len = u64::from_le_bytes(b[136..144].try_into().unwrap());
    put(&mut b, 136, &(len + 1).to_le_bytes());
    refused(b, "payload_len");
    let mut b = valid_body();
    put(&mut b, 136, &u64::MAX.to_le_bytes());
    refused(b, "payload_len");
    // Bits that need a larger bitmap than the payload holds.
    let mut b = valid_body();
    put(&mut b, SECTION0 + 16, &(1u64 << 40).to_le_bytes());
    refused(b, "payload_len");
}

#[test]
fn trailing_bytes() {
    let mut b = valid_body();
    b.push(0);
    refused(b, "follow the payload");
}

#[test]
fn unknown_algorithm() {
    let mut b = valid_body();
    b[SECTION0] = 9;
    refused(b, "section.algorithm");
}

#[test]
fn category_length_disagrees_or_label_invalid() {
    let mut b = valid_body();
    b[SECTION0 + 1] = 7;
    refused(b, "category_len");
    let mut b = valid_body();
    b[SECTION0 + 1] = 200;
    refused(b, "category_len");
    let mut b = valid_body();
    b[SECTION0 + 24] = b'C'; // upper case is not a valid label
    refused(b, "section.category");
}

#[test]
fn duplicate_sections() {
    let mut b = valid_body();
    let second = SECTION0 + 48;
    let first: Vec<u8> = b[SECTION0..SECTION0 + 48].to_vec();
    // Give the second (canary) section the first's algorithm and label, same size.
    put(&mut b, second + 1, &first[1..2]);
    put(&mut b, second + 24, &first[24..48]);
    refused(b, "two sections");
}

#[test]
fn payload_bit_flip() {
    let mut b = valid_body();
    let last = b.len() - 1;
    b[last] ^= 0x01;
    refused(b, "payload SHA-256");
}

#[test]
fn header_digest_bit_flip() {
    let mut b = valid_body();
    b[150] ^= 0x80;
    refused(b, "payload SHA-256");
}

#[test]
fn bits_set_beyond_the_section() {
    let mut b = valid_body();
    let bits = u64::from_le_bytes(b[SECTION0 + 16..SECTION0 + 24].try_into().unwrap());
    put(&mut b, SECTION0 + 16, &(bits - 1).to_le_bytes());
    let payload = SECTION0 + 2 * 48;
    let last_of_first = payload + (bits / 8) as usize - 1;
    b[last_of_first] |= 0x80;
    fix_payload_digest(&mut b);
    refused(b, "beyond the end");
}

#[test]
fn signature_bit_flips_are_caught_before_the_guest() {
    let key = common::test_key();
    let file = common::sign(&valid_body(), &key);
    let keys = [key.public_key()];
    assert!(trust::verify(&file, &keys).is_ok());
    for offset in [0, 100, SECTION0 + 10, file.len() - 100, file.len() - 1] {
        let mut tampered = file.clone();
        tampered[offset] ^= 0x04;
        let err = trust::verify(&tampered, &keys).expect_err("tampering went unnoticed");
        assert!(err.to_string().contains("signature"), "{err}");
    }
}

#[test]
fn wrong_key_missing_trailer_and_short_files() {
    let file = common::sign(&valid_body(), &common::test_key());
    let other = hashgate_host::trust::SecretKey::from_seed(&[8u8; 32]).public_key();
    let err = trust::verify(&file, &[other]).unwrap_err().to_string();
    assert!(err.contains("not a trusted key"), "{err}");
    let err = trust::verify(&valid_body(), &[common::test_key().public_key()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("no signature trailer"), "{err}");
    let err = trust::verify(b"short", &[common::test_key().public_key()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("too short"), "{err}");
}

#[test]
fn a_tampered_file_never_reaches_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.hgf");
    let key = common::test_key();
    let mut file = common::sign(&valid_body(), &key);
    file[200] ^= 1;
    std::fs::write(&path, &file).unwrap();
    let err = FilterEngine::open(common::runtime(), &path, &key.public_key())
        .err()
        .expect("a tampered file was loaded");
    assert!(matches!(err, Error::Signature(_)), "{err}");
}
