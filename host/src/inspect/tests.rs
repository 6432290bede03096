//! The walk over inputs made in memory: nesting, codings, limits, malformed containers.
//! (Archives made by real tools, through real front-ends: `tests/inspect.rs`.)

use std::io::{Cursor, Write};
use std::time::{Duration, Instant};

use sha2::Digest as _;

use super::*;

const SHA256: [Algorithm; 1] = [Algorithm::Sha256];

/// A reader that hands out at most `.1` bytes a read, so parsers see every split.
pub(super) struct Trickle<'a>(pub &'a [u8], pub usize);

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.1).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

fn sha(data: &[u8]) -> Vec<u8> {
    sha2::Sha256::digest(data).to_vec()
}

fn walk(input: &[u8], envelope: &Envelope, limits: &Limits) -> Report {
    inspect_reader(
        &mut Cursor::new(input),
        envelope,
        Hashes::digests(&SHA256),
        limits,
        Some(input.len() as u64),
    )
    .unwrap()
}

/// The node whose content is `data`, if any.
fn find<'r>(report: &'r Report, data: &[u8]) -> Option<&'r Node> {
    let digest = sha(data);
    report.nodes.iter().find(|n| n.digests[0].bytes == digest)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn tar(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn zip(members: &[(&str, &[u8])], method: zip::CompressionMethod) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(method);
    for (name, data) in members {
        w.start_file(*name, options).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn listed() -> Vec<u8> {
    (0..100_000u32)
        .flat_map(|i| (i * 7919).to_le_bytes())
        .collect()
}

#[test]
fn a_plain_object_is_one_node() {
    let data = b"just some bytes, no container".repeat(100);
    let r = walk(&data, &Envelope::default(), &Limits::default());
    assert_eq!(r.nodes.len(), 1);
    assert!(r.nodes[0].is_root());
    assert_eq!(r.nodes[0].digests[0].bytes, sha(&data));
    assert!(r.problems.is_empty());
    let empty = walk(b"", &Envelope::default(), &Limits::default());
    assert_eq!(empty.nodes.len(), 1, "an empty body is still its root");
}

#[test]
fn a_zip_in_a_tar_gz_in_a_zip_is_opened_to_the_bottom() {
    let file = listed();
    let inner = zip(&[("photos/a.jpg", &file)], zip::CompressionMethod::Deflated);
    let tgz = gzip(&tar(&[("docs/readme", b"hello"), ("inner.zip", &inner)]));
    let outer = zip(&[("bundle.tar.gz", &tgz)], zip::CompressionMethod::Stored);
    let r = walk(&outer, &Envelope::default(), &Limits::default());
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    let node = find(&r, &file).expect("the listed file is a node");
    assert_eq!(
        node.member_label().as_deref(),
        Some("bundle.tar.gz!inner.zip!photos/a.jpg")
    );
    assert_eq!(node.layers_label(), "zip>gzip>tar>zip>file");
    assert_eq!(node.size, file.len() as u64);
    // Every level is a node of its own: the raw body, each archive as stored.
    for level in [&outer[..], &tgz, &inner] {
        assert!(find(&r, level).is_some());
    }
    assert!(find(&r, b"hello").is_some());
    assert_eq!(r.root().unwrap().digests[0].bytes, sha(&outer));
}

#[test]
fn declared_codings_are_undone_last_first() {
    let file = listed();
    let body = zstd::stream::encode_all(&gzip(&file)[..], 3).unwrap();
    let envelope = Envelope {
        codings: vec![Coding::Gzip, Coding::Zstd],
        boundary: None,
    };
    let r = walk(&body, &envelope, &Limits::default());
    let node = find(&r, &file).unwrap();
    assert_eq!(node.layers_label(), "zstd>gzip>file");
    // Raw deflate and zlib both pass for `deflate`.
    for deflated in [
        {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&file).unwrap();
            e.finish().unwrap()
        },
        {
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&file).unwrap();
            e.finish().unwrap()
        },
    ] {
        let envelope = Envelope {
            codings: vec![Coding::Deflate],
            boundary: None,
        };
        let r = walk(&deflated, &envelope, &Limits::default());
        assert!(find(&r, &file).is_some());
        assert!(r.problems.is_empty(), "{:?}", r.problems);
    }
}

#[test]
fn multipart_parts_with_base64_and_nested_multipart_are_objects() {
    use base64::Engine as _;
    let file = listed();
    let zipped = zip(&[("x.bin", &file)], zip::CompressionMethod::Deflated);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&zipped);
    let lines: Vec<&[u8]> = b64.as_bytes().chunks(76).collect();
    let b64 = lines.join(&b"\r\n"[..]);
    let mut body = Vec::new();
    body.extend_from_slice(
        b"--outer\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n",
    );
    body.extend_from_slice(b"--outer\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.zip\"\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    body.extend_from_slice(&b64);
    body.extend_from_slice(b"\r\n--outer\r\nContent-Type: multipart/mixed; boundary=inner\r\n\r\n--inner\r\nContent-Disposition: attachment; filename=\"raw.bin\"\r\n\r\n");
    body.extend_from_slice(&file);
    body.extend_from_slice(b"\r\n--inner--\r\n\r\n--outer--\r\n");
    let envelope = Envelope::http(None, None, Some("multipart/form-data; boundary=outer")).unwrap();
    let r = walk(&body, &envelope, &Limits::default());
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    let found: Vec<(Option<String>, String)> = r
        .nodes
        .iter()
        .filter(|n| n.digests[0].bytes == sha(&file))
        .map(|n| (n.member_label(), n.layers_label()))
        .collect();
    assert!(found.contains(&(
        Some("a.zip!x.bin".into()),
        "multipart>base64>zip>file".into()
    )));
    assert!(found.contains(&(
        Some("part 3!raw.bin".into()),
        "multipart>multipart>file".into()
    )));
    assert!(find(&r, &zipped).is_some(), "the decoded zip itself");
}

#[test]
fn a_gzip_bomb_trips_the_decoded_bytes_limit_fast() {
    // 1 GiB of zeros in about 1 MiB of gzip.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        e.write_all(&zeros).unwrap();
    }
    let bomb = e.finish().unwrap();
    assert!(bomb.len() < 2 << 20);
    let started = Instant::now();
    let r = walk(&bomb, &Envelope::default(), &Limits::default());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert_eq!(r.problems[0].kind, ProblemKind::Limit);
    assert_eq!(
        r.root().unwrap().digests[0].bytes,
        sha(&bomb),
        "the root is whole"
    );
}

#[test]
fn nesting_deeper_than_the_limit_is_a_limit_problem() {
    let mut level = listed();
    for i in 0..6 {
        level = zip(
            &[(&format!("level{i}.zip"), &level)],
            zip::CompressionMethod::Stored,
        );
    }
    let r = walk(&level, &Envelope::default(), &Limits::default());
    assert!(r
        .problems
        .iter()
        .any(|p| p.kind == ProblemKind::Limit && p.detail.contains("nested")));
    let shallow = Limits {
        max_depth: 10,
        ..Limits::default()
    };
    let r = walk(&level, &Envelope::default(), &shallow);
    assert!(r.problems.is_empty());
    assert!(find(&r, &listed()).is_some());
}

#[test]
fn entries_and_time_are_bounded() {
    let many: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| (format!("f{i}"), vec![i as u8; 10]))
        .collect();
    let members: Vec<(&str, &[u8])> = many.iter().map(|(n, d)| (n.as_str(), &d[..])).collect();
    let few = Limits {
        max_entries: 10,
        ..Limits::default()
    };
    for archive in [zip(&members, zip::CompressionMethod::Stored), tar(&members)] {
        let r = walk(&archive, &Envelope::default(), &few);
        assert!(r.problems.iter().any(|p| p.kind == ProblemKind::Limit));
    }
    let no_time = Limits {
        max_time: Duration::ZERO,
        ..Limits::default()
    };
    std::thread::sleep(Duration::from_millis(2));
    let r = walk(&gzip(&listed()), &Envelope::default(), &no_time);
    assert_eq!(r.problems[0].kind, ProblemKind::Limit);
}

#[test]
fn broken_containers_are_malformed_and_their_bytes_still_hashed() {
    let gz = gzip(&listed());
    let truncated = &gz[..gz.len() / 2];
    let r = walk(truncated, &Envelope::default(), &Limits::default());
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert_eq!(r.problems[0].kind, ProblemKind::Malformed);
    assert_eq!(r.root().unwrap().digests[0].bytes, sha(truncated));

    let z = zip(&[("a", &listed())], zip::CompressionMethod::Stored);
    let r = walk(&z[..z.len() - 30], &Envelope::default(), &Limits::default());
    assert_eq!(r.problems[0].kind, ProblemKind::Malformed);

    // A body declared gzip that is not.
    let envelope = Envelope {
        codings: vec![Coding::Gzip],
        boundary: None,
    };
    let r = walk(b"plain text", &envelope, &Limits::default());
    assert_eq!(r.problems[0].kind, ProblemKind::Malformed);
}

#[test]
fn a_local_header_the_central_directory_does_not_list_is_malformed() {
    // A stored member whose local header and data sit before a zip's own: a streaming
    // extractor finds it, the central directory does not list it.
    let hidden = zip(&[("hidden.bin", &listed())], zip::CompressionMethod::Stored);
    let cd = hidden.windows(4).rposition(|w| w == b"PK\x01\x02").unwrap();
    let mut crafted = hidden[..cd].to_vec();
    crafted.extend_from_slice(&zip(
        &[("shown.txt", b"innocent")],
        zip::CompressionMethod::Stored,
    ));
    let r = walk(&crafted, &Envelope::default(), &Limits::default());
    assert!(
        r.problems
            .iter()
            .any(|p| p.kind == ProblemKind::Malformed && p.detail.contains("does not list")),
        "{:?}",
        r.problems
    );
}

#[test]
fn overlapping_zip_entries_are_malformed() {
    // Two central-directory entries pointing at one local header (the overlap bomb's
    // trick): the second entry's offset is rewritten to the first's.
    let z = zip(
        &[("a", b"same"), ("b", b"same")],
        zip::CompressionMethod::Stored,
    );
    let mut z = z;
    let entries: Vec<usize> = z
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == b"PK\x01\x02")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(entries.len(), 2);
    z[entries[1] + 42..entries[1] + 46].copy_from_slice(&0u32.to_le_bytes());
    let r = walk(&z, &Envelope::default(), &Limits::default());
    assert!(
        r.problems.iter().any(|p| p.kind == ProblemKind::Malformed),
        "{:?}",
        r.problems
    );
}

#[test]
fn archives_off_hashes_only_the_object_and_its_declared_codings() {
    let file = listed();
    let tgz = gzip(&tar(&[("a", &file)]));
    let off = Limits {
        archives: false,
        ..Limits::default()
    };
    let r = walk(&tgz, &Envelope::default(), &off);
    assert_eq!(r.nodes.len(), 1);
    let envelope = Envelope {
        codings: vec![Coding::Gzip],
        boundary: None,
    };
    let r = walk(&gzip(&file), &envelope, &off);
    assert!(find(&r, &file).is_some());
}

#[test]
fn names_print_unambiguously() {
    assert_eq!(escape_name(b"a\nb"), "a\\nb");
    assert_eq!(escape_name(b"a\\nb"), "a\\\\nb");
    assert_eq!(escape_name(b"caf\xc3\xa9\xff"), "café\\xff");
    assert_ne!(escape_name(b"\xfe"), escape_name(b"\xff"));
}

#[test]
fn hostile_member_names_are_kept_as_names() {
    // Nothing is extracted, so `..` and absolute names are only names: the member is
    // hashed and named as the archive names it.
    let file = listed();
    let z = zip(
        &[("../../etc/cron.d/x", &file), ("/abs/path", b"other")],
        zip::CompressionMethod::Stored,
    );
    let r = walk(&z, &Envelope::default(), &Limits::default());
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(
        find(&r, &file).unwrap().member_label().as_deref(),
        Some("../../etc/cron.d/x")
    );
}

#[test]
fn a_crafted_bzip2_stream_is_malformed_not_a_crash() {
    // Found by `cargo fuzz run inspect_pipeline`: libbz2-rs-sys 0.2.6 indexes out of
    // bounds on this stream inside an `extern "C"` function, which aborts the process
    // (so the host uses the C libbz2).
    let crash = include_bytes!("testdata/bzip2-panics-libbz2-rs-sys.bz2");
    let r = walk(crash, &Envelope::default(), &Limits::default());
    assert_eq!(
        r.root().unwrap().digests[0].bytes,
        sha(crash),
        "the root is whole"
    );
    assert!(
        r.problems.iter().any(|p| p.kind == ProblemKind::Malformed),
        "{:?}",
        r.problems
    );
}

#[test]
fn a_corrupt_xz_stream_ends_as_malformed_alone_or_in_a_zip() {
    // Found by `cargo fuzz run inspect_pipeline`: lzma-rust2 0.25's XzReader loops
    // forever on this stream (so the host decodes xz with the C liblzma, and zip members
    // compressed with xz are not decoded: they are a problem for the policy).
    let xz = include_bytes!("testdata/xz-loops-lzma-rust2.xz");
    let started = Instant::now();
    let r = walk(xz, &Envelope::default(), &Limits::default());
    assert!(r.problems.iter().any(|p| p.kind == ProblemKind::Malformed));
    // The same bytes as a zip member with method 95 (xz).
    let mut z = zip(&[("m.bin", xz)], zip::CompressionMethod::Stored);
    let local = z.windows(4).position(|w| w == b"PK\x03\x04").unwrap();
    let central = z.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    z[local + 8..local + 10].copy_from_slice(&95u16.to_le_bytes());
    z[central + 10..central + 12].copy_from_slice(&95u16.to_le_bytes());
    let r = walk(&z, &Envelope::default(), &Limits::default());
    // The member cannot be read: a problem (malformed, so blocked by default), not a hang.
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(r.problems[0]
        .detail
        .contains("compression method not supported"));
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A PNG of `side` x `side` pixels with a pattern PDQ finds features in.
fn png(side: u32) -> Vec<u8> {
    let picture = image::RgbImage::from_fn(side, side, |x, y| {
        image::Rgb([((x * 7) ^ (y * 13)) as u8, (x * y) as u8, (x + y) as u8])
    });
    let mut out = Cursor::new(Vec::new());
    picture.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn walk_pictures(input: &[u8], limits: &Limits) -> Report {
    let hashes = Hashes {
        algorithms: &SHA256,
        pictures: true,
    };
    let mut reader = Cursor::new(input);
    inspect_reader(&mut reader, &Envelope::default(), hashes, limits, None).unwrap()
}

#[test]
fn pictures_get_a_pdq_at_any_depth_only_when_the_filter_holds_pdq() {
    let picture = png(96);
    let archive = zip(
        &[("a.png", &picture), ("notes.txt", b"not a picture at all")],
        zip::CompressionMethod::Deflated,
    );
    let report = walk_pictures(&archive, &Limits::default());
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let member = find(&report, &picture).unwrap();
    let pdq = &member
        .picture
        .as_ref()
        .expect("the member is PDQ-hashed")
        .pdq;
    assert_eq!(pdq.hashes.len(), 1);
    assert!(find(&report, b"not a picture at all")
        .unwrap()
        .picture
        .is_none());
    assert!(
        report.root().unwrap().picture.is_none(),
        "a zip is not a picture"
    );
    // The same picture as sent, and in a filter without PDQ: no PDQ at all.
    assert_eq!(
        walk_pictures(&picture, &Limits::default()).nodes[0]
            .picture
            .as_ref()
            .unwrap()
            .pdq,
        *pdq
    );
    assert!(walk(&archive, &Envelope::default(), &Limits::default())
        .nodes
        .iter()
        .all(|n| n.picture.is_none()));
    let off = Limits {
        pictures: None,
        ..Limits::default()
    };
    assert!(walk_pictures(&picture, &off).nodes[0].picture.is_none());
}

#[test]
fn a_picture_over_the_budget_is_a_picture_problem_and_a_broken_one_malformed() {
    let picture = png(96);
    let small = Limits {
        pictures: Some(PictureBudget {
            max_bytes: picture.len() as u64 - 1,
            ..PictureBudget::default()
        }),
        ..Limits::default()
    };
    let report = walk_pictures(&picture, &small);
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].kind, ProblemKind::Picture);
    assert!(report.nodes[0].picture.is_none());
    // Its digest is still there.
    assert_eq!(report.nodes[0].digests[0].bytes, sha(&picture));

    let report = walk_pictures(&picture[..picture.len() / 2], &Limits::default());
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].kind, ProblemKind::Malformed);
}
