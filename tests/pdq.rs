//! PDQ against Meta's reference: `tests/data/pdq/reference-pdq.tsv` holds the hashes the
//! C++ reference (through the `pdqhash` Python bindings) gives for the pictures beside it.

mod common;

use std::path::{Path, PathBuf};

use common::bomb_png;

use hashgate_host::perceptual::{
    hash_picture, Dihedral, PdqHash, Picture, PictureError, PictureLimits,
};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pdq")
}

/// (path, hash, quality) for every picture of the reference table.
fn reference() -> Vec<(String, PdqHash, u8)> {
    let table = std::fs::read_to_string(data().join("reference-pdq.tsv")).unwrap();
    table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].to_string(),
                PdqHash::from_hex(f[1]).unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect()
}

fn pdq_of(path: &str, dihedral: bool) -> hashgate_host::perceptual::Pdq {
    let bytes = std::fs::read(data().join(path)).unwrap();
    let picture = Picture::sniff(&bytes).unwrap_or_else(|| panic!("{path} is not recognised"));
    hash_picture(&bytes, picture, &PictureLimits::default(), dihedral)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_picture_of_quality_80_or_more_hashes_within_10_bits_of_the_reference() {
    let mut report = Vec::new();
    let mut worst = 0;
    for (path, expected, quality) in reference() {
        let pdq = pdq_of(&path, false);
        let distance = pdq.original().distance(&expected);
        report.push(format!(
            "{path}: distance {distance}, quality {} (reference {quality})",
            pdq.quality
        ));
        if quality >= 80 {
            worst = worst.max(distance);
            assert!(distance <= 10, "{}", report.join("\n"));
            assert!(pdq.quality >= 80, "{}", report.join("\n"));
        }
    }
    println!("{}\nworst distance {worst}", report.join("\n"));
}

#[test]
fn the_bridge_edits_match_the_original_and_unrelated_photos_do_not() {
    let original = pdq_of("bridge-mods/aaa-orig.jpg", false).original();
    let mut edits = 0;
    for (path, _, _) in reference() {
        let hash = pdq_of(&path, false).original();
        let distance = hash.distance(&original);
        if path.starts_with("bridge-mods/") {
            edits += 1;
            assert!(distance <= 31, "{path} is {distance} from the original");
        } else if path.starts_with("reg-test-input/labelme-subset/") {
            assert!(distance > 31, "{path} is {distance} from the bridge");
        }
    }
    assert_eq!(edits, 12);
}

#[test]
fn turned_and_mirrored_bridges_match_only_with_the_dihedral_hashes() {
    let original = pdq_of("reg-test-input/dih/bridge-1-original.jpg", false).original();
    let turned = [
        ("bridge-2-rotate-90.jpg", Dihedral::Rotate90),
        ("bridge-3-rotate-180.jpg", Dihedral::Rotate180),
        ("bridge-4-rotate-270.jpg", Dihedral::Rotate270),
        ("bridge-5-flipx.jpg", Dihedral::FlipX),
        ("bridge-6-flipy.jpg", Dihedral::FlipY),
        ("bridge-7-flip-plus-1.jpg", Dihedral::FlipPlus1),
        ("bridge-8-flip-minus-1.jpg", Dihedral::FlipMinus1),
    ];
    for (name, _) in turned {
        let plain = pdq_of(&format!("reg-test-input/dih/{name}"), false).original();
        assert!(
            plain.distance(&original) > 31,
            "{name} matches without the dihedral hashes"
        );
        // One of the copy's eight hashes is the listed original's.
        let all = pdq_of(&format!("reg-test-input/dih/{name}"), true);
        let best = all
            .hashes
            .iter()
            .map(|(_, h)| h.distance(&original))
            .min()
            .unwrap();
        assert!(best <= 10, "{name}: nearest dihedral hash is {best} away");
    }
    // And the listed picture's own transforms are the turned copies' hashes.
    let own = pdq_of("reg-test-input/dih/bridge-1-original.jpg", true);
    for (name, which) in turned {
        let copy = pdq_of(&format!("reg-test-input/dih/{name}"), false).original();
        let (_, hash) = own.hashes.iter().find(|(d, _)| *d == which).unwrap();
        assert!(
            hash.distance(&copy) <= 10,
            "{name} is {} from {which:?}",
            hash.distance(&copy)
        );
    }
}

#[test]
fn a_decompression_bomb_is_refused_from_its_header() {
    // A PNG announcing 50,000 x 50,000 pixels: its header, a few bytes of IDAT.
    let png = bomb_png(50_000, 50_000);
    assert!(png.len() < 4096);
    let started = std::time::Instant::now();
    let err = hash_picture(&png, Picture::Png, &PictureLimits::default(), false).unwrap_err();
    assert_eq!(
        err,
        PictureError::TooLarge {
            format: "png",
            width: 50_000,
            height: 50_000
        }
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    // Within the dimension limit but over the pixel limit.
    let limits = PictureLimits {
        max_pixels: 1_000_000,
        ..PictureLimits::default()
    };
    assert!(matches!(
        hash_picture(&bomb_png(2000, 2000), Picture::Png, &limits, false),
        Err(PictureError::TooLarge { .. })
    ));
}

#[test]
fn broken_pictures_are_malformed_not_a_panic() {
    let jpeg = std::fs::read(data().join("bridge-mods/aaa-orig.jpg")).unwrap();
    for cut in [3, 20, 200, jpeg.len() / 2] {
        let r = hash_picture(
            &jpeg[..cut],
            Picture::Jpeg,
            &PictureLimits::default(),
            false,
        );
        // A truncated JPEG may decode with grey rows (decoders are lenient), or fail:
        // either way an answer, never a panic.
        if let Err(e) = r {
            assert!(matches!(e, PictureError::Malformed { .. }), "{e}");
        }
    }
    let err = hash_picture(
        b"\x89PNG\r\n\x1a\nnot a png",
        Picture::Png,
        &PictureLimits::default(),
        false,
    );
    assert!(matches!(err, Err(PictureError::Malformed { .. })));
}

/// A v2 snapshot listing the bridge's PDQ hash beside 2,000 random ones, `extra` too.
fn pdq_snapshot(extra: &[PdqHash]) -> Vec<u8> {
    use hashgate_guest::{BuildParams, FilterBuilder, PdqSpec};
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(19);
    let mut listed: Vec<[u8; 32]> = (0..2_000)
        .map(|_| {
            let mut h = [0u8; 32];
            rng.fill_bytes(&mut h);
            h
        })
        .collect();
    listed.push(pdq_of("bridge-mods/aaa-orig.jpg", false).original().0);
    listed.extend(extra.iter().map(|h| h.0));
    let params = BuildParams::new("pdq-test", 1, 1_700_000_000, 4_000_000_000, 1e-6);
    let spec = PdqSpec {
        category: Some("pictures".into()),
        entries: listed.len() as u64,
    };
    let mut builder = FilterBuilder::with_pdq(&params, &[], &[spec], Vec::new()).unwrap();
    for h in &listed {
        builder.insert_pdq(Some("pictures"), h).unwrap();
    }
    builder.finish().unwrap()
}

/// The whole perceptual path as the host runs it: pictures hashed natively, matched by the
/// guest component against a v2 snapshot; a delta that adds one hash is a few hundred
/// bytes and, applied, matches the picture it adds.
#[test]
fn the_component_matches_edited_pictures_against_a_pdq_snapshot_and_deltas_carry_the_churn() {
    let runtime =
        std::sync::Arc::new(hashgate_host::Runtime::new(hashgate_host::Limits::default()).unwrap());
    let base = pdq_snapshot(&[]);
    let engine = hashgate_host::FilterEngine::from_verified(runtime.clone(), base.clone()).unwrap();
    assert_eq!(engine.info().pdq_sections.len(), 1);
    assert_eq!(engine.info().pdq_sections[0].threshold, 31);

    let edit = pdq_of("bridge-mods/high-contrast.jpg", false).original();
    let hits = engine.check_pdq(&[edit]).unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].category.as_deref(), Some("pictures"));
    assert_eq!(
        hits[0].listed,
        pdq_of("bridge-mods/aaa-orig.jpg", false).original()
    );
    assert_eq!(hits[0].distance, edit.distance(&hits[0].listed));
    let other = pdq_of("misc-images/c.png", false).original();
    assert!(engine.check_pdq(&[other]).unwrap().is_empty());

    // The next version lists c.png too: same geometry, so a delta.
    let target = pdq_snapshot(&[other]);
    let delta = hashgate_guest::delta::diff(&base, &target).unwrap();
    assert!(
        delta.len() < 1_000,
        "a delta of one hash is {} bytes",
        delta.len()
    );
    let mut native = hashgate_guest::Filter::parse(base).unwrap();
    native.apply_delta(&delta).unwrap();
    assert_eq!(native.check_pdq(&[other.0]).unwrap().len(), 1);
    let engine = hashgate_host::FilterEngine::from_verified(runtime, target).unwrap();
    assert_eq!(engine.check_pdq(&[other]).unwrap()[0].distance, 0);
}

/// `hashgate pdq` makes list lines from pictures, leaves out the flat ones, names what is
/// not a picture and exits 2 for it; `hashgate build` takes its output, and the snapshot
/// finds an edit of a listed picture.
#[test]
fn hashgate_pdq_prints_list_lines_that_build_a_filter() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_picture = dir.path().join("notes.txt");
    std::fs::write(&not_a_picture, "not a picture").unwrap();
    let run = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hashgate"))
            .args(args)
            .output()
            .unwrap()
    };
    let orig = data().join("bridge-mods/aaa-orig.jpg");
    let flat = data().join("misc-images/small.jpg");
    let out = run(&[
        "pdq".as_ref(),
        "--category".as_ref(),
        "pictures".as_ref(),
        orig.as_os_str(),
        flat.as_os_str(),
        not_a_picture.as_os_str(),
    ]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("small.jpg: left out, quality 0"),
        "{stderr}"
    );
    assert!(stderr.contains("notes.txt: not a picture"), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let hex = lines[0]
        .strip_prefix("pdq:")
        .unwrap()
        .strip_suffix(",pictures")
        .unwrap();
    let expected = reference()
        .into_iter()
        .find(|(p, _, _)| p == "bridge-mods/aaa-orig.jpg")
        .unwrap()
        .1;
    assert!(PdqHash::from_hex(hex).unwrap().distance(&expected) <= 10);

    let list = dir.path().join("pictures.txt");
    std::fs::write(&list, &stdout).unwrap();
    let key = dir.path().join("k");
    assert!(run(&["keygen".as_ref(), "--out".as_ref(), key.as_os_str()])
        .status
        .success());
    let snapshot = dir.path().join("f.hgf");
    let built = run(&[
        "build".as_ref(),
        "--key".as_ref(),
        key.with_extension("key").as_os_str(),
        "--series".as_ref(),
        "pictures".as_ref(),
        "--version".as_ref(),
        "1".as_ref(),
        "--out".as_ref(),
        snapshot.as_os_str(),
        list.as_os_str(),
    ]);
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let file = std::fs::read(&snapshot).unwrap();
    let filter = hashgate_guest::Filter::parse(file[..file.len() - 80].to_vec()).unwrap();
    let edit = pdq_of("bridge-mods/blur-a-lot.jpg", false).original();
    assert_eq!(filter.check_pdq(&[edit.0]).unwrap().len(), 1);
}

/// Meta's C++ reference (the `pdqhash` bindings) as an oracle over pictures Pillow makes
/// (tests/pdq_oracle.py): resized, JPEG quality 30, WebP, cropped, greyscale, and random
/// ones. Each is hashed here from the same file; a lossless picture (PNG: the same
/// pixels on both sides) within 4 bits of the reference, a lossy one (JPEG and WebP
/// decoders round differently) within 10, and the quality within 5.
#[test]
fn the_cpp_reference_agrees_on_pictures_pillow_makes() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pdq_oracle.py"))
        .arg(dir.path())
        .arg(data().join("bridge-mods/aaa-orig.jpg"))
        .arg(data().join("misc-images/c.png"))
        .arg(data().join("reg-test-input/pen-and-coaster.png"))
        .output()
        .expect("python3 (scripts/test.sh installs Pillow, numpy and pdqhash)");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut report = Vec::new();
    let mut worst = 0;
    for line in stdout.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let (name, reference, quality) = (f[0], PdqHash::from_hex(f[1]).unwrap(), f[2]);
        let quality: u8 = quality.parse().unwrap();
        let bytes = std::fs::read(dir.path().join(name)).unwrap();
        let picture = Picture::sniff(&bytes).unwrap();
        let ours = hash_picture(&bytes, picture, &PictureLimits::default(), false).unwrap();
        let distance = ours.original().distance(&reference);
        let bound = if name.ends_with(".png") { 4 } else { 10 };
        worst = worst.max(distance);
        if distance > bound || ours.quality.abs_diff(quality) > 5 {
            report.push(format!(
                "{name}: {distance} bits (at most {bound}), quality {} / {quality}",
                ours.quality
            ));
        }
    }
    assert_eq!(stdout.lines().count(), 23, "{stdout}");
    assert!(report.is_empty(), "{}", report.join("\n"));
    eprintln!("the farthest of 23 pictures is {worst} bits from the C++ reference");
}
