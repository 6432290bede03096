//! The filter format: known-answer vectors (`docs/FORMAT.md`), no false negatives,
//! measured false-positive rate, sizing, and an independent reference reader.

mod common;

use hashgate_guest::index::Probe;
use hashgate_guest::{
    canary, optimal_bits, optimal_hashes, Algorithm, BuildParams, Filter, FilterBuilder,
    SectionSpec,
};
use proptest::prelude::*;
use sha2::Digest as _;

const KAT_SALT: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

#[test]
fn kat_probe_and_indices() {
    let abc = sha2::Sha256::digest(b"abc");
    let p = Probe::new(&KAT_SALT, Algorithm::Sha256, &abc);
    assert_eq!(
        (p.h1, p.h2, p.h3),
        (0x9dfc5f1c8b428a77, 0x51026146efe54ac2, 0x63c5ef723640ff19)
    );
    assert_eq!(
        p.indices(5, 1000).collect::<Vec<_>>(),
        [617, 323, 808, 74, 118]
    );
    let p = Probe::new(&KAT_SALT, Algorithm::Md5, &[0u8; 16]);
    assert_eq!(
        (p.h1, p.h2, p.h3),
        (0x1bdced19587735ec, 0x328edd31eed61e3c, 0x4a2bcefe96a4656f)
    );
    assert_eq!(p.indices(4, 64).collect::<Vec<_>>(), [6, 38, 42, 19]);
}

/// The PDQ home slots `docs/FORMAT.md` gives (the reference reader computes the same).
#[test]
fn kat_pdq_home_slots() {
    let bridge: [u8; 32] =
        hex::decode("f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22")
            .unwrap()
            .try_into()
            .unwrap();
    assert_eq!(hashgate_guest::pdq::home(&KAT_SALT, &bridge, 1024), 460);
    let mut one = [0u8; 32];
    one[31] = 1;
    assert_eq!(hashgate_guest::pdq::home(&KAT_SALT, &one, 64), 53);
}

#[test]
fn domain_separation_by_algorithm() {
    // The same 16 bytes as an MD5 digest and as the start of a SHA-1 digest never share
    // a probe, and an algorithm code changes the probe of identical bytes.
    let bytes = [0x42u8; 32];
    let md5 = Probe::new(&KAT_SALT, Algorithm::Md5, &bytes[..16]);
    let sha1 = Probe::new(&KAT_SALT, Algorithm::Sha1, &bytes[..16]);
    assert_ne!(md5, sha1);
}

#[test]
fn kat_canary_digests() {
    assert_eq!(
        hex::encode(canary::digest(Algorithm::Md5)),
        "374da03268800b901d89c0ca353e018f"
    );
    assert_eq!(
        hex::encode(canary::digest(Algorithm::Sha1)),
        "87804a6b5d9832860cef29f77319143c080ea2f3"
    );
    assert_eq!(
        hex::encode(canary::digest(Algorithm::Sha256)),
        "0badb94df74129881241cffef1a9c4fa057877b94ef2bd9608a86e5093d6835f"
    );
}

/// The snapshot `docs/FORMAT.md` gives as its worked example.
fn kat_snapshot() -> Vec<u8> {
    let params = BuildParams::new("kat-v1", 1, 1_700_000_000, 1_700_604_800, 1e-3);
    let abc = |a: Algorithm| {
        let mut d = hashgate_guest::ObjectDigests::new(&[a]);
        d.update(b"abc");
        d.finish().remove(0).1
    };
    let entries = [
        (Algorithm::Sha256, Some("alpha")),
        (Algorithm::Md5, None),
        (Algorithm::Sha1, Some("alpha")),
    ];
    let specs: Vec<SectionSpec> = entries
        .iter()
        .map(|(a, c)| SectionSpec {
            algorithm: *a,
            category: c.map(str::to_string),
            entries: 1,
        })
        .collect();
    let mut b = FilterBuilder::new(&params, &specs).unwrap();
    for (a, c) in entries {
        b.insert(a, c, &abc(a)).unwrap();
    }
    b.finish().unwrap()
}

#[test]
fn kat_whole_snapshot() {
    let body = kat_snapshot();
    let filter = Filter::parse(body.clone()).unwrap();
    let h = filter.header();
    assert_eq!(h.hashes, 10);
    assert_eq!(
        hex::encode(h.salt),
        hex::encode(&sha2::Sha256::digest(b"hashgate-salt-v1\0kat-v1")[..16])
    );
    let layout: Vec<(Algorithm, Option<&str>, u64)> = h
        .sections
        .iter()
        .map(|s| (s.algorithm, s.category.as_deref(), s.bits))
        .collect();
    assert_eq!(
        layout,
        [
            (Algorithm::Md5, None, 65536),
            (Algorithm::Md5, Some("canary"), 65536),
            (Algorithm::Sha1, Some("alpha"), 65536),
            (Algorithm::Sha1, Some("canary"), 65536),
            (Algorithm::Sha256, Some("alpha"), 65536),
            (Algorithm::Sha256, Some("canary"), 65536),
        ]
    );
    assert_eq!(body.len(), 176 + 6 * 48 + 6 * 8192);
    assert_eq!(hex::encode(sha2::Sha256::digest(&body)), KAT_BODY_SHA256);
    let signed = common::sign(&body, &common::test_key());
    assert_eq!(hex::encode(sha2::Sha256::digest(&signed)), KAT_FILE_SHA256);
}

const KAT_BODY_SHA256: &str = "2c7f53b5b7ad1d5094af9cab5caac572d6f3de1f81fa802733371cd9521ccc23";
const KAT_FILE_SHA256: &str = "76b3959c733cda23846986345b59688c24f3354edaa68482c3de7eb1dcbe5a99";

#[test]
fn sizing_is_the_bloom_optimum() {
    for &(n, p) in &[(10_000_000u64, 1e-9), (1_000_000, 1e-4), (12_345, 1e-6)] {
        let m = optimal_bits(n, p) as f64;
        let ideal = -(n as f64) * p.ln() / (std::f64::consts::LN_2.powi(2));
        assert!(
            m >= ideal && m <= ideal * 1.01,
            "n={n} p={p}: m={m} ideal={ideal}"
        );
    }
    assert_eq!(optimal_hashes(1e-9), 30);
    assert_eq!(optimal_hashes(1e-4), 13);
}

#[test]
fn measured_false_positive_rate_is_near_the_target() {
    let p = 1e-4;
    let members = common::random_digests(Algorithm::Sha256, 200_000, 1);
    let entries: Vec<_> = members
        .iter()
        .map(|d| (Algorithm::Sha256, None, d.clone()))
        .collect();
    let filter = Filter::parse(common::build_body(&entries, p)).unwrap();
    let trials = 1_000_000;
    let outsiders = common::random_digests(Algorithm::Sha256, trials, 2);
    let false_positives = outsiders
        .iter()
        .filter(|d| {
            !filter
                .check(&[(Algorithm::Sha256, d.as_slice())])
                .unwrap()
                .is_empty()
        })
        .count();
    let rate = false_positives as f64 / trials as f64;
    eprintln!("false-positive rate at target {p:e}: measured {rate:e} over {trials} non-members");
    assert!(
        rate <= p * 1.5 && rate >= p / 1.5,
        "measured {rate:e} ({false_positives} of {trials}) against target {p:e}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every inserted digest hits, whatever the algorithm, category and rate.
    #[test]
    fn no_false_negatives(
        digests in prop::collection::vec((0usize..3, prop::collection::vec(any::<u8>(), 32), 0usize..3), 1..200),
        exponent in 2i32..12,
    ) {
        let categories = [None, Some("a"), Some("b-2")];
        let entries: Vec<_> = digests
            .iter()
            .map(|(a, bytes, c)| {
                let algorithm = Algorithm::ALL[*a];
                (algorithm, categories[*c], bytes[..algorithm.digest_len()].to_vec())
            })
            .collect();
        let filter = Filter::parse(common::build_body(&entries, 10f64.powi(-exponent))).unwrap();
        for (algorithm, category, digest) in &entries {
            let hits = filter.check(&[(*algorithm, digest.as_slice())]).unwrap();
            prop_assert!(hits.iter().any(|h| h.category.as_deref() == *category));
        }
    }
}

#[test]
fn identical_inputs_give_identical_snapshots() {
    assert_eq!(kat_snapshot(), kat_snapshot());
}

/// The Python reader in tools/ implements docs/FORMAT.md independently: it must agree
/// with this crate on members and non-members.
#[test]
fn independent_reference_reader_agrees() {
    let python = std::process::Command::new("python3")
        .arg("--version")
        .output();
    assert!(python.is_ok(), "python3 is needed for the reference reader");
    let members = common::random_digests(Algorithm::Sha1, 50, 3);
    let entries: Vec<_> = members
        .iter()
        .map(|d| (Algorithm::Sha1, Some("ref"), d.clone()))
        .collect();
    let body = common::build_body(&entries, 1e-6);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.hgf");
    std::fs::write(&path, common::sign(&body, &common::test_key())).unwrap();
    let reference = |digest: &[u8]| {
        std::process::Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tools/filter_ref.py"))
            .args([
                "check",
                path.to_str().unwrap(),
                "sha1",
                &hex::encode(digest),
            ])
            .status()
            .unwrap()
            .code()
    };
    for member in members.iter().take(5) {
        assert_eq!(reference(member), Some(0));
    }
    for outsider in common::random_digests(Algorithm::Sha1, 5, 4) {
        assert_eq!(reference(&outsider), Some(1));
    }
    assert_eq!(
        reference(&canary::digest(Algorithm::Sha1)),
        Some(0),
        "the canary is in every filter"
    );
}

/// Format v2 through the reference reader: it validates the PDQ section, lays the set out
/// again by the spec's rule and finds the writer's slots byte for byte, and matches by
/// brute force what the guest matches by index.
#[test]
fn independent_reference_reader_agrees_on_pdq_sections() {
    use hashgate_guest::PdqSpec;
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let hashes: Vec<[u8; 32]> = (0..300)
        .map(|_| {
            let mut h = [0u8; 32];
            rng.fill_bytes(&mut h);
            h
        })
        .collect();
    let member = common::random_digests(Algorithm::Md5, 1, 5).remove(0);
    let params = BuildParams::new("ref-v2", 1, 1_700_000_000, 4_000_000_000, 1e-6);
    let specs = [SectionSpec {
        algorithm: Algorithm::Md5,
        category: None,
        entries: 1,
    }];
    let pdq = [PdqSpec {
        category: Some("pictures".into()),
        entries: hashes.len() as u64,
    }];
    let mut builder = FilterBuilder::with_pdq(&params, &specs, &pdq, Vec::new()).unwrap();
    builder.insert(Algorithm::Md5, None, &member).unwrap();
    for h in &hashes {
        builder.insert_pdq(Some("pictures"), h).unwrap();
    }
    let body = builder.finish().unwrap();
    let filter = Filter::parse(body.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.hgf");
    std::fs::write(&path, common::sign(&body, &common::test_key())).unwrap();
    let pdq_of = |h: &[u8; 32]| {
        let out = std::process::Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tools/filter_ref.py"))
            .args(["pdq", path.to_str().unwrap(), &hex::encode(h)])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    for (i, listed) in hashes.iter().take(5).enumerate() {
        let mut near = *listed;
        // 0, 9, 18, 27 and 36 bits away: the last is past the threshold of 31.
        for bit in 0..(i * 9) {
            near[bit / 8] ^= 1 << (bit % 8);
        }
        let guest = filter.check_pdq(&[near]).unwrap();
        let (code, out) = pdq_of(&near);
        let expected: String = guest
            .iter()
            .map(|h| format!("hit pictures {}\n", h.distance))
            .collect();
        assert_eq!(code, Some(if guest.is_empty() { 1 } else { 0 }), "{out}");
        assert_eq!(out, expected);
        assert_eq!(guest.len(), usize::from(i * 9 <= 31), "{guest:?}");
    }
    assert_eq!(pdq_of(&[0x5a; 32]).0, Some(1));
    let digest = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tools/filter_ref.py"))
        .args([
            "check",
            path.to_str().unwrap(),
            "md5",
            &hex::encode(&member),
        ])
        .status()
        .unwrap();
    assert_eq!(digest.code(), Some(0), "the digest section reads as in v1");
}

/// The known-answer v2 snapshot of docs/FORMAT.md: the SHA-256 of `abc` (category
/// `alpha`) and two PDQ hashes (the bridge, and 31 zero bytes then `01`; category
/// `pictures`).
fn kat_v2_snapshot() -> Vec<u8> {
    use hashgate_guest::PdqSpec;
    let params = BuildParams::new("kat-v2", 1, 1_700_000_000, 1_700_604_800, 1e-3);
    let specs = [SectionSpec {
        algorithm: Algorithm::Sha256,
        category: Some("alpha".into()),
        entries: 1,
    }];
    let pdq = [PdqSpec {
        category: Some("pictures".into()),
        entries: 2,
    }];
    let mut b = FilterBuilder::with_pdq(&params, &specs, &pdq, Vec::new()).unwrap();
    let abc: [u8; 32] = sha2::Sha256::digest(b"abc").into();
    b.insert(Algorithm::Sha256, Some("alpha"), &abc).unwrap();
    for h in KAT_PDQ {
        let h: [u8; 32] = hex::decode(h).unwrap().try_into().unwrap();
        b.insert_pdq(Some("pictures"), &h).unwrap();
    }
    b.finish().unwrap()
}

const KAT_PDQ: [&str; 2] = [
    "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22",
    "0000000000000000000000000000000000000000000000000000000000000001",
];

#[test]
fn kat_whole_v2_snapshot() {
    let body = kat_v2_snapshot();
    assert_eq!(kat_v2_snapshot(), body, "the same inputs, the same bytes");
    let filter = Filter::parse(body.clone()).unwrap();
    let mut near: [u8; 32] = hex::decode(KAT_PDQ[0]).unwrap().try_into().unwrap();
    near[0] ^= 0x0f; // 4 bits off
    let hits = filter.check_pdq(&[near]).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].distance, 4);
    let signed = common::sign(&body, &common::test_key());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kat-v2.hgf");
    std::fs::write(&path, &signed).unwrap();
    // The independent reader finds both listed hashes from the spec alone.
    for listed in KAT_PDQ {
        let out = std::process::Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tools/filter_ref.py"))
            .args(["pdq", path.to_str().unwrap(), listed])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        // `hit CATEGORY DISTANCE`, as the guest answers for the hash itself.
        assert_eq!(stdout.trim(), "hit pictures 0", "{listed}");
    }
    assert_eq!(body.len(), 18_752);
    assert_eq!(hex::encode(sha2::Sha256::digest(&body)), KAT_V2_BODY_SHA256);
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&signed)),
        KAT_V2_FILE_SHA256
    );
}

const KAT_V2_BODY_SHA256: &str = "5335fd0a90125ea9559433d99a0c8702cd1121cb6365c01de88a67e6055b0a8c";
const KAT_V2_FILE_SHA256: &str = "ab5b4b0bf85503ca388c3cd2454abe23f2b52f9993de8d1534023e52794839e7";
