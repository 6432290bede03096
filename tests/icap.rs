//! `hashgate icap` as a process: behind a real Squid (Debian's package) in front of a real
//! nginx origin, driven by curl; and spoken to directly over TCP for the protocol cases a
//! well-behaved proxy never produces (malformed requests, previews, 204 handling).
//! scripts/test.sh installs squid, nginx-light and curl.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::procs::*;
use common::squid::curl_via;
use rand::RngCore;

/// Sizes of the extra listed samples: one decided inside Squid's 32 KiB preview, one
/// inside its 64 KiB `Allow: 204` window, and the 3 MiB one of `Setup` (streamed, cut).
const SMALL: usize = 20_000;
const MID: usize = 50_000;

impl Setup {
    /// `hashgate icap` on a free port, with an admin listener and an audit log.
    fn icap(&self, filter: &str, extra: &[&str]) -> (Killed, u16, u16) {
        let mut args = vec![
            "icap".to_string(),
            "--filter".into(),
            self.path(filter).display().to_string(),
            "--pub".into(),
            self.path("k.pub").display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--admin".into(),
            "127.0.0.1:0".into(),
            "--audit-log".into(),
            self.free_audit_log("icap-audit.log").display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        spawn_listening(Command::new(env!("CARGO_BIN_EXE_hashgate")).args(&args))
    }
}

fn audit_records(s: &Setup) -> Vec<serde_json::Value> {
    std::fs::read_to_string(s.path("icap-audit.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn squid_with_hashgate_refuses_listed_uploads_and_downloads_and_passes_clean_ones() {
    let s = Setup::new();
    let listed = s.filter_listing(
        "icap.hgf",
        1,
        &[
            ("small.bin", SMALL),
            ("mid.bin", MID),
            ("half.bin", 500_000),
        ],
    );
    let (_nginx, origin, root) = s.nginx();
    let (_icap, icap_port, admin) = s.icap("icap.hgf", &[]);
    let (_squid, proxy) = s.squid(icap_port);
    let url = |k: &str| format!("http://127.0.0.1:{origin}/{k}");
    let put = |file: &Path, key: &str, extra: &[&str]| {
        let mut args = vec!["-T", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        curl_via(proxy, &args, &url(key))
    };

    // Uploads (REQMOD).
    let (status, body, _) = put(&listed[1], "up/small.bin", &[]);
    assert_eq!(status, 451, "{}", String::from_utf8_lossy(&body));
    let refusal: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(refusal["reason"], "listed");
    assert_eq!(put(&listed[2], "up/mid.bin", &[]).0, 451);
    // Above Squid's 204 window the message is streamed back and cut short on a hit:
    // Squid answers with its own error, and the origin never gets the whole upload.
    let (status, _, _) = put(&listed[0], "up/listed.bin", &[]);
    assert!(status >= 500, "a listed 3 MiB upload got {status}");
    let chunked = ["-H", "Transfer-Encoding: chunked"];
    assert!(put(&listed[0], "up/listed-chunked.bin", &chunked).0 >= 500);
    assert!(put(&listed[3], "up/half.bin", &[]).0 >= 500);

    let mut tiny = s.path("tiny.bin");
    std::fs::write(&tiny, b"hello").unwrap();
    assert_eq!(put(&tiny, "up/tiny.bin", &[]).0, 201);
    tiny = s.path("empty.bin");
    std::fs::write(&tiny, b"").unwrap();
    assert_eq!(put(&tiny, "up/empty.bin", &[]).0, 201);
    assert_eq!(put(&s.clean, "up/clean.bin", &[]).0, 201);
    assert_eq!(put(&s.big_clean, "up/big.bin", &chunked).0, 201);

    let mut stored: Vec<String> = files_under(&root)
        .iter()
        .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    stored.sort();
    assert_eq!(
        stored,
        ["up/big.bin", "up/clean.bin", "up/empty.bin", "up/tiny.bin"]
    );
    for (key, file) in [("up/clean.bin", &s.clean), ("up/big.bin", &s.big_clean)] {
        assert_eq!(
            std::fs::read(root.join(key)).unwrap(),
            std::fs::read(file).unwrap(),
            "{key} arrived changed"
        );
    }
    assert!(files_under(&s.path("nginx-temp")).is_empty());

    // Downloads (RESPMOD): the origin serves listed and clean files.
    std::fs::create_dir_all(root.join("dl")).unwrap();
    for f in listed.iter().chain([&s.clean, &s.big_clean]) {
        std::fs::copy(f, root.join("dl").join(f.file_name().unwrap())).unwrap();
    }
    for f in [&s.clean, &s.big_clean] {
        let name = f.file_name().unwrap().to_str().unwrap();
        let (status, body, code) = curl_via(proxy, &[], &url(&format!("dl/{name}")));
        assert_eq!((status, code), (200, 0), "{name}");
        assert_eq!(body, std::fs::read(f).unwrap(), "{name} delivered changed");
    }
    for name in ["small.bin", "mid.bin"] {
        let (status, body, _) = curl_via(proxy, &[], &url(&format!("dl/{name}")));
        assert_eq!(status, 451, "{name}");
        assert!(String::from_utf8_lossy(&body).contains("\"listed\""));
    }
    let (_, body, code) = curl_via(proxy, &[], &url("dl/listed.bin"));
    let whole = std::fs::read(&s.listed).unwrap();
    assert_ne!(code, 0, "a cut download must look broken to the client");
    assert!(
        body.len() < whole.len(),
        "the listed download arrived whole"
    );

    // Every refusal was audited, with the client Squid named and the encapsulated request.
    let records = audit_records(&s);
    let blocked: Vec<_> = records.iter().filter(|r| r["action"] == "block").collect();
    assert_eq!(blocked.len(), 8, "{records:#?}");
    assert!(blocked.iter().all(|r| r["client"] == "127.0.0.1"));
    assert!(blocked
        .iter()
        .any(|r| r["method"] == "PUT" && r["path"] == "/up/small.bin"));
    assert!(blocked
        .iter()
        .any(|r| r["method"] == "GET" && r["path"] == "/dl/listed.bin"));
    let m = metrics(admin);
    for line in [
        "hashgate_icap_transactions_total{method=\"REQMOD\",answer=\"blocked\"} 2",
        "hashgate_icap_transactions_total{method=\"REQMOD\",answer=\"cut\"} 3",
        "hashgate_icap_transactions_total{method=\"RESPMOD\",answer=\"cut\"} 1",
    ] {
        assert!(m.contains(line), "no {line} in\n{m}");
    }
}

#[test]
fn clean_uploads_of_many_mib_pass_through_squid_intact() {
    // Squid 5.7 with its default client_request_buffer_max_size (512 KiB): an ICAP
    // service that takes in a body more slowly than the client sends it kills the
    // upload (Squid bug 5405). hashgate reads bodies as fast as they come.
    let s = Setup::new();
    s.filter_listing("icap.hgf", 1, &[]);
    let (_nginx, origin, root) = s.nginx();
    let (_icap, icap_port, _) = s.icap("icap.hgf", &[]);
    let (_squid, proxy) = s.squid(icap_port);
    for mib in [8, 16, 64] {
        let file = s.path(&format!("clean-{mib}.bin"));
        std::fs::write(&file, random(mib << 20)).unwrap();
        for attempt in 0..3 {
            let key = format!("up/clean-{mib}-{attempt}.bin");
            // As curl sends it by default, with `Expect: 100-continue`, and without.
            let out = Command::new("curl")
                .args(["-s", "-x", &format!("http://127.0.0.1:{proxy}")])
                .args(["-w", "\n%{http_code}", "-T", file.to_str().unwrap()])
                .args(if attempt == 0 {
                    &["-H", "Expect:"][..]
                } else {
                    &[][..]
                })
                .arg(format!("http://127.0.0.1:{origin}/{key}"))
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let (body, status) = text.rsplit_once('\n').unwrap();
            let status: u16 = status.parse().unwrap_or(0);
            let code = out.status.code().unwrap_or(-1);
            let log = || std::fs::read_to_string(s.path("squid/cache.log")).unwrap_or_default();
            assert_eq!(
                (status, code),
                (201, 0),
                "{mib} MiB, attempt {attempt}: {body}\nSquid's log:\n{}",
                log()
            );
            assert!(
                std::fs::read(root.join(&key)).unwrap() == std::fs::read(&file).unwrap(),
                "{key} arrived changed"
            );
        }
    }
}

/// An origin that takes in request bodies slowly (64 KiB per 10 ms) and answers `201`
/// with the number of body bytes it read (a mock: nginx cannot be told to read slowly).
fn slow_origin() -> u16 {
    use std::io::{BufRead, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':') {
                        if name.eq_ignore_ascii_case("content-length") {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                }
                let mut got = 0;
                let mut buf = vec![0u8; 64 * 1024];
                while got < length {
                    let want = buf.len().min(length - got);
                    match reader.read(&mut buf[..want]) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got += n,
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                let body = got.to_string();
                let _ = write!(
                    &stream,
                    "HTTP/1.1 201 Created\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

#[test]
fn a_clean_upload_to_a_slow_origin_passes_through_squid() {
    // The origin drains Squid more slowly than the client fills it. An ICAP service that
    // passed that pace back (reading the next chunk only once the last was echoed) let
    // Squid's request buffer fill, and Squid 5.7 then kills the upload (bug 5405).
    let s = Setup::new();
    s.filter_listing("icap.hgf", 1, &[]);
    let origin = slow_origin();
    let (_icap, icap_port, _) = s.icap("icap.hgf", &[]);
    let (_squid, proxy) = s.squid(icap_port);
    let file = s.path("clean-8.bin");
    std::fs::write(&file, random(8 << 20)).unwrap();
    let (status, body, code) = curl_via(
        proxy,
        &["-T", file.to_str().unwrap()],
        &format!("http://127.0.0.1:{origin}/up/clean.bin"),
    );
    assert_eq!(
        (status, code),
        (201, 0),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(String::from_utf8_lossy(&body), (8 << 20).to_string());
}

#[test]
fn range_requests_through_squid_are_judged_by_the_whole_object() {
    let s = Setup::new();
    s.filter_listing("icap.hgf", 1, &[]);
    let (_nginx, origin, root) = s.nginx();
    let (icap, icap_port, admin) = s.icap("icap.hgf", &[]);
    let (squid, proxy) = s.squid(icap_port);
    std::fs::create_dir_all(root.join("dl")).unwrap();
    std::fs::copy(&s.listed, root.join("dl/listed.bin")).unwrap();
    std::fs::copy(&s.big_clean, root.join("dl/clean.bin")).unwrap();
    let url = |k: &str| format!("http://127.0.0.1:{origin}/dl/{k}");
    let listed = std::fs::read(&s.listed).unwrap();
    let clean = std::fs::read(&s.big_clean).unwrap();
    let ranges = ["0-1048575", "1048576-2097151", "2097152-"];

    // Pieces of an object never seen whole: refused (422, uninspectable), every one.
    let mut joined = Vec::new();
    for r in ranges {
        let (status, body, _) = curl_via(proxy, &["-r", r], &url("listed.bin"));
        assert_eq!(status, 422, "{r}: {} bytes", body.len());
        assert!(String::from_utf8_lossy(&body).contains("could not be inspected"));
        joined.extend_from_slice(&body);
    }
    assert_ne!(joined, listed);
    // The listed file seen whole is cut; its last bytes are then refused as listed.
    let (_, body, code) = curl_via(proxy, &[], &url("listed.bin"));
    assert!(code != 0 && body.len() < listed.len());
    let (status, body, _) = curl_via(proxy, &["-r", "-134"], &url("listed.bin"));
    assert_eq!(status, 451, "{}", String::from_utf8_lossy(&body));
    // A clean object seen whole is served in pieces, intact.
    let (status, body, _) = curl_via(proxy, &[], &url("clean.bin"));
    assert_eq!((status, body.len()), (200, clean.len()));
    let mut joined = Vec::new();
    for r in ranges {
        let (status, body, _) = curl_via(proxy, &["-r", r], &url("clean.bin"));
        assert_eq!(status, 206, "{r}");
        joined.extend_from_slice(&body);
    }
    assert_eq!(joined, clean);
    // Changed at the origin (a new ETag): its pieces are unseen again.
    std::fs::write(root.join("dl/clean.bin"), &clean[..clean.len() - 1]).unwrap();
    assert_eq!(curl_via(proxy, &["-r", "0-99"], &url("clean.bin")).0, 422);
    let records = audit_records(&s);
    assert!(records.iter().any(|r| r["action"] == "uninspectable-block"
        && r["problem"].as_str().unwrap().starts_with("partial:")));
    assert!(metrics(admin)
        .contains("hashgate_uninspectable_total{kind=\"partial\",action=\"uninspectable-block\"}"));

    // The policy switch: partial responses pass (audited), as before this check.
    drop((squid, icap));
    let config = s.path("partial.toml");
    std::fs::write(&config, "[uninspectable]\npartial = \"pass\"\n").unwrap();
    let (_icap, icap_port, _) = s.icap("icap.hgf", &["--config", config.to_str().unwrap()]);
    let (_squid, proxy) = s.squid(icap_port);
    let (status, body, _) = curl_via(proxy, &["-r", "0-99"], &url("listed.bin"));
    assert_eq!((status, &body[..]), (206, &listed[..100]));
}

#[test]
fn squid_with_hashgate_looks_inside_forms_archives_and_encoded_downloads() {
    let s = Setup::new();
    let listed = s.filter_listing("icap.hgf", 1, &[("small.bin", SMALL)]);
    // The origin serves `.gz` files with `Content-Encoding: gzip`, as `gzip_static` does.
    let location = "dav_methods PUT DELETE; create_full_put_path on; \
                    location ~ [.]gz$ { add_header Content-Encoding gzip; }";
    let (_nginx, origin, root) = s.nginx_serving(None, location, None);
    let (_icap, icap_port, _admin) = s.icap("icap.hgf", &[]);
    let (_squid, proxy) = s.squid(icap_port);
    let url = |k: &str| format!("http://127.0.0.1:{origin}/{k}");
    let work = s.path("work");
    std::fs::create_dir_all(&work).unwrap();
    for (f, name) in [(&listed[0], "big"), (&listed[1], "small")] {
        std::fs::copy(f, work.join(name)).unwrap();
    }
    let zip = |name: &str| {
        let out = Command::new("zip")
            .args(["-q", &format!("{name}.zip"), name])
            .current_dir(&work)
            .output()
            .unwrap();
        assert!(out.status.success());
        work.join(format!("{name}.zip"))
    };
    // Web forms (REQMOD): a listed file zipped in a form part, small (decided within
    // Squid's 204 window).
    let field = format!("file=@{}", zip("small").display());
    let (status, _, _) = curl_via(proxy, &["-F", "t=x", "-F", &field], &url("form/small"));
    assert_eq!(status, 451);
    // A large form is echoed and cut. nginx answers a POST before reading its body, so
    // the same form goes as a PUT, which nginx stores: it must not arrive.
    let boundary = "----hashgateTestBoundary";
    let form = |zipped: &Path, out: &str| {
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.zip\"\r\nContent-Type: application/zip\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(&std::fs::read(zipped).unwrap());
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        std::fs::write(work.join(out), &body).unwrap();
        work.join(out)
    };
    let content_type = format!("Content-Type: multipart/form-data; boundary={boundary}");
    let big_form = form(&zip("big"), "big.form");
    let args = ["-T", big_form.to_str().unwrap(), "-H", &content_type];
    let (status, _, _) = curl_via(proxy, &args, &url("form/big"));
    assert!(status >= 500, "a listed 3 MiB zip in a form got {status}");
    std::fs::copy(&s.clean, work.join("clean")).unwrap();
    let clean_form = form(&zip("clean"), "clean.form");
    let args = ["-T", clean_form.to_str().unwrap(), "-H", &content_type];
    assert_eq!(curl_via(proxy, &args, &url("form/clean")).0, 201);
    assert_eq!(
        std::fs::read(root.join("form/clean")).unwrap(),
        std::fs::read(&clean_form).unwrap()
    );
    std::fs::remove_file(root.join("form/clean")).unwrap();
    // An upload whose Content-Encoding hides the listed file.
    let gz = work.join("small.gz");
    let out = Command::new("sh")
        .arg("-c")
        .arg("gzip -c small > small.gz")
        .current_dir(&work)
        .output()
        .unwrap();
    assert!(out.status.success());
    let (status, _, _) = curl_via(
        proxy,
        &["-T", gz.to_str().unwrap(), "-H", "Content-Encoding: gzip"],
        &url("up/small.gz"),
    );
    assert_eq!(status, 451);
    assert!(files_under(&root).is_empty(), "{:?}", files_under(&root));
    assert!(files_under(&s.path("nginx-temp")).is_empty());

    // Downloads (RESPMOD): a gzip-encoded response of a listed file is refused.
    std::fs::create_dir_all(root.join("dl")).unwrap();
    std::fs::copy(&gz, root.join("dl/small.gz")).unwrap();
    std::fs::copy(zip("small"), root.join("dl/small.zip")).unwrap();
    for key in ["dl/small.gz", "dl/small.zip"] {
        let (status, _, _) = curl_via(proxy, &[], &url(key));
        assert_eq!(status, 451, "{key}");
    }
    let records = audit_records(&s);
    assert!(
        records
            .iter()
            .any(|r| r["part"] == "small.zip!small" && r["layers"] == "multipart>zip>file"),
        "{records:#?}"
    );
    assert!(records
        .iter()
        .any(|r| r["path"] == "/dl/small.gz" && r["layers"] == "gzip>file"));
    assert!(records
        .iter()
        .any(|r| r["path"] == "/form/big" && r["part"] == "a.zip!big"));
}

/// A minimal ICAP client: independent of the server's code, reads exactly what RFC 3507
/// says a response is.
struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    http: String,
    body: Vec<u8>,
    /// Whether the body ended with its zero-size chunk (false: the connection was cut).
    complete: bool,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Client {
    fn new(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line.trim_end_matches("\r\n").to_string()),
        }
    }

    /// The next response, or `None` if the connection closed first.
    fn answer(&mut self) -> Option<Answer> {
        let status_line = self.line()?;
        let status = status_line.split(' ').nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            let line = self.line()?;
            if line.is_empty() {
                break;
            }
            let (n, v) = line.split_once(':')?;
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
        let mut answer = Answer {
            status,
            headers,
            http: String::new(),
            body: Vec::new(),
            complete: true,
        };
        let Some(enc) = answer.header("Encapsulated").map(str::to_string) else {
            return Some(answer);
        };
        let (last, offset) = enc.rsplit(", ").next()?.split_once('=')?;
        let mut http = vec![0; offset.parse().ok()?];
        self.reader.read_exact(&mut http).ok()?;
        answer.http = String::from_utf8(http).ok()?;
        if last.ends_with("-body") && last != "null-body" {
            answer.complete = false;
            while let Some(size) = self.line() {
                let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
                if size == 0 {
                    self.line()?;
                    answer.complete = true;
                    break;
                }
                let mut data = vec![0; size + 2];
                if self.reader.read_exact(&mut data).is_err() {
                    break;
                }
                answer.body.extend_from_slice(&data[..size]);
            }
        }
        Some(answer)
    }
}

const HTTP_PUT: &str = "PUT http://origin.test/up/x.bin HTTP/1.1\r\nHost: origin.test\r\n\r\n";

/// A REQMOD request head (with its encapsulated HTTP head) for a body.
fn reqmod_head(fields: &str) -> Vec<u8> {
    format!(
        "REQMOD icap://127.0.0.1/reqmod ICAP/1.0\r\nHost: 127.0.0.1\r\n{fields}\
         Encapsulated: req-hdr=0, req-body={}\r\n\r\n{HTTP_PUT}",
        HTTP_PUT.len()
    )
    .into_bytes()
}

/// `data` as chunks of at most 16 KiB, then the last chunk (`ieof` if asked).
fn chunks(data: &[u8], end: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in data.chunks(16 * 1024) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(end.as_bytes());
    out
}

const END: &str = "0\r\n\r\n";
const IEOF: &str = "0; ieof\r\n\r\n";

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0; n];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

#[test]
fn options_advertise_the_service_and_an_istag_that_follows_the_filter() {
    let s = Setup::new();
    s.filter_listing("v1.hgf", 1, &[]);
    s.filter_listing("v2.hgf", 2, &[]);
    let (_a, port1, _) = s.icap("v1.hgf", &[]);
    let (_b, port2, _) = s.icap("v2.hgf", &["--preview", "4096"]);
    let options = |port: u16, service: &str| {
        let mut c = Client::new(port);
        c.send(
            format!("OPTIONS icap://127.0.0.1/{service} ICAP/1.0\r\nHost: x\r\n\r\n").as_bytes(),
        );
        c.answer().unwrap()
    };
    let a = options(port1, "reqmod");
    assert_eq!(a.status, 200);
    assert_eq!(a.header("Methods"), Some("REQMOD"));
    assert_eq!(a.header("Allow"), Some("204"));
    assert_eq!(a.header("Preview"), Some("32768"));
    assert_eq!(a.header("Transfer-Preview"), Some("*"));
    assert_eq!(a.header("Max-Connections"), Some("1024"));
    assert_eq!(a.header("Options-TTL"), Some("300"));
    let tag1 = a.header("ISTag").unwrap().to_string();
    assert!(
        tag1.starts_with('"') && tag1.ends_with('"') && tag1.len() <= 34,
        "{tag1}"
    );
    assert_eq!(options(port1, "respmod").header("Methods"), Some("RESPMOD"));
    let b = options(port2, "reqmod");
    assert_eq!(b.header("Preview"), Some("4096"));
    assert_ne!(
        b.header("ISTag").unwrap(),
        tag1,
        "a new filter version needs a new ISTag"
    );
}

#[test]
fn previews_and_204_decide_without_echoing_and_keep_the_connection() {
    let s = Setup::new();
    let listed = s.filter_listing("icap.hgf", 1, &[("small.bin", SMALL)]);
    let small_listed = std::fs::read(&listed[1]).unwrap();
    let (_icap, port, _) = s.icap("icap.hgf", &[]);
    let mut c = Client::new(port);

    // A clean body that fits the preview: 204, whatever was offered.
    let clean = random(1000);
    c.send(&reqmod_head("Preview: 1000\r\n"));
    c.send(&chunks(&clean, IEOF));
    assert_eq!(c.answer().unwrap().status, 204);

    // A listed one: an encapsulated 451 with the JSON refusal, on the same connection.
    c.send(&reqmod_head("Preview: 32768\r\n"));
    c.send(&chunks(&small_listed, IEOF));
    let a = c.answer().unwrap();
    assert_eq!(a.status, 200);
    assert!(a.http.starts_with("HTTP/1.1 451 "), "{}", a.http);
    assert!(a.complete);
    let refusal: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(refusal["status"], 451);

    // Longer than the preview: 100 Continue, then the rest; with Allow: 204 → 204.
    let body = random(100_000);
    c.send(&reqmod_head("Allow: 204\r\nPreview: 4096\r\n"));
    c.send(&chunks(&body[..4096], END));
    assert_eq!(c.answer().unwrap().status, 100);
    c.send(&chunks(&body[4096..], END));
    assert_eq!(c.answer().unwrap().status, 204);

    // The same for a listed file split across preview and rest.
    let listed3 = std::fs::read(&s.listed).unwrap();
    c.send(&reqmod_head("Allow: 204\r\nPreview: 4096\r\n"));
    c.send(&chunks(&listed3[..4096], END));
    assert_eq!(c.answer().unwrap().status, 100);
    c.send(&chunks(&listed3[4096..], END));
    let a = c.answer().unwrap();
    assert!(a.http.starts_with("HTTP/1.1 451 "), "{}", a.http);

    // No body (a GET): 204 when allowed, else the head back unmodified.
    let get = "GET http://origin.test/ HTTP/1.1\r\nHost: origin.test\r\n\r\n";
    let head = |allow: &str| {
        format!(
            "REQMOD icap://127.0.0.1/reqmod ICAP/1.0\r\nHost: x\r\n{allow}Encapsulated: req-hdr=0, null-body={}\r\n\r\n{get}",
            get.len()
        )
    };
    c.send(head("Allow: 204\r\n").as_bytes());
    assert_eq!(c.answer().unwrap().status, 204);
    c.send(head("").as_bytes());
    let a = c.answer().unwrap();
    assert_eq!((a.status, a.http.as_str()), (200, get));
}

#[test]
fn without_204_the_message_is_echoed_and_a_listed_one_is_cut_short() {
    let s = Setup::new();
    let listed = s.filter_listing("icap.hgf", 1, &[("half.bin", 500_000)]);
    let (_icap, port, _) = s.icap("icap.hgf", &[]);

    // RESPMOD, clean, no Allow: 204: the response comes back byte for byte.
    let body = random(300_000);
    let res = "HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n";
    let req = "GET http://origin.test/dl HTTP/1.1\r\nHost: origin.test\r\n\r\n";
    let head = format!(
        "RESPMOD icap://127.0.0.1/respmod ICAP/1.0\r\nHost: x\r\nEncapsulated: req-hdr=0, res-hdr={}, res-body={}\r\n\r\n{req}{res}",
        req.len(),
        req.len() + res.len()
    );
    let mut c = Client::new(port);
    c.send(head.as_bytes());
    c.send(&chunks(&body, END));
    let a = c.answer().unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(
        a.http, res,
        "a RESPMOD answer carries the response head only"
    );
    assert!(a.complete);
    assert_eq!(a.body, body);

    // Keep-alive: then a listed 3 MiB upload, echoed but cut before its last MiB (the
    // REQMOD hold-back).
    let big = std::fs::read(&listed[0]).unwrap();
    c.send(&reqmod_head(""));
    c.send(&chunks(&big, END));
    let a = c.answer().unwrap();
    assert_eq!((a.status, a.http.as_str()), (200, HTTP_PUT));
    assert!(!a.complete, "a listed body must never be finished");
    assert!(
        a.body.len() <= big.len() - (1 << 20),
        "{} echoed",
        a.body.len()
    );
    assert_eq!(a.body[..], big[..a.body.len()]);

    // A listed upload smaller than the hold-back: not one byte of it is passed on.
    let half = std::fs::read(&listed[1]).unwrap();
    let mut c = Client::new(port);
    c.send(&reqmod_head(""));
    c.send(&chunks(&half, END));
    let a = c.answer().unwrap();
    assert_eq!((a.status, a.complete, a.body.len()), (200, false, 0));

    // RESPMOD holds back only the newest chunk by default (Squid 5 stalls otherwise).
    let mut c = Client::new(port);
    c.send(head.as_bytes());
    c.send(&chunks(&half, END));
    let a = c.answer().unwrap();
    assert!(!a.complete);
    assert!(a.body.len() >= half.len() - 16 * 1024 && a.body.len() < half.len());
}

#[test]
fn malformed_requests_get_icap_errors_and_the_server_carries_on() {
    let s = Setup::new();
    s.filter_listing("icap.hgf", 1, &[]);
    let config = s.path("icap.toml");
    std::fs::write(
        &config,
        "[icap]\nheader_timeout_secs = 1\nbody_timeout_secs = 1\nmax_header_bytes = 4096\n",
    )
    .unwrap();
    let (icap, port, _) = s.icap("icap.hgf", &["--config", config.to_str().unwrap()]);
    let status_of = |request: &[u8]| {
        let mut c = Client::new(port);
        c.send(request);
        c.answer().map(|a| a.status)
    };
    let enc = |e: &str| {
        format!("REQMOD icap://h/reqmod ICAP/1.0\r\nHost: h\r\nEncapsulated: {e}\r\n\r\n")
    };
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("garbage", b"hello there\r\n\r\n".to_vec(), 400),
        (
            "HTTP instead of ICAP",
            b"GET / HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
            400,
        ),
        (
            "ICAP/2.0",
            b"OPTIONS icap://h/reqmod ICAP/2.0\r\n\r\n".to_vec(),
            505,
        ),
        (
            "unknown service",
            b"OPTIONS icap://h/nope ICAP/1.0\r\n\r\n".to_vec(),
            404,
        ),
        (
            "REQMOD on respmod",
            b"REQMOD icap://h/respmod ICAP/1.0\r\nEncapsulated: null-body=0\r\n\r\n".to_vec(),
            405,
        ),
        (
            "unknown method",
            b"BREW icap://h/reqmod ICAP/1.0\r\n\r\n".to_vec(),
            501,
        ),
        (
            "no Encapsulated",
            b"REQMOD icap://h/reqmod ICAP/1.0\r\nHost: h\r\n\r\n".to_vec(),
            400,
        ),
        (
            "bad Encapsulated",
            enc("req-hdr=5, req-body=1").into_bytes(),
            400,
        ),
        (
            "RESPMOD parts in REQMOD",
            enc("res-hdr=0, res-body=10").into_bytes(),
            400,
        ),
        (
            "oversized head",
            format!(
                "OPTIONS icap://h/reqmod ICAP/1.0\r\nX: {}\r\n\r\n",
                "a".repeat(8000)
            )
            .into_bytes(),
            400,
        ),
        (
            "oversized encapsulated head",
            enc("req-hdr=0, req-body=100000").into_bytes(),
            400,
        ),
        (
            // Refused before a byte of it is buffered (it used to be read whole).
            "OPTIONS declaring a huge opt-body offset",
            b"OPTIONS icap://h/reqmod ICAP/1.0\r\nHost: h\r\nEncapsulated: req-hdr=0, opt-body=4000000000\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            "OPTIONS with an opt-body over the cap",
            {
                let mut r = b"OPTIONS icap://h/reqmod ICAP/1.0\r\nHost: h\r\nEncapsulated: opt-body=0\r\n\r\n".to_vec();
                r.extend_from_slice(&chunks(&[b'x'; 10_000], END));
                r
            },
            400,
        ),
    ];
    for (name, request, want) in cases {
        assert_eq!(status_of(&request), Some(want), "{name}");
    }
    // A broken chunk size, a preview longer than announced, a bad preview value.
    let mut bad_chunk = reqmod_head("Allow: 204\r\n");
    bad_chunk.extend_from_slice(b"zz\r\nhello\r\n0\r\n\r\n");
    assert_eq!(status_of(&bad_chunk), Some(400));
    let mut long_preview = reqmod_head("Preview: 10\r\n");
    long_preview.extend_from_slice(&chunks(&[7; 100], IEOF));
    assert_eq!(status_of(&long_preview), Some(400));
    assert_eq!(status_of(&reqmod_head("Preview: lots\r\n")), Some(400));

    // A client that stops halfway through its head, or its body, gets 408.
    let mut c = Client::new(port);
    c.send(b"OPTIONS icap://h/reqmod ICAP/1.0\r\nHost:");
    assert_eq!(c.answer().map(|a| a.status), Some(408));
    let mut c = Client::new(port);
    c.send(&reqmod_head("Allow: 204\r\n"));
    c.send(b"10000\r\npartial");
    assert_eq!(c.answer().map(|a| a.status), Some(408));
    // A head trickled in a byte at a time is timed out as a whole, not per read
    // (slowloris): the trickle would take 8 s, the head's deadline is 1 s.
    let mut c = Client::new(port);
    let mut trickle = c.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let head = b"OPTIONS icap://h/reqmod ICAP/1.0\r\nHost: h\r\nX-Slow: abcdefghijklmnopqrstuvwxyz\r\n\r\n";
        for byte in &head[..40] {
            if trickle.write_all(&[*byte]).is_err() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        true
    });
    assert_eq!(c.answer().map(|a| a.status), Some(408));
    assert!(
        !sender.is_finished(),
        "answered only after the whole trickle"
    );
    drop(c);
    sender.join().unwrap();
    // One that vanishes mid-body is simply forgotten.
    let mut c = Client::new(port);
    c.send(&reqmod_head(""));
    c.send(&chunks(&random(50_000), ""));
    drop(c);

    // Through all of it the server stayed up and still answers correctly.
    let mut c = Client::new(port);
    c.send(&reqmod_head("Preview: 100\r\n"));
    c.send(&chunks(b"fine", IEOF));
    assert_eq!(c.answer().unwrap().status, 204);
    let mut icap = icap;
    assert!(icap.0.try_wait().unwrap().is_none());
}

#[test]
fn policy_comes_from_the_shared_config_and_memory_stays_bounded() {
    let s = Setup::new();
    s.filter_listing("icap.hgf", 1, &[]);
    let listed = std::fs::read(&s.listed).unwrap();
    let send_listed = |port: u16| {
        let mut c = Client::new(port);
        c.send(&reqmod_head("Allow: 204\r\n"));
        c.send(&chunks(&listed, END));
        c.answer().unwrap()
    };
    // 403 instead of 451, from the [icap] table.
    let config = s.path("icap.toml");
    std::fs::write(&config, "[icap]\nblock_status = 403\n").unwrap();
    let (a, port, _) = s.icap("icap.hgf", &["--config", config.to_str().unwrap()]);
    assert!(send_listed(port).http.starts_with("HTTP/1.1 403 "));
    // Stopped, so that the next server writes the one audit log read below.
    drop(a);
    // Monitor mode from the shared `actions` table: let through, audited as monitor.
    std::fs::write(&config, "[actions]\ndefault = \"monitor\"\n").unwrap();
    let (_b, port, admin) = s.icap("icap.hgf", &["--config", config.to_str().unwrap()]);
    assert_eq!(send_listed(port).status, 204);
    assert!(audit_records(&s).iter().any(|r| r["action"] == "monitor"));
    assert!(metrics(admin).contains("hashgate_hits_total{action=\"monitor\"} 1"));
    // The allow-list.
    let (_c, port, _) = s.icap(
        "icap.hgf",
        &["--allow-list", s.path("allow.txt").to_str().unwrap()],
    );
    assert_eq!(send_listed(port).status, 204);
    // A bad block status is a start-up error.
    std::fs::write(&config, "[icap]\nblock_status = 200\n").unwrap();
    let out = hashgate(&[
        "icap",
        "--filter",
        s.path("icap.hgf").to_str().unwrap(),
        "--pub",
        s.path("k.pub").to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("block_status"));

    // 256 MiB streamed through the echo path: resident memory stays flat.
    let (icap, port, _) = s.icap("icap.hgf", &[]);
    let mut c = Client::new(port);
    let reader_stream = c.stream.try_clone().unwrap();
    // Drain the echo on another thread, counting bytes, so nothing backs up.
    let drain = std::thread::spawn(move || {
        let mut r = BufReader::new(reader_stream);
        let mut buf = vec![0; 1 << 20];
        let (mut n, mut tail) = (0u64, Vec::new());
        while let Ok(k) = r.read(&mut buf) {
            n += k as u64;
            tail.extend_from_slice(&buf[..k]);
            tail.drain(..tail.len().saturating_sub(7));
            if k == 0 || tail == b"\r\n0\r\n\r\n" {
                break;
            }
        }
        n
    });
    let base = rss_kb(icap.0.id());
    c.send(&reqmod_head(""));
    let piece = random(1 << 20);
    let mut peak = 0;
    for _ in 0..256 {
        c.send(&chunks(&piece, ""));
        peak = peak.max(rss_kb(icap.0.id()));
    }
    c.send(END.as_bytes());
    let echoed = drain.join().unwrap();
    assert!(echoed > 256 << 20, "echoed {echoed} bytes");
    assert!(
        peak < base + 64 * 1024,
        "RSS grew from {base} KiB to {peak} KiB over a 256 MiB body"
    );
}

#[test]
fn sigterm_lets_a_transaction_in_flight_finish_and_refuses_new_ones() {
    let s = Setup::new();
    s.filter_listing("icap.hgf", 1, &[]);
    let (mut icap, port, admin) = s.icap("icap.hgf", &[]);
    let mut idle = Client::new(port);
    let mut c = Client::new(port);
    let body = random(200_000);
    c.send(&reqmod_head("Allow: 204\r\n"));
    c.send(&chunks(&body[..100_000], ""));
    wait_in_flight(admin, 1);
    let killed = Command::new("kill")
        .args(["-TERM", &icap.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(
        wait_until(Duration::from_secs(10), || refused(port)),
        "new connections must be refused during shutdown"
    );
    c.send(&chunks(&body[100_000..], END));
    assert_eq!(c.answer().unwrap().status, 204);
    // Then the server exits, dropping the idle keep-alive connection.
    let deadline = Instant::now() + Duration::from_secs(10);
    while icap.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the server did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(idle.answer().is_none());
}

#[test]
fn icaps_serves_icap_over_tls_with_the_test_ca() {
    let s = Setup::new();
    s.filter_listing("icap.hgf", 1, &[]);
    let ca = TestCa::new(s.dir.path());
    let (cert, key) = ca.server(s.dir.path(), "icaps");
    let (_icap, port, _) = s.icap(
        "icap.hgf",
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let talk = |request: &str, verify: bool| {
        let mut child = Command::new("openssl")
            .args([
                "s_client",
                "-quiet",
                "-connect",
                &format!("127.0.0.1:{port}"),
            ])
            .args(["-CAfile", s.path("ca.pem").to_str().unwrap()])
            .args(if verify {
                &["-verify_return_error"][..]
            } else {
                &[][..]
            })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(request.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let answer = talk(
        "OPTIONS icaps://127.0.0.1/reqmod ICAP/1.0\r\nHost: x\r\nConnection: close\r\n\r\n",
        true,
    );
    assert!(answer.starts_with("ICAP/1.0 200 OK"), "{answer}");
    assert!(answer.contains("Methods: REQMOD"), "{answer}");
    // Plain ICAP on the ICAPS port gets nowhere.
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    c.write_all(b"OPTIONS icap://127.0.0.1/reqmod ICAP/1.0\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    assert!(!got.starts_with(b"ICAP/1.0 200"));
}
