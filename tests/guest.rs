//! The guest component as the host runs it: no imports, the same answers as the native
//! build, the portable scanner path, and traps contained.

mod common;

use std::sync::Arc;

use hashgate_guest::{Algorithm, Filter};
use hashgate_host::{Error, FilterEngine, Limits, Runtime, Verdict, GUEST_COMPONENT};

#[test]
fn the_component_imports_nothing() {
    let engine = wasmtime::Engine::default();
    let component = wasmtime::component::Component::new(&engine, GUEST_COMPONENT).unwrap();
    let ty = component.component_type();
    let imports: Vec<String> = ty
        .imports(&engine)
        .map(|(name, _)| name.to_string())
        .collect();
    assert!(imports.is_empty(), "the guest imports {imports:?}");
    let exports: Vec<String> = ty
        .exports(&engine)
        .map(|(name, _)| name.to_string())
        .collect();
    assert_eq!(exports, ["hashgate:filter/filter@0.3.0"]);
    assert!(hashgate_host::runtime::component_imports(GUEST_COMPONENT)
        .unwrap()
        .is_empty());
}

#[test]
fn components_with_imports_or_no_component_are_refused() {
    let bytes = common::component_with_an_import();
    assert_eq!(
        hashgate_host::runtime::component_imports(&bytes).unwrap(),
        ["wall-clock-now"]
    );
    let err = Runtime::with_component(&bytes, Limits::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("must import nothing"), "{err}");
    let err = Runtime::with_component(b"\0asm\x01\0\0\0", Limits::default())
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("not a WebAssembly component"),
        "{err}"
    );
    assert!(Runtime::with_component(b"garbage", Limits::default()).is_err());
}

fn mixed_filter() -> (Vec<u8>, Vec<common::Entry>) {
    let mut entries = Vec::new();
    for (i, algorithm) in Algorithm::ALL.into_iter().enumerate() {
        for (j, category) in [None, Some("one"), Some("two")].into_iter().enumerate() {
            for d in common::random_digests(algorithm, 300, (10 * i + j) as u64) {
                entries.push((algorithm, category, d));
            }
        }
    }
    (common::build_body(&entries, 1e-3), entries)
}

#[test]
fn native_and_wasm_give_identical_answers() {
    let (body, members) = mixed_filter();
    let native = Filter::parse(body.clone()).unwrap();
    let engine = FilterEngine::from_verified(common::runtime(), body).unwrap();
    let mut queries: Vec<(Algorithm, Vec<u8>)> =
        members.iter().map(|(a, _, d)| (*a, d.clone())).collect();
    for algorithm in Algorithm::ALL {
        // At 1e-3 some of these are false positives: both sides must agree on them too.
        for d in common::random_digests(algorithm, 20_000, 99) {
            queries.push((algorithm, d));
        }
    }
    let mut hits = 0;
    for (algorithm, digest) in &queries {
        let expected: Vec<(String, Option<String>)> = native
            .check(&[(*algorithm, digest.as_slice())])
            .unwrap()
            .into_iter()
            .map(|h| (h.algorithm.name().to_string(), h.category))
            .collect();
        let verdict = engine
            .check(&[common::host_digest(*algorithm, digest)], 0)
            .unwrap();
        let got: Vec<(String, Option<String>)> = verdict
            .hits()
            .iter()
            .map(|h| (h.algorithm.name().to_string(), h.category.clone()))
            .collect();
        assert_eq!(got, expected, "{algorithm} {}", hex::encode(digest));
        hits += got.len();
    }
    assert!(hits >= members.len(), "every member hits");
    let info = engine.info();
    assert_eq!(info.entries, native.header().entries);
    assert_eq!(info.hashes, native.header().hashes);
    assert_eq!(info.sections.len(), native.sections().len());
}

#[test]
fn one_check_with_several_digests_names_each_hit() {
    let (body, members) = mixed_filter();
    let engine = FilterEngine::from_verified(common::runtime(), body).unwrap();
    let md5 = members
        .iter()
        .find(|(a, c, _)| *a == Algorithm::Md5 && c.is_some())
        .unwrap();
    let sha256 = members
        .iter()
        .find(|(a, _, _)| *a == Algorithm::Sha256)
        .unwrap();
    let clean = common::random_digests(Algorithm::Sha1, 1, 12345).remove(0);
    let verdict = engine
        .check(
            &[
                common::host_digest(Algorithm::Md5, &md5.2),
                common::host_digest(Algorithm::Sha1, &clean),
                common::host_digest(Algorithm::Sha256, &sha256.2),
            ],
            1234,
        )
        .unwrap();
    let named: Vec<(&str, Vec<u8>)> = verdict
        .hits()
        .iter()
        .map(|h| (h.algorithm.name(), h.bytes.clone()))
        .collect();
    assert_eq!(
        named,
        [("md5", md5.2.clone()), ("sha256", sha256.2.clone())]
    );
}

#[test]
fn a_digest_of_the_wrong_length_is_an_error_not_a_trap() {
    let (body, _) = mixed_filter();
    let engine = FilterEngine::from_verified(common::runtime(), body).unwrap();
    let bad = hashgate_host::Digest {
        algorithm: hashgate_host::Algorithm::Sha256,
        bytes: vec![0; 31],
    };
    assert!(matches!(engine.check(&[bad], 0), Err(Error::Check(_))));
}

#[test]
fn the_guest_scanner_hashes_raw_bytes() {
    let content = b"some file the authority listed, made by this test".repeat(5000);
    let mut hasher = hashgate_host::hashing::ObjectHasher::new(&[hashgate_host::Algorithm::Sha1]);
    hasher.update(&content);
    let sha1 = hasher.finish().remove(0).bytes;
    let mut entries = vec![(Algorithm::Sha1, Some("x"), sha1)];
    entries.push((Algorithm::Md5, None, vec![1u8; 16]));
    let engine =
        FilterEngine::from_verified(common::runtime(), common::build_body(&entries, 1e-9)).unwrap();
    let verdict = engine.scan_bytes(content.chunks(64 * 1024)).unwrap();
    assert_eq!(verdict.hits().len(), 1);
    assert_eq!(verdict.hits()[0].category.as_deref(), Some("x"));
    let clean = engine.scan_bytes([&b"clean bytes"[..]]).unwrap();
    assert_eq!(clean, Verdict::Clean);
    // The canary is listed in every filter, under its own category.
    let canary = engine
        .scan_bytes([hashgate_authority::canary_content()])
        .unwrap();
    assert!(canary.hits().iter().all(|h| h.is_canary()) && !canary.hits().is_empty());
}

#[test]
fn a_trap_fails_one_call_and_the_instance_is_replaced() {
    let limits = Limits {
        max_memory: 2 << 20,
        max_instances: 4,
        ..Limits::default()
    };
    let runtime = Arc::new(Runtime::new(limits).unwrap());
    let member = common::random_digests(Algorithm::Sha256, 1, 5).remove(0);
    let body = common::build_body(&[(Algorithm::Sha256, None, member.clone())], 1e-6);
    let engine = FilterEngine::from_verified(runtime, body).unwrap();
    // A chunk larger than the guest's memory cap: lowering it into the guest fails.
    let huge = vec![0u8; 4 << 20];
    match engine.scan_bytes([huge.as_slice()]) {
        Err(Error::GuestTrap(reason)) => assert!(!reason.is_empty()),
        other => panic!("expected a contained trap, got {other:?}"),
    }
    // The next calls run on a fresh instance with the same filter.
    for _ in 0..3 {
        let verdict = engine
            .check(&[common::host_digest(Algorithm::Sha256, &member)], 0)
            .unwrap();
        assert_eq!(verdict.hits().len(), 1);
    }
}

#[test]
fn a_filter_larger_than_the_memory_cap_is_refused_cleanly() {
    let limits = Limits {
        max_memory: 2 << 20,
        max_instances: 2,
        ..Limits::default()
    };
    let runtime = Arc::new(Runtime::new(limits).unwrap());
    let entries: Vec<_> = common::random_digests(Algorithm::Sha256, 600_000, 6)
        .into_iter()
        .map(|d| (Algorithm::Sha256, None, d))
        .collect();
    let body = common::build_body(&entries, 1e-3); // ~1 MiB of bits, 2 copies won't fit
    assert!(body.len() > 1 << 20);
    let err = FilterEngine::from_verified(runtime, body).err().unwrap();
    assert!(matches!(err, Error::GuestTrap(_)), "{err}");
}

#[test]
fn describe_reads_the_header_alone_and_agrees_with_load() {
    let (body, _) = mixed_filter();
    let runtime = common::runtime();
    let loaded = FilterEngine::from_verified(runtime.clone(), body.clone()).unwrap();
    let head_len = 176 + 48 * loaded.info().sections.len();
    // The header alone, and the header with a little of the payload after it.
    for head in [&body[..head_len], &body[..head_len + 100]] {
        assert_eq!(&runtime.describe(head).unwrap(), loaded.info());
    }
    // Fewer bytes than the section records, or not a snapshot: an error, not a trap.
    assert!(matches!(
        runtime.describe(&body[..head_len - 1]),
        Err(Error::Load(_))
    ));
    assert!(matches!(
        runtime.describe(b"not a filter"),
        Err(Error::Load(_))
    ));
}
