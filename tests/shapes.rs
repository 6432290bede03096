//! Real upload shapes through the gateway process: web forms (curl `-F`, and a form laid
//! out the way browsers send it) and S3 aws-chunked payloads, against a real nginx origin
//! and the embedded store. The object inside the body is what must be caught; the body
//! itself must arrive unchanged.

mod common;

use std::path::Path;
use std::process::Command;

use common::procs::*;

/// A multipart/form-data body as browsers lay it out: a text field, then files.
fn browser_form(boundary: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nholiday\r\n"
    )
    .into_bytes();
    for (i, (name, bytes)) in files.iter().enumerate() {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file{i}\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

/// `bytes` in aws-chunked framing, in chunks of `chunk` bytes, signed (fake signatures:
/// the origin here does not check them) or unsigned with a checksum trailer.
fn aws_chunked(bytes: &[u8], chunk: usize, signed: bool) -> Vec<u8> {
    let sig = ";chunk-signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let ext = if signed { sig } else { "" };
    let mut body = Vec::new();
    for piece in bytes.chunks(chunk) {
        body.extend_from_slice(format!("{:x}{ext}\r\n", piece.len()).as_bytes());
        body.extend_from_slice(piece);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("0{ext}\r\n").as_bytes());
    if !signed {
        body.extend_from_slice(b"x-amz-checksum-crc32:AAAAAA==\r\n");
    }
    body.extend_from_slice(b"\r\n");
    body
}

fn aws_headers(decoded: usize, signed: bool) -> Vec<String> {
    let mode = if signed {
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    } else {
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    };
    [
        "Content-Encoding: aws-chunked".to_string(),
        format!("x-amz-content-sha256: {mode}"),
        format!("x-amz-decoded-content-length: {decoded}"),
        "x-amz-trailer: x-amz-checksum-crc32".to_string(),
    ]
    .to_vec()
}

fn put_body(url: &str, body: &Path, headers: &[String]) -> u16 {
    let mut args = vec!["-X".to_string(), "PUT".into(), "--data-binary".into()];
    args.push(format!("@{}", body.display()));
    for h in headers {
        args.push("-H".into());
        args.push(h.clone());
    }
    args.push(url.into());
    curl(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn a_listed_file_in_a_web_form_is_refused_and_clean_forms_are_stored_unchanged() {
    let s = Setup::new();
    let store = s.path("store");
    let (_gw, port, _) = s.gateway(&["--store", store.to_str().unwrap()], &[]);
    let url = |k: &str| format!("http://127.0.0.1:{port}/{k}");
    let listed = s.listed.to_str().unwrap();
    let clean = s.clean.to_str().unwrap();

    // curl -F with several files, one of them listed (not the first).
    let form = |args: &[&str], key: &str| {
        let mut all = args.to_vec();
        all.push(key);
        curl(&all)
    };
    let status = form(
        &[
            "-F",
            "title=holiday",
            "-F",
            &format!("a=@{clean}"),
            "-F",
            &format!("b=@{listed};filename=innocent.jpg"),
        ],
        &url("forms/one-listed"),
    );
    assert_eq!(status, 451);
    assert_eq!(
        form(
            &["-F", &format!("a=@{clean}"), "-F", "note=hi"],
            &url("forms/clean")
        ),
        201
    );

    // A browser-shaped form: stored byte for byte as sent.
    let clean_bytes = std::fs::read(&s.clean).unwrap();
    let listed_bytes = std::fs::read(&s.listed).unwrap();
    let boundary = "----WebKitFormBoundary7MA4YWxkTrZu0gW";
    let content_type = format!("Content-Type: multipart/form-data; boundary={boundary}");
    let body = browser_form(boundary, &[("a.bin", &clean_bytes), ("b.txt", b"small")]);
    std::fs::write(s.path("form-clean.txt"), &body).unwrap();
    let post = |file: &str, key: &str| {
        curl(&[
            "--data-binary",
            &format!("@{}", s.path(file).display()),
            "-H",
            &content_type,
            &url(key),
        ])
    };
    assert_eq!(post("form-clean.txt", "forms/browser"), 201);
    assert_eq!(std::fs::read(store.join("forms/browser")).unwrap(), body);
    let body = browser_form(
        boundary,
        &[("a.bin", &clean_bytes), ("x.jpg", &listed_bytes)],
    );
    std::fs::write(s.path("form-listed.txt"), &body).unwrap();
    assert_eq!(post("form-listed.txt", "forms/browser-listed"), 451);

    // Malformed multipart bodies cannot be inspected: 422 (the `uninspectable` policy's
    // default for malformed bodies is to block), nothing stored.
    let mut truncated = body.clone();
    truncated.truncate(body.len() - 200);
    std::fs::write(s.path("form-truncated.txt"), &truncated).unwrap();
    assert_eq!(post("form-truncated.txt", "forms/truncated"), 422);
    std::fs::write(s.path("form-garbage.txt"), b"this is not a form at all").unwrap();
    assert_eq!(post("form-garbage.txt", "forms/garbage"), 422);

    let mut stored: Vec<String> = files_under(&store.join("forms"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    stored.sort();
    assert_eq!(stored, ["browser", "clean"]);

    // The audit record names the part the listed file was in.
    let audit = std::fs::read_to_string(s.path("audit.log")).unwrap();
    let records: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (hits, problems): (Vec<_>, Vec<_>) = records.iter().partition(|r| r["action"] == "block");
    assert_eq!(hits.len(), 2, "{audit}");
    assert_eq!(hits[0]["part"], "innocent.jpg");
    assert_eq!(hits[1]["part"], "x.jpg");
    assert_eq!(hits[1]["layers"], "multipart>file");
    // Each malformed body has its own record, saying why.
    assert_eq!(problems.len(), 2, "{audit}");
    for p in problems {
        assert_eq!(p["action"], "uninspectable-block");
        assert!(p["problem"].as_str().unwrap().starts_with("malformed: "));
    }
}

#[test]
fn aws_chunked_uploads_are_decoded_for_hashing_and_forwarded_unchanged() {
    let s = Setup::new();
    let (_nginx, origin, root) = s.nginx();
    let (_gw, port, _) = s.gateway(&["--origin", &format!("http://127.0.0.1:{origin}")], &[]);
    let url = |k: &str| format!("http://127.0.0.1:{port}/{k}");
    let listed = std::fs::read(&s.listed).unwrap();
    let clean = std::fs::read(&s.big_clean).unwrap();

    for signed in [false, true] {
        let body = aws_chunked(&listed, 64 * 1024, signed);
        std::fs::write(s.path("aws-listed"), &body).unwrap();
        let status = put_body(
            &url(&format!("bucket/listed-{signed}")),
            &s.path("aws-listed"),
            &aws_headers(listed.len(), signed),
        );
        assert_eq!(status, 451, "signed: {signed}");

        let body = aws_chunked(&clean, 1 << 20, signed);
        std::fs::write(s.path("aws-clean"), &body).unwrap();
        let key = format!("bucket/clean-{signed}");
        let status = put_body(
            &url(&key),
            &s.path("aws-clean"),
            &aws_headers(clean.len(), signed),
        );
        assert_eq!(status, 201);
        // The origin got the request exactly as the client framed it.
        assert_eq!(std::fs::read(root.join(&key)).unwrap(), body);
    }

    // Broken framing, or a payload that disagrees with its declared length: 400.
    let mut broken = aws_chunked(&clean[..100_000], 10_000, false);
    broken.truncate(broken.len() - 40);
    std::fs::write(s.path("aws-broken"), &broken).unwrap();
    assert_eq!(
        put_body(
            &url("bucket/broken"),
            &s.path("aws-broken"),
            &aws_headers(100_000, false)
        ),
        400
    );
    std::fs::write(s.path("aws-short"), aws_chunked(&clean[..1000], 100, false)).unwrap();
    assert_eq!(
        put_body(
            &url("bucket/short"),
            &s.path("aws-short"),
            &aws_headers(5000, false)
        ),
        400
    );
    let mut stored: Vec<String> = files_under(&root.join("bucket"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    stored.sort();
    assert_eq!(stored, ["clean-false", "clean-true"]);
    assert!(files_under(&s.path("nginx-temp")).is_empty());
}

#[test]
fn responses_are_checked_refused_or_cut_and_their_digests_cached_by_etag() {
    let s = Setup::new();
    let (_nginx, origin, root) = s.nginx();
    let dl = root.join("dl");
    std::fs::create_dir_all(&dl).unwrap();
    for (name, from) in [
        ("listed.bin", &s.listed),
        ("clean.bin", &s.big_clean),
        ("small.bin", &s.clean),
    ] {
        std::fs::copy(from, dl.join(name)).unwrap();
    }
    let get = |port: u16, name: &str, extra: &[&str]| {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}"])
            .args(extra)
            .arg(format!("http://127.0.0.1:{port}/dl/{name}"))
            .output()
            .unwrap();
        let mut body = out.stdout;
        let at = body.iter().rposition(|&b| b == b'\n').unwrap();
        let status: u16 = String::from_utf8_lossy(&body[at + 1..])
            .parse()
            .unwrap_or(0);
        body.truncate(at);
        (status, body, out.status.code().unwrap_or(-1))
    };
    let origin_url = format!("http://127.0.0.1:{origin}");

    // Buffered below 4 MiB: the 3 MiB listed file is answered 451, not one byte sent,
    // also when asked for a range or a compressed copy.
    let (_gw, port, admin) = s.configured_gateway(&format!(
        "origin = \"{origin_url}\"\nscan_responses = true\nresponse_buffer_bytes = 4194304\n"
    ));
    let listed = std::fs::read(&s.listed).unwrap();
    assert_eq!(get(port, "listed.bin", &[]).0, 451);
    assert_eq!(get(port, "listed.bin", &["-r", "0-99"]).0, 451);
    assert_eq!(get(port, "listed.bin", &["--compressed"]).0, 451);
    for (name, file) in [("clean.bin", &s.big_clean), ("small.bin", &s.clean)] {
        let (status, body, _) = get(port, name, &[]);
        assert_eq!(status, 200, "{name}");
        assert_eq!(
            body,
            std::fs::read(file).unwrap(),
            "{name} changed on the way"
        );
    }
    // Asked again: decided from the cached digests, still refused and audited.
    let (status, _, _) = get(port, "listed.bin", &[]);
    assert_eq!(status, 451);
    let metrics = String::from_utf8(
        Command::new("curl")
            .args(["-s", &format!("http://127.0.0.1:{admin}/metrics")])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        metrics.contains("hashgate_response_cache_hits_total 3"),
        "{metrics}"
    );
    let audit = std::fs::read_to_string(s.path("audit.log")).unwrap();
    assert_eq!(audit.lines().count(), 4, "{audit}");
    // A new object under a clean name gets a new ETag (nginx's: mtime and length) and is
    // hashed afresh: its mtime is set two seconds on rather than waited for.
    std::fs::copy(&s.listed, dl.join("small.bin")).unwrap();
    let later = std::fs::metadata(dl.join("small.bin"))
        .unwrap()
        .modified()
        .unwrap()
        + std::time::Duration::from_secs(2);
    std::fs::File::options()
        .write(true)
        .open(dl.join("small.bin"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert_eq!(get(port, "small.bin", &[]).0, 451);
    std::fs::copy(&s.clean, dl.join("small.bin")).unwrap();

    // Streamed (the default 1 MiB buffer): the listed file is cut before its end.
    let (_gw2, port2, _) = s.gateway(&["--origin", &origin_url, "--scan-responses"], &[]);
    let (status, body, code) = get(port2, "listed.bin", &[]);
    assert_eq!(status, 200, "the headers went out before the verdict");
    assert_ne!(code, 0, "curl must see a broken transfer");
    assert!(body.len() < listed.len());
    let (status, body, code) = get(port2, "clean.bin", &[]);
    assert_eq!((status, code), (200, 0));
    assert_eq!(body, std::fs::read(&s.big_clean).unwrap());
}

#[test]
fn blocked_uploads_are_quarantined_as_evidence_and_clean_ones_leave_nothing() {
    let s = Setup::new();
    let (_nginx, origin, root) = s.nginx();
    let quarantine = s.path("quarantine");
    let (_gw, port, _) = s.gateway(
        &["--origin", &format!("http://127.0.0.1:{origin}")],
        &["--quarantine", quarantine.to_str().unwrap()],
    );
    let url = |k: &str| format!("http://127.0.0.1:{port}/{k}");
    let put = |file: &Path, key: &str| {
        let out = Command::new("curl")
            .args(["-s", "-H", "Expect:", "-D", "-", "-o", "/dev/null", "-T"])
            .arg(file)
            .arg(url(key))
            .output()
            .unwrap();
        let head = String::from_utf8_lossy(&out.stdout).to_string();
        let id = head
            .lines()
            .find_map(|l| l.strip_prefix("x-request-id: "))
            .unwrap_or("")
            .trim()
            .to_string();
        (head.lines().next().unwrap_or("").to_string(), id)
    };
    let (status, id) = put(&s.listed, "q/listed.bin");
    assert!(status.contains(" 451"), "{status}");
    assert!(put(&s.clean, "q/clean.bin").0.contains(" 201"));
    assert!(put(&s.big_clean, "q/big.bin").0.contains(" 201"));

    let kept = quarantine.join(format!("{id}.body"));
    assert_eq!(
        files_under(&quarantine),
        std::slice::from_ref(&kept),
        "only the blocked body is kept"
    );
    assert_eq!(
        std::fs::read(&kept).unwrap(),
        std::fs::read(&s.listed).unwrap()
    );
    let audit = std::fs::read_to_string(s.path("audit.log")).unwrap();
    let record: serde_json::Value = serde_json::from_str(audit.lines().next().unwrap()).unwrap();
    assert_eq!(record["action"], "block");
    assert_eq!(record["request_id"], id.as_str());
    assert_eq!(record["quarantine"], kept.display().to_string());
    assert!(!root.join("q/listed.bin").exists());

    // The quarantine must never be servable from the embedded store.
    let store = s.path("store");
    std::fs::create_dir_all(&store).unwrap();
    let out = s.gateway_run(&[
        "--store",
        store.to_str().unwrap(),
        "--quarantine",
        store.join("q").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("quarantine"));
}
