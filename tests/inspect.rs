//! What the bytes carry, through the real binary: a listed file wrapped the ways ordinary
//! tools wrap it (gzip, xz, zstd, brotli, zip, tar, 7z, Python's zipfile, curl's forms and
//! content codings), uploaded through the gateway to the embedded store and to a real
//! nginx, and found at rest by `scan`. Listed → refused and nothing stored; clean → stored
//! byte for byte. scripts/test.sh installs the tools.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::procs::*;

/// One way to send a file: the body (a file made by a tool from `payload`) and the
/// headers it goes with.
struct Wrapping {
    name: &'static str,
    /// Shell line making `body` from `payload` in the work directory.
    make: &'static str,
    headers: &'static [&'static str],
}

const WRAPPINGS: &[Wrapping] = &[
    Wrapping {
        name: "content-encoding-gzip",
        make: "gzip -c payload > body",
        headers: &["Content-Encoding: gzip"],
    },
    Wrapping {
        name: "content-encoding-x-gzip-two-members",
        make: "head -c 1000 payload | gzip -c > body && tail -c +1001 payload | gzip -c >> body",
        headers: &["Content-Encoding: x-gzip"],
    },
    Wrapping {
        name: "content-encoding-deflate-zlib",
        make: "python3 -c 'import sys,zlib; sys.stdout.buffer.write(zlib.compress(open(\"payload\",\"rb\").read()))' > body",
        headers: &["Content-Encoding: deflate"],
    },
    Wrapping {
        name: "content-encoding-deflate-raw",
        make: "python3 -c 'import sys,zlib; c=zlib.compressobj(6, zlib.DEFLATED, -15); sys.stdout.buffer.write(c.compress(open(\"payload\",\"rb\").read())+c.flush())' > body",
        headers: &["Content-Encoding: deflate"],
    },
    Wrapping {
        name: "content-encoding-zstd",
        make: "zstd -q -c payload > body",
        headers: &["Content-Encoding: zstd"],
    },
    Wrapping {
        name: "content-encoding-br",
        make: "brotli -q 5 -c payload > body",
        headers: &["Content-Encoding: br"],
    },
    Wrapping {
        name: "content-encoding-gzip-then-zstd",
        make: "gzip -c payload | zstd -q -c > body",
        headers: &["Content-Encoding: gzip, zstd"],
    },
    Wrapping {
        name: "zip-stored",
        make: "zip -q -0 body.zip payload && mv body.zip body",
        headers: &[],
    },
    Wrapping {
        name: "zip-deflated-in-a-folder",
        make: "mkdir -p photos && cp payload photos/a.jpg && zip -q -r body.zip photos && mv body.zip body",
        headers: &["Content-Type: image/jpeg"],
    },
    Wrapping {
        name: "zip-bzip2",
        make: "zip -q -Z bzip2 body.zip payload && mv body.zip body",
        headers: &[],
    },
    Wrapping {
        name: "zip-python-lzma",
        make: "python3 -c 'import zipfile; z=zipfile.ZipFile(\"body\",\"w\",zipfile.ZIP_LZMA); z.write(\"payload\"); z.close()'",
        headers: &[],
    },
    Wrapping {
        name: "docx-like",
        make: "python3 -c 'import zipfile; z=zipfile.ZipFile(\"body\",\"w\",zipfile.ZIP_DEFLATED); z.writestr(\"[Content_Types].xml\",\"<Types/>\"); z.writestr(\"word/document.xml\",\"<w:document/>\"); z.write(\"payload\",\"word/media/image1.png\"); z.close()'",
        headers: &["Content-Type: application/vnd.openxmlformats-officedocument.wordprocessingml.document"],
    },
    Wrapping {
        name: "tar",
        make: "tar cf body payload",
        headers: &[],
    },
    Wrapping {
        name: "tar-gz",
        make: "tar czf body payload",
        headers: &[],
    },
    Wrapping {
        name: "tar-xz",
        make: "tar cJf body payload",
        headers: &[],
    },
    Wrapping {
        name: "tar-zst",
        make: "tar --zstd -cf body payload",
        headers: &[],
    },
    Wrapping {
        name: "tar-bz2-pax-long-name",
        make: "d=$(printf 'd%.0s' $(seq 1 120)) && mkdir -p $d && cp payload $d/file && tar --format=pax -cjf body $d",
        headers: &[],
    },
    Wrapping {
        name: "tar-gnu-long-name",
        make: "d=$(printf 'g%.0s' $(seq 1 120)) && mkdir -p $d && cp payload $d/file && tar --format=gnu -cf body $d",
        headers: &[],
    },
    Wrapping {
        name: "zip-in-tar-gz-in-zip",
        make: "zip -q inner.zip payload && tar czf mid.tgz inner.zip && zip -q -0 body.zip mid.tgz && mv body.zip body",
        headers: &[],
    },
    Wrapping {
        name: "7z",
        make: "7z a -bd -bso0 body.7z payload && mv body.7z body",
        headers: &[],
    },
    Wrapping {
        name: "gzip-file",
        make: "gzip -c payload > body",
        headers: &["Content-Type: application/gzip"],
    },
    Wrapping {
        name: "xz-file",
        make: "xz -c payload > body",
        headers: &[],
    },
];

/// Makes `wrapping`'s body from `payload` in a fresh directory under `work`.
fn wrap(work: &Path, wrapping: &Wrapping, payload: &Path) -> PathBuf {
    let dir = work.join(wrapping.name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(payload, dir.join("payload")).unwrap();
    sh(&dir, wrapping.make);
    dir.join("body")
}

fn put(url: &str, body: &Path, headers: &[&str]) -> u16 {
    let data = format!("@{}", body.display());
    let mut args = vec!["-X", "PUT", "--data-binary", &data];
    for h in headers {
        args.extend(["-H", h]);
    }
    args.push(url);
    curl(&args)
}

#[test]
fn every_ordinary_wrapping_of_a_listed_file_is_refused_and_of_a_clean_one_stored() {
    let s = Setup::new();
    let store = s.path("store");
    let (_gw, port, _) = s.gateway(&["--store", store.to_str().unwrap()], &[]);
    let (_nginx, origin, root) = s.nginx();
    let origin_url = format!("http://127.0.0.1:{origin}");
    let (_proxy, proxy_port, _) = s.gateway(&["--origin", &origin_url], &[]);
    let work = s.path("work");
    let bodies: Vec<(PathBuf, PathBuf)> = WRAPPINGS
        .iter()
        .map(|w| {
            (
                wrap(&work.join("listed"), w, &s.listed),
                wrap(&work.join("clean"), w, &s.clean),
            )
        })
        .collect();
    for (gateway, stored) in [(port, &store), (proxy_port, &root)] {
        for (w, (listed, clean)) in WRAPPINGS.iter().zip(&bodies) {
            let key = format!("{}-{gateway}", w.name);
            let url = format!("http://127.0.0.1:{gateway}/up/{key}");
            assert_eq!(put(&url, listed, w.headers), 451, "{}", w.name);
            assert!(!stored.join("up").join(&key).exists(), "{} stored", w.name);

            let key = format!("{}-{gateway}-clean", w.name);
            let url = format!("http://127.0.0.1:{gateway}/up/{key}");
            assert_eq!(put(&url, clean, w.headers), 201, "{} (clean)", w.name);
            assert_eq!(
                std::fs::read(stored.join("up").join(&key)).unwrap(),
                std::fs::read(clean).unwrap(),
                "{} stored as sent",
                w.name
            );
        }
    }
    // The refusal names the member that hit.
    let out = Command::new("curl")
        .args(["-s", "-T"])
        .arg(
            &bodies[WRAPPINGS
                .iter()
                .position(|w| w.name == "zip-in-tar-gz-in-zip")
                .unwrap()]
            .0,
        )
        .arg(format!("http://127.0.0.1:{port}/up/refusal"))
        .output()
        .unwrap();
    let refusal: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(refusal["status"], 451);
    assert_eq!(refusal["member"], "mid.tgz!inner.zip!payload");
    assert_eq!(refusal["layers"], "zip>gzip>tar>zip>file");
    // The audit names the member, its layers and its decoded size.
    let audit = std::fs::read_to_string(s.path("audit.log")).unwrap();
    let records: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let nested = records
        .iter()
        .find(|r| r["path"].as_str().unwrap().contains("zip-in-tar-gz-in-zip"))
        .unwrap();
    assert_eq!(nested["part"], "mid.tgz!inner.zip!payload");
    assert_eq!(nested["layers"], "zip>gzip>tar>zip>file");
    assert_eq!(nested["size"], 3 << 20);
}

/// A raw HTTP/1.1 exchange (for framings curl does not send): the status code.
fn raw_request(port: u16, head: &str, body: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn chunked(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in data.chunks(100_000) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[test]
fn transfer_and_content_codings_the_gateway_cannot_undo_are_refused() {
    let s = Setup::new();
    let store = s.path("store");
    let (_gw, port, _) = s.gateway(&["--store", store.to_str().unwrap()], &[]);
    let work = s.path("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::copy(&s.listed, work.join("payload")).unwrap();
    sh(&work, "gzip -c payload > payload.gz");
    let gz = std::fs::read(work.join("payload.gz")).unwrap();

    // Transfer-Encoding: gzip, chunked (RFC 9112 §6.1): undone and inspected.
    let head = "PUT /te/listed HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_request(port, head, &chunked(&gz)), 451);
    assert!(!store.join("te/listed").exists());
    // An unknown transfer coding: 501, an unknown content coding: 415.
    let head = "PUT /te/unknown HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: compress, chunked\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_request(port, head, &chunked(b"abc")), 501);
    assert_eq!(
        put(
            &format!("http://127.0.0.1:{port}/ce/unknown"),
            &s.clean,
            &["Content-Encoding: x-unknown"]
        ),
        415
    );
    // A body that does not decode as declared cannot be inspected: 422.
    assert_eq!(
        put(
            &format!("http://127.0.0.1:{port}/ce/broken"),
            &s.clean,
            &["Content-Encoding: gzip"]
        ),
        422
    );
    for key in ["te/unknown", "ce/unknown", "ce/broken"] {
        assert!(!store.join(key).exists(), "{key}");
    }
}

/// A form body laid out by hand: `parts` as (headers, data).
fn form(boundary: &str, parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (headers, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n{headers}\r\n\r\n").as_bytes());
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

#[test]
fn mime_shapes_carry_listed_files_in_base64_nested_and_related_parts() {
    use base64::Engine as _;
    let s = Setup::new();
    let store = s.path("store");
    let (_gw, port, _) = s.gateway(&["--store", store.to_str().unwrap()], &[]);
    let listed = std::fs::read(&s.listed).unwrap();
    let clean = std::fs::read(&s.clean).unwrap();
    let b64 = |data: &[u8]| {
        let text = base64::engine::general_purpose::STANDARD.encode(data);
        text.as_bytes()
            .chunks(76)
            .collect::<Vec<_>>()
            .join(&b"\r\n"[..])
    };
    let post = |key: &str, content_type: &str, body: &[u8]| {
        let file = s.path(key);
        std::fs::write(&file, body).unwrap();
        let data = format!("@{}", file.display());
        curl(&[
            "--data-binary",
            &data,
            "-H",
            &format!("Content-Type: {content_type}"),
            &format!("http://127.0.0.1:{port}/mime/{key}"),
        ])
    };
    for (data, expect, tag) in [(&listed, 451, "listed"), (&clean, 201, "clean")] {
        let base64_part = form(
            "b1",
            &[
                ("Content-Disposition: form-data; name=\"t\"", b"x"),
                (
                    "Content-Disposition: form-data; name=\"f\"; filename=\"a.bin\"\r\nContent-Transfer-Encoding: base64",
                    &b64(data),
                ),
            ],
        );
        let nested_mixed = form(
            "b2",
            &[(
                "Content-Disposition: form-data; name=\"files\"\r\nContent-Type: multipart/mixed; boundary=inner",
                &form(
                    "inner",
                    &[("Content-Disposition: file; filename=\"x.bin\"", data)],
                ),
            )],
        );
        let related = form(
            "b3",
            &[
                ("Content-Type: application/json", b"{\"name\":\"a.bin\"}"),
                ("Content-Type: application/octet-stream", data),
            ],
        );
        let qp_part = {
            // Quoted-printable: every byte escaped, as a mail client might for binary.
            let qp: String = data
                .iter()
                .take(200_000)
                .map(|b| format!("={b:02X}"))
                .collect();
            let lines: Vec<&str> = qp
                .as_bytes()
                .chunks(75)
                .map(|l| std::str::from_utf8(l).unwrap())
                .collect();
            form(
                "b4",
                &[(
                    "Content-Disposition: form-data; name=\"f\"; filename=\"q.bin\"\r\nContent-Transfer-Encoding: quoted-printable",
                    lines.join("=\r\n").as_bytes(),
                )],
            )
        };
        assert_eq!(
            post(
                &format!("base64-{tag}"),
                "multipart/form-data; boundary=b1",
                &base64_part
            ),
            expect
        );
        assert_eq!(
            post(
                &format!("mixed-{tag}"),
                "multipart/form-data; boundary=b2",
                &nested_mixed
            ),
            expect
        );
        assert_eq!(
            post(
                &format!("related-{tag}"),
                "multipart/related; boundary=b3",
                &related
            ),
            expect
        );
        if tag == "clean" {
            assert_eq!(
                std::fs::read(store.join("mime/related-clean")).unwrap(),
                related
            );
        }
        // (The QP part carries only the first 200,000 bytes: not the listed file.)
        assert_eq!(
            post(
                &format!("qp-{tag}"),
                "multipart/form-data; boundary=b4",
                &qp_part
            ),
            201
        );
    }
    // curl -F with a zip of the listed file.
    let work = s.path("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::copy(&s.listed, work.join("payload")).unwrap();
    sh(&work, "zip -q a.zip payload");
    let field = format!("file=@{}", work.join("a.zip").display());
    assert_eq!(
        curl(&[
            "-F",
            "title=x",
            "-F",
            &field,
            &format!("http://127.0.0.1:{port}/mime/curl-form")
        ]),
        451
    );
    let stored: Vec<String> = files_under(&store.join("mime"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let mut stored = stored;
    stored.sort();
    assert_eq!(
        stored,
        [
            "base64-clean",
            "mixed-clean",
            "qp-clean",
            "qp-listed",
            "related-clean"
        ]
    );
}

#[test]
fn bombs_encrypted_and_unsupported_archives_follow_the_uninspectable_policy() {
    let s = Setup::new();
    let work = s.path("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::copy(&s.listed, work.join("payload")).unwrap();
    // 10 GiB of zeros as a ~10 MiB gzip; a zip bomb of nested zips; an encrypted zip and
    // 7z; a RAR (recognised, not opened); a truncated tar.gz.
    sh(
        &work,
        "head -c 1073741824 /dev/zero | gzip -1 > g && cat g g g g g g g g g g > bomb.gz",
    );
    sh(
        &work,
        "head -c 1048576 /dev/zero > z && zip -q l1.zip z && for i in 2 3 4 5 6; do zip -q l$i.zip l$((i-1)).zip; done",
    );
    sh(&work, "zip -q -P secret enc.zip payload");
    sh(&work, "7z a -bd -bso0 -psecret -mhe=on enc.7z payload");
    sh(
        &work,
        "printf 'Rar!\\032\\007\\001\\000' > a.rar && cat payload >> a.rar",
    );
    sh(
        &work,
        "tar czf t.tgz payload && head -c 100000 t.tgz > trunc.tgz",
    );
    let store = s.path("store");
    let (gw, port, admin) = s.gateway(&["--store", store.to_str().unwrap()], &[]);
    let url = |k: &str| format!("http://127.0.0.1:{port}/b/{k}");
    let started = std::time::Instant::now();
    assert_eq!(put(&url("bomb"), &work.join("bomb.gz"), &[]), 422);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert!(rss_kb(gw.0.id()) < 200_000, "bounded memory");
    assert_eq!(put(&url("nested"), &work.join("l6.zip"), &[]), 422);
    assert_eq!(put(&url("trunc"), &work.join("trunc.tgz"), &[]), 422);
    // Encrypted and unsupported containers pass by default, audited and counted.
    assert_eq!(put(&url("enc"), &work.join("enc.zip"), &[]), 201);
    assert_eq!(put(&url("enc7z"), &work.join("enc.7z"), &[]), 201);
    assert_eq!(put(&url("rar"), &work.join("a.rar"), &[]), 201);
    let metrics = String::from_utf8(
        Command::new("curl")
            .args(["-s", &format!("http://127.0.0.1:{admin}/metrics")])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for line in [
        "hashgate_uninspectable_total{kind=\"limit\",action=\"uninspectable-block\"} 2",
        "hashgate_uninspectable_total{kind=\"malformed\",action=\"uninspectable-block\"} 1",
        "hashgate_uninspectable_total{kind=\"encrypted\",action=\"uninspectable-pass\"} 2",
        "hashgate_uninspectable_total{kind=\"unsupported\",action=\"uninspectable-pass\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    drop(gw);
    // The operator's say-so: encrypted blocks, limits pass.
    let toml = format!(
        "store = \"{}\"\nfilter = \"{}\"\npub = \"{}\"\n[uninspectable]\nencrypted = \"block\"\nlimit = \"pass\"\n",
        store.display(),
        s.path("f.hgf").display(),
        s.path("k.pub").display()
    );
    let (_gw, port, _) = s.configured_gateway(&toml);
    let url = |k: &str| format!("http://127.0.0.1:{port}/c/{k}");
    assert_eq!(put(&url("enc"), &work.join("enc.zip"), &[]), 422);
    assert_eq!(put(&url("nested"), &work.join("l6.zip"), &[]), 201);
    let audit = std::fs::read_to_string(s.path("audit.log")).unwrap();
    assert!(audit.contains("\"problem\":\"encrypted: zip: encrypted member\""));
    drop(_gw);
    // The [inspect] bounds: one entry per archive is a limit; with archives off a zipped
    // listed file is only its own bytes (and passes, as the operator chose).
    sh(&work, "zip -q two.zip payload z && zip -q one.zip payload");
    let toml = |inspect: &str| {
        format!(
            "store = \"{}\"\nfilter = \"{}\"\npub = \"{}\"\n[inspect]\n{inspect}\n",
            store.display(),
            s.path("f.hgf").display(),
            s.path("k.pub").display()
        )
    };
    let (gw, port, _) = s.configured_gateway(&toml("max_entries = 1"));
    let url = |k: &str| format!("http://127.0.0.1:{port}/d/{k}");
    assert_eq!(put(&url("two"), &work.join("two.zip"), &[]), 422);
    assert_eq!(put(&url("one"), &work.join("one.zip"), &[]), 451);
    drop(gw);
    let (_gw, port, _) = s.configured_gateway(&toml("archives = false"));
    let url = format!("http://127.0.0.1:{port}/e/one");
    assert_eq!(put(&url, &work.join("one.zip"), &[]), 201);
    // An unknown key is an error, so a typo never silently changes a bound.
    let bad = s.path("bad.toml");
    std::fs::write(&bad, toml("max_dept = 9")).unwrap();
    let out = s.gateway_run(&["--config", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_dept"));
}

#[test]
fn scan_finds_listed_members_in_a_tree_of_archives() {
    let s = Setup::new();
    let tree = s.path("tree");
    std::fs::create_dir_all(tree.join("deep")).unwrap();
    std::fs::copy(&s.listed, tree.join("payload")).unwrap();
    sh(
        &tree,
        "zip -q deep/a.zip payload && tar czf deep/b.tgz payload && zip -q inner.zip payload \
         && tar cJf deep/c.tar.xz inner.zip && rm inner.zip && mv payload plain.bin \
         && cp plain.bin \"$(printf 'odd\\nname.bin')\" && echo clean > clean.txt",
    );
    let out = hashgate(&[
        "scan",
        "--json",
        "--filter",
        s.path("f.hgf").to_str().unwrap(),
        "--pub",
        s.path("k.pub").to_str().unwrap(),
        tree.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut hits: Vec<(String, String, String)> = lines
        .iter()
        .filter(|l| l["type"] == "hit")
        .map(|l| {
            let path = l["path"].as_str().unwrap();
            let name = Path::new(path)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (
                name,
                l["member"].as_str().unwrap_or("").to_string(),
                l["layers"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    hits.sort();
    assert_eq!(
        hits,
        [
            ("a.zip".into(), "payload".into(), "zip>file".into()),
            ("b.tgz".into(), "payload".into(), "gzip>tar>file".into()),
            (
                "c.tar.xz".into(),
                "inner.zip!payload".into(),
                "xz>tar>zip>file".into()
            ),
            ("odd\nname.bin".into(), String::new(), String::new()),
            ("plain.bin".into(), String::new(), String::new()),
        ]
    );
    let summary = lines.last().unwrap();
    assert_eq!(summary["hits"], 5);
    // Human output: escaped names, one line per hit; --no-archives skips members.
    let out = hashgate(&[
        "scan",
        "--no-archives",
        "--filter",
        s.path("f.hgf").to_str().unwrap(),
        "--pub",
        s.path("k.pub").to_str().unwrap(),
        tree.to_str().unwrap(),
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    let hit_lines: Vec<&str> = text.lines().filter(|l| l.starts_with("HIT")).collect();
    assert_eq!(hit_lines.len(), 2, "{text}");
    assert!(text.contains("odd\\nname.bin"), "{text}");
}

#[test]
fn responses_are_inspected_through_their_content_coding_and_archives() {
    let s = Setup::new();
    let location = "dav_methods PUT DELETE; create_full_put_path on; \
                    location ~ [.]gz$ { add_header Content-Encoding gzip; }";
    let (_nginx, origin, root) = s.nginx_serving(None, location, None);
    std::fs::create_dir_all(root.join("dl")).unwrap();
    std::fs::copy(&s.listed, root.join("dl/payload")).unwrap();
    sh(
        &root.join("dl"),
        "gzip -c payload > listed.gz && zip -q listed.zip payload && rm payload",
    );
    std::fs::copy(&s.clean, root.join("dl/payload")).unwrap();
    sh(&root.join("dl"), "gzip -c payload > clean.gz && rm payload");
    let toml = format!(
        "origin = \"http://127.0.0.1:{origin}\"\nfilter = \"{}\"\npub = \"{}\"\nscan_responses = true\nresponse_buffer_bytes = 8388608\n",
        s.path("f.hgf").display(),
        s.path("k.pub").display()
    );
    let (_gw, port, _) = s.configured_gateway(&toml);
    let get = |key: &str| curl(&[&format!("http://127.0.0.1:{port}/dl/{key}")]);
    assert_eq!(get("listed.gz"), 451);
    assert_eq!(get("listed.zip"), 451);
    assert_eq!(get("clean.gz"), 200);
}

/// The process's peak resident set (VmHWM), in KiB.
fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_gigabyte_zip_of_2000_entries_and_a_gigabyte_tar_gz_stream_in_bounded_memory() {
    let s = Setup::new();
    let work = s.path("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::copy(&s.listed, work.join("payload")).unwrap();
    // 2,000 members of 540 KiB of random bytes, the listed file last; the same members
    // as a tar.gz (random bytes: the archive is as large as its content).
    let make = r#"
import os, random, tarfile, zipfile
random.seed(7)
listed = open("payload", "rb").read()
members = [(f"m/{i:04}.bin", random.randbytes(540 * 1024)) for i in range(2000)]
members.append(("m/last.bin", listed))
with zipfile.ZipFile("big.zip", "w", zipfile.ZIP_STORED) as z:
    for name, data in members:
        z.writestr(name, data)
with tarfile.open("big.tar.gz", "w:gz", compresslevel=1) as t:
    for name, data in members:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        t.addfile(info, __import__("io").BytesIO(data))
"#;
    std::fs::write(work.join("make.py"), make).unwrap();
    sh(&work, "python3 make.py");
    let store = s.path("store");
    let (gw, port, _) = s.gateway(&["--store", store.to_str().unwrap()], &[]);
    let before = peak_rss_kb(gw.0.id());
    for name in ["big.zip", "big.tar.gz"] {
        let file = work.join(name);
        assert!(std::fs::metadata(&file).unwrap().len() > 1 << 30);
        // -T streams the file (--data-binary would read 1 GiB into curl first).
        let url = format!("http://127.0.0.1:{port}/{name}");
        assert_eq!(curl(&["-T", file.to_str().unwrap(), &url]), 451);
        assert!(!store.join(name).exists());
    }
    let grown = peak_rss_kb(gw.0.id()).saturating_sub(before);
    assert!(grown < 64 * 1024, "the gateway grew by {grown} KiB");
    // The spool files are gone with the request (unlinked from the start).
    let spool: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.metadata().is_ok_and(|m| m.len() > 1 << 30))
        .collect();
    assert!(spool.is_empty());
    // scan reads them in bounded memory too, and names the member.
    let out = Command::new(env!("CARGO_BIN_EXE_hashgate"))
        .args(["scan", "--json", "--filter"])
        .arg(s.path("f.hgf"))
        .arg("--pub")
        .arg(s.path("k.pub"))
        .arg(work.join("big.zip"))
        .arg(work.join("big.tar.gz"))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.matches("\"member\":\"m/last.bin\"").count(),
        2,
        "{text}"
    );
}

#[test]
fn scan_output_carries_any_file_name_exactly() {
    use base64::Engine as _;
    use std::os::unix::ffi::OsStrExt as _;
    let s = Setup::new();
    let tree = s.path("names");
    std::fs::create_dir_all(&tree).unwrap();
    let bad = tree.join(std::ffi::OsStr::from_bytes(b"bad\xff\nname.bin"));
    std::fs::copy(&s.listed, &bad).unwrap();
    let scan = |json: &str| {
        let mut args = vec!["scan"];
        if !json.is_empty() {
            args.push(json);
        }
        let (f, k) = (s.path("f.hgf"), s.path("k.pub"));
        args.extend([
            "--filter",
            f.to_str().unwrap(),
            "--pub",
            k.to_str().unwrap(),
        ]);
        args.push(tree.to_str().unwrap());
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        hashgate(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    // JSON: every line parses, and path_bytes holds the exact bytes of a non-UTF-8 name.
    let out = scan("--json");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    let hit: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["type"] == "hit")
        .unwrap();
    let exact = base64::engine::general_purpose::STANDARD
        .decode(hit["path_bytes"].as_str().unwrap())
        .unwrap();
    assert_eq!(exact, bad.as_os_str().as_bytes());
    assert!(text
        .lines()
        .last()
        .unwrap()
        .contains("\"type\":\"summary\""));
    // Human output: the name escaped on one line, so it cannot forge another.
    let out = scan("");
    let text = String::from_utf8(out.stdout).unwrap();
    let hit = text.lines().find(|l| l.starts_with("HIT")).unwrap();
    assert!(hit.contains("bad\\xff\\nname.bin"), "{hit}");
}
