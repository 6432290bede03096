//! S3 through the gateway: a real S3 client (boto3 from PyPI, driven by
//! tests/s3_client.py) against a real S3 server (s3s-fs from crates.io, with SigV4
//! authentication), the gateway in S3 mode (`--s3-spool`) between them. scripts/test.sh
//! installs both.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::procs::*;
use common::s3::*;

#[test]
fn boto3_uploads_through_the_gateway_listed_objects_never_become_visible() {
    let s = Setup::new();
    // Replaces the setup's filter: it lists the setup's file and a 12 MiB one.
    let files = s.filter_listing("f.hgf", 2, &[("big-listed.bin", 12 << 20)]);
    let (_s3, s3_port) = s3_server(&s.path("s3-root"));
    let spool = s.path("spool");
    let config = s.path("s3.toml");
    std::fs::write(
        &config,
        format!("[s3]\naccess_key = \"{ACCESS_KEY}\"\nsecret_key = \"{SECRET_KEY}\"\n"),
    )
    .unwrap();
    let (_gw, port, _) = s.gateway(
        &["--origin", &format!("http://127.0.0.1:{s3_port}")],
        &[
            "--s3-spool",
            spool.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let gw = format!("http://127.0.0.1:{port}");
    let path = |p: &Path| p.to_str().unwrap().to_string();
    assert_eq!(s3(&gw, "mkbucket", &[]), "200");

    // Single PutObject (boto3's defaults: signed payload, checksum headers).
    assert_eq!(s3(&gw, "put", &["listed.bin", &path(&files[0])]), "451");
    assert_eq!(s3(&gw, "put", &["clean.bin", &path(&s.clean)]), "200");

    // Multipart uploads: 5 MiB parts, four in parallel.
    let mut big_clean = std::fs::read(&s.big_clean).unwrap();
    big_clean.truncate(13 << 20);
    std::fs::write(s.path("mpu-clean.bin"), &big_clean).unwrap();
    assert_eq!(s3(&gw, "mpu", &["big-listed.bin", &path(&files[1])]), "451");
    // Without the client's own abort on failure, the gateway's abort clears the parts.
    assert_eq!(
        s3(&gw, "mpu-raw", &["raw-listed.bin", &path(&files[1])]),
        "451"
    );
    assert_eq!(
        s3(
            &gw,
            "mpu",
            &["big-clean.bin", &path(&s.path("mpu-clean.bin"))]
        ),
        "200"
    );

    // What the bucket holds: the clean objects, intact; the listed ones not at all.
    assert_eq!(s3(&gw, "list", &[]), "big-clean.bin clean.bin");
    let direct = format!("http://127.0.0.1:{s3_port}");
    assert_eq!(s3(&direct, "list", &[]), "big-clean.bin clean.bin");
    for (key, original) in [
        ("clean.bin", std::fs::read(&s.clean).unwrap()),
        ("big-clean.bin", big_clean),
    ] {
        let out = s.path(&format!("got-{key}"));
        assert_eq!(s3(&direct, "get", &[key, &path(&out)]), "200");
        assert_eq!(std::fs::read(&out).unwrap(), original, "{key} changed");
    }
    assert_eq!(
        s3(&direct, "get", &["big-listed.bin", &path(&s.path("nope"))]),
        "404"
    );
    // The multipart refusal came at completion, for the whole 12 MiB object (no 5 MiB
    // part of it is listed by itself).
    let audit = std::fs::read_to_string(s.path("audit.log")).unwrap();
    assert!(
        audit.lines().any(|l| {
            let r: serde_json::Value = serde_json::from_str(l).unwrap();
            r["path"] == "/bucket/big-listed.bin" && r["size"] == 12 << 20 && r["action"] == "block"
        }),
        "{audit}"
    );
    // The refused uploads were aborted with the configured key: s3s-fs keeps no parts
    // (it stores an upload's parts as `.upload_id-<id>.part-<n>` until completion).
    let leftovers: Vec<_> = files_under(&s.path("s3-root"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".upload_id-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Completed and refused uploads leave nothing spooled.
    assert!(files_under(&spool).is_empty(), "{:?}", files_under(&spool));
}

#[test]
fn boto3_and_the_aws_cli_over_https_send_aws_chunked_and_the_gateway_decodes_it() {
    let s = Setup::new();
    // Replaces the setup's filter: it lists the setup's file and a 12 MiB one.
    let files = s.filter_listing("f.hgf", 2, &[("big-listed.bin", 12 << 20)]);
    let ca = TestCa::new(s.dir.path());
    let (cert, key) = ca.server(s.dir.path(), "gateway");
    let (_s3, s3_port) = s3_server(&s.path("s3-root"));
    let spool = s.path("spool");
    let (_gw, port, _) = s.gateway(
        &["--origin", &format!("http://127.0.0.1:{s3_port}")],
        &[
            "--s3-spool",
            spool.to_str().unwrap(),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let gw = format!("https://127.0.0.1:{port}");
    let ca_pem = s.path("ca.pem");
    let run = |op: &str, args: &[&str]| s3_with(&gw, op, args, Some(&ca_pem));
    let path = |p: &Path| p.to_str().unwrap().to_string();
    assert_eq!(run("mkbucket", &[]), "200");
    assert_eq!(run("put", &["listed.bin", &path(&s.listed)]), "451");
    // Over https boto3 frames the object in aws-chunked (with a checksum trailer).
    assert_eq!(
        run("put", &["clean.bin", &path(&s.big_clean)]),
        "200 aws-chunked"
    );
    let out = s.path("got");
    assert_eq!(run("get", &["clean.bin", &path(&out)]), "200");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&s.big_clean).unwrap()
    );
    // The AWS CLI: `aws s3 cp` (multipart above 8 MiB, parts in parallel, each
    // aws-chunked over https).
    let aws = |args: &[&str]| {
        Command::new("aws")
            .args(args)
            .args(["--endpoint-url", &gw, "--region", "us-east-1"])
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_CA_BUNDLE", &ca_pem)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .expect("the AWS CLI (scripts/test.sh installs it)")
    };
    let target = |key: &str| format!("s3://bucket/{key}");
    let out = aws(&["s3", "cp", &path(&files[1]), &target("cli-listed.bin")]);
    assert!(
        !out.status.success(),
        "a listed multipart upload went through"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("451"),
        "{out:?}"
    );
    let out = aws(&[
        "s3",
        "cp",
        &path(&s.listed),
        &target("cli-listed-small.bin"),
    ]);
    assert!(!out.status.success());
    let out = aws(&["s3", "cp", &path(&s.big_clean), &target("cli-clean.bin")]);
    assert!(out.status.success(), "{out:?}");
    let got = s.path("cli-got");
    let out = aws(&["s3", "cp", &target("cli-clean.bin"), &path(&got)]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read(&got).unwrap(),
        std::fs::read(&s.big_clean).unwrap()
    );
    assert_eq!(run("list", &[]), "clean.bin cli-clean.bin");
    // The refusal was of the decoded object: its size is the file's, not the framed body's.
    let audit = std::fs::read_to_string(s.path("audit.log")).unwrap();
    let record: serde_json::Value = serde_json::from_str(audit.lines().next().unwrap()).unwrap();
    assert_eq!(record["size"], std::fs::metadata(&s.listed).unwrap().len());
}

/// A gateway in S3 mode with the `[s3]` credentials in front of a fresh s3s-fs, its bucket
/// made; the two endpoints and the s3s-fs root.
struct Store {
    _s3: Killed,
    _gw: Killed,
    gw: String,
    direct: String,
    root: PathBuf,
    spool: PathBuf,
}

impl Store {
    /// With `virtual_hosts`, s3s-fs also takes virtual-hosted-style requests
    /// (`bucket.localhost:PORT`) and both endpoints are named `localhost`.
    fn new(s: &Setup, name: &str, credentials: bool, virtual_hosts: bool) -> Store {
        let root = s.path(&format!("{name}-root"));
        let spool = s.path(&format!("{name}-spool"));
        let config = s.path(&format!("{name}.toml"));
        let table = format!("[s3]\naccess_key = \"{ACCESS_KEY}\"\nsecret_key = \"{SECRET_KEY}\"\n");
        std::fs::write(&config, if credentials { table.as_str() } else { "" }).unwrap();
        // The store is told the gateway's port (its domain names carry it), so the
        // gateway starts first, towards the store's port.
        let s3_port = free_port();
        let (gw, port, _) = s.gateway(
            &["--origin", &format!("http://127.0.0.1:{s3_port}")],
            &[
                "--s3-spool",
                spool.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
            ],
        );
        let domains: Vec<String> = match virtual_hosts {
            true => vec![format!("localhost:{port}"), format!("localhost:{s3_port}")],
            false => vec![],
        };
        let server = s3_server_at(&root, s3_port, &domains).expect("s3s-fs did not start");
        let host = if virtual_hosts {
            "localhost"
        } else {
            "127.0.0.1"
        };
        let store = Store {
            _s3: server,
            _gw: gw,
            gw: format!("http://{host}:{port}"),
            direct: format!("http://{host}:{s3_port}"),
            root,
            spool,
        };
        assert_eq!(s3(&store.direct, "mkbucket", &[]), "200");
        store
    }

    /// The keys the bucket holds, asked of the store itself.
    fn keys(&self) -> String {
        s3(&self.direct, "list", &[])
    }

    /// Uploads still incomplete at the store (s3s-fs keeps their parts as
    /// `.upload_id-<id>.part-<n>`).
    fn parts_left(&self) -> Vec<PathBuf> {
        files_under(&self.root)
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(".upload_id-"))
            .collect()
    }
}

fn arg(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

#[test]
fn s3_pieces_whose_bytes_never_pass_the_gateway_are_read_and_checked() {
    let s = Setup::new();
    let files = s.filter_listing("f.hgf", 2, &[("big-listed.bin", 12 << 20)]);
    let listed = std::fs::read(&files[1]).unwrap();
    let (half1, half2) = listed.split_at(6 << 20);
    let junk = std::fs::read(&s.big_clean).unwrap()[..6 << 20].to_vec();
    let mut half1_plus = half1.to_vec();
    half1_plus.extend_from_slice(&junk[..1 << 20]);
    for (name, bytes) in [
        ("half1", half1),
        ("half2", half2),
        ("half1-plus", &half1_plus[..]),
        ("junk", &junk[..]),
    ] {
        std::fs::write(s.path(name), bytes).unwrap();
    }
    let store = Store::new(&s, "s3", true, false);
    let (gw, direct) = (&store.gw, &store.direct);
    let file = |n: &str| arg(&s.path(n));
    // Stored before the gateway stood in front, or before the file was listed: straight
    // to the store.
    for (key, path) in [
        ("half1", file("half1")),
        ("half2", file("half2")),
        ("half1-plus", file("half1-plus")),
        ("old-listed", arg(&files[1])),
    ] {
        assert_eq!(s3(direct, "put", &[key, &path]), "200");
    }
    let script = |key: &str, steps: &[&str]| {
        let mut args = vec![key];
        args.extend_from_slice(steps);
        s3(gw, "script", &args)
    };
    let up = |n: u32, name: &str| format!("up:{n}:{}", file(name));
    let range = format!("cp:1:half1-plus:0-{}", (6 << 20) - 1);

    // Two clean objects, each half of the listed file, copied into one: each copy passes,
    // the completion does not.
    assert_eq!(
        script("k1", &["cp:1:half1", "cp:2:half2", "done"]),
        "200 200 451"
    );
    // A range of a clean object, and an uploaded part.
    assert_eq!(
        script("k2", &[&range, &up(2, "half2"), "done"]),
        "200 200 451"
    );
    // A copy of a listed object stored before it was listed.
    assert_eq!(s3(gw, "copy", &["k3", "old-listed"]), "451");
    // A clean copy goes through, intact.
    assert_eq!(s3(gw, "copy", &["k4", "half1"]), "200");
    assert_eq!(s3(direct, "get", &["k4", &file("got-k4")]), "200");
    assert_eq!(std::fs::read(s.path("got-k4")).unwrap(), half1);
    // The completion sent as POST ?partNumber=1&uploadId=...: still a completion.
    assert_eq!(
        script("k5", &[&up(1, "half1"), &up(2, "half2"), "done-odd"]),
        "200 200 451"
    );
    // A part uploaded again: the later one counts, both ways.
    assert_eq!(
        script(
            "k6",
            &[&up(1, "junk"), &up(1, "half1"), &up(2, "half2"), "done"]
        ),
        "200 200 200 451"
    );
    assert_eq!(
        script(
            "k7",
            &[&up(1, "half1"), &up(1, "junk"), &up(2, "half2"), "done"]
        ),
        "200 200 200 200"
    );
    assert_eq!(s3(direct, "get", &["k7", &file("got-k7")]), "200");
    assert_eq!(
        std::fs::read(s.path("got-k7")).unwrap(),
        [&junk[..], half2].concat()
    );
    // One part sent twice at once (a slow clean one, then a fast one that would make the
    // object listed): the fast one waits its turn (503, and boto3 would retry), so the
    // store and the gateway keep the same part.
    let overlap = format!("overlap:1:{}:{}", file("junk"), file("half1"));
    assert_eq!(
        script("k10", &[&overlap, &up(2, "half2"), "done"]),
        "503 200 200 200"
    );
    assert_eq!(s3(direct, "get", &["k10", &file("got-k10")]), "200");
    assert_eq!(
        std::fs::read(s.path("got-k10")).unwrap(),
        [&junk[..], half2].concat()
    );
    // Parts uploaded out of order, completed in order.
    assert_eq!(
        script("k8", &[&up(2, "half2"), &up(1, "half1"), "done"]),
        "200 200 451"
    );
    // A completion naming an ETag the gateway did not see for a part: not completed.
    assert_eq!(
        script("k9", &[&up(1, "junk"), &up(2, "half2"), "badetag:1"]),
        "200 200 503"
    );

    assert_eq!(store.keys(), "half1 half1-plus half2 k10 k4 k7 old-listed");
    // Every refused upload was aborted by the gateway (k9's refusal was no verdict: the
    // client still holds its upload).
    assert_eq!(store.parts_left().len(), 2, "{:?}", store.parts_left());
    let audit = std::fs::read_to_string(s.path("audit.log")).unwrap();
    let blocked: Vec<String> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["action"] == "block")
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    for key in ["k1", "k2", "k3", "k5", "k6", "k8"] {
        assert!(
            blocked.contains(&format!("/bucket/{key}")),
            "{key}: {blocked:?}"
        );
    }

    // Without credentials of its own the gateway cannot read a source: no copy passes.
    let bare = Store::new(&s, "bare", false, false);
    assert_eq!(s3(&bare.direct, "put", &["half1", &file("half1")]), "200");
    assert_eq!(s3(&bare.gw, "copy", &["c", "half1"]), "503");
    assert_eq!(bare.keys(), "half1");
}

#[test]
fn s3_requests_stores_may_read_differently_are_refused_unforwarded() {
    let s = Setup::new();
    let files = s.filter_listing("f.hgf", 2, &[("big-listed.bin", 12 << 20)]);
    let store = Store::new(&s, "s3", true, true);
    let gw = &store.gw;
    assert_eq!(s3(gw, "put", &["k", &arg(&s.clean)]), "200");
    for query in [
        "uploadId=x&uploadId=y",
        "upload%49d=x",
        "uploadid=x",
        "partNumber=1;uploadId=x",
        "uploads&uploadId=x",
    ] {
        assert_eq!(s3(gw, "raw", &["POST", "k", query]), "400", "POST ?{query}");
    }
    for query in [
        "uploadId=x",
        "partNumber=1",
        "partNumber=01&uploadId=x",
        "partNumber=1&partNumber=2&uploadId=x",
        "acl&partNumber=1&uploadId=x",
    ] {
        assert_eq!(s3(gw, "raw", &["PUT", "k", query]), "400", "PUT ?{query}");
    }
    let header = |h: &str| s3(gw, "raw", &["PUT", "k2", "", h]);
    assert_eq!(header("x-amz-copy-source:bucket"), "400");
    assert_eq!(header("Content-Range:bytes 0-3/10"), "400");
    // Nothing of it reached the store.
    assert_eq!(store.keys(), "k");

    // Virtual-hosted style (bucket.localhost): a listed upload is refused and its parts
    // aborted at the right address.
    let out = s3_client(gw, "mpu-raw", &["v", &arg(&files[1])], None, "virtual");
    assert_eq!(out, "451");
    assert!(store.parts_left().is_empty(), "{:?}", store.parts_left());
    assert!(files_under(&store.spool).is_empty());
}

/// HAProxy (from Debian's package) on a free port, balancing over `gateways` by upload
/// id, as README "Fleets" says to.
fn haproxy(dir: &Path, gateways: &[u16]) -> (Killed, u16) {
    for _ in 0..5 {
        let port = free_port();
        let servers: String = gateways
            .iter()
            .enumerate()
            .map(|(i, p)| {
                format!("    server g{i} 127.0.0.1:{p} check inter 200ms fall 1 rise 1\n")
            })
            .collect();
        let config = dir.join("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "global\n    maxconn 256\ndefaults\n    mode http\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n    retries 0\nfrontend s3\n    bind 127.0.0.1:{port}\n    http-request return status 200 content-type text/plain lf-string \"%[nbsrv(gateways)]\" if {{ path /hg-servers-up }}\n    default_backend gateways\nbackend gateways\n    balance url_param uploadId\n    hash-type consistent\n{servers}"
            ),
        )
        .unwrap();
        let haproxy = ["/usr/sbin/haproxy", "haproxy"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("haproxy");
        let child = Command::new(haproxy)
            .args(["-db", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy must be installed (scripts/test.sh installs it)");
        let mut child = Killed(child);
        wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                || child.0.try_wait().unwrap().is_some()
        });
        if child.0.try_wait().unwrap().is_none() {
            return (child, port);
        }
    }
    panic!("haproxy did not start");
}

/// How many gateways HAProxy counts as up (its health checks).
fn servers_up(port: u16) -> usize {
    use std::io::{Read, Write};
    let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let _ = c.write_all(b"GET /hg-servers-up HTTP/1.0\r\n\r\n");
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    answer
        .rsplit("\r\n\r\n")
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn three_gateways_behind_haproxy_check_parallel_multipart_uploads_and_survive_restarts() {
    let s = Setup::new();
    let files = s.filter_listing("f.hgf", 2, &[("big-listed.bin", 12 << 20)]);
    let (_s3, s3_port) = s3_server(&s.path("s3-root"));
    let config = s.path("s3.toml");
    std::fs::write(
        &config,
        format!("[s3]\naccess_key = \"{ACCESS_KEY}\"\nsecret_key = \"{SECRET_KEY}\"\n"),
    )
    .unwrap();
    let origin = format!("http://127.0.0.1:{s3_port}");
    let start = |i: usize, listen: &str| {
        let spool = s.path(&format!("spool-{i}"));
        s.gateway_at(
            listen,
            &["--origin", &origin],
            &[
                "--s3-spool",
                spool.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
            ],
        )
    };
    let mut gateways: Vec<(Killed, u16)> = (0..3)
        .map(|i| {
            let (child, port, _) = start(i, "127.0.0.1:0");
            (child, port)
        })
        .collect();
    let ports: Vec<u16> = gateways.iter().map(|g| g.1).collect();
    let (_lb, lb_port) = haproxy(s.dir.path(), &ports);
    assert!(wait_until(Duration::from_secs(10), || servers_up(lb_port) == 3));
    let lb = format!("http://127.0.0.1:{lb_port}");
    assert_eq!(s3(&lb, "mkbucket", &[]), "200");

    // boto3's upload_file, 5 MiB parts on 8 threads: each upload's parts and completion
    // reach one gateway, which checks the whole object.
    assert_eq!(s3(&lb, "mpu", &["listed", &arg(&files[1])]), "451");
    assert_eq!(s3(&lb, "mpu", &["clean", &arg(&s.big_clean)]), "200");

    // Parts sent, then every gateway restarted (a rolling restart, all at once): the
    // spools are reloaded and the completions checked as before.
    let listed = std::fs::read(&files[1]).unwrap();
    let (half1, half2) = listed.split_at(6 << 20);
    std::fs::write(s.path("half1"), half1).unwrap();
    std::fs::write(s.path("half2"), half2).unwrap();
    let uploads: Vec<(String, String)> = ["r-listed", "r-clean"]
        .iter()
        .map(|key| (key.to_string(), s3(&lb, "create", &[key])))
        .collect();
    let mut completions = Vec::new();
    for (key, upload) in &uploads {
        let second = if key == "r-listed" {
            arg(&s.path("half2"))
        } else {
            arg(&s.clean)
        };
        let mut parts = vec![key.clone(), upload.clone()];
        for (n, file) in [("1", arg(&s.path("half1"))), ("2", second)] {
            let out = s3(&lb, "part", &[key, upload, n, &file]);
            let (status, etag) = out.split_once(' ').unwrap();
            assert_eq!(status, "200");
            parts.push(format!("{n}={etag}"));
        }
        completions.push(parts);
    }
    for (i, gateway) in gateways.iter_mut().enumerate() {
        let port = gateway.1;
        drop(std::mem::replace(
            &mut gateway.0,
            Killed(Command::new("true").spawn().unwrap()),
        ));
        let (child, again, _) = start(i, &format!("127.0.0.1:{port}"));
        assert_eq!(again, port);
        gateway.0 = child;
    }
    // Each upload's id hashes to its gateway only while all three are up.
    assert!(wait_until(Duration::from_secs(10), || servers_up(lb_port) == 3));
    let complete = |parts: &[String]| {
        let args: Vec<&str> = parts.iter().map(String::as_str).collect();
        s3(&lb, "complete", &args)
    };
    assert_eq!(complete(&completions[0]), "451");
    assert_eq!(complete(&completions[1]), "200");

    let direct = format!("http://127.0.0.1:{s3_port}");
    assert_eq!(s3(&direct, "list", &[]), "clean r-clean");
    assert_eq!(s3(&direct, "get", &["clean", &arg(&s.path("got"))]), "200");
    assert_eq!(
        std::fs::read(s.path("got")).unwrap(),
        std::fs::read(&s.big_clean).unwrap()
    );
    assert_eq!(
        s3(&direct, "get", &["r-clean", &arg(&s.path("got-r"))]),
        "200"
    );
    assert_eq!(
        std::fs::read(s.path("got-r")).unwrap(),
        [half1, &std::fs::read(&s.clean).unwrap()[..]].concat()
    );
}
