//! S3 through the gateway: a real S3 client (boto3 from PyPI, driven by
//! tests/s3_client.py) against a real S3 server (s3s-fs from crates.io, with SigV4
//! authentication), the gateway in S3 mode (`--s3-spool`) between them. scripts/test.sh
//! installs both.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::procs::*;

const ACCESS_KEY: &str = "HGTESTACCESSKEY";
const SECRET_KEY: &str = "hgtestsecretkey0123456789";

fn s3s_fs() -> PathBuf {
    if let Some(path) = std::env::var_os("HASHGATE_S3S_FS") {
        return path.into();
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let installed = Path::new(&home).join(".cargo/bin/s3s-fs");
    if installed.exists() {
        installed
    } else {
        "s3s-fs".into()
    }
}

/// s3s-fs on a free port, storing under `root`.
fn s3_server(root: &Path) -> (Killed, u16) {
    std::fs::create_dir_all(root).unwrap();
    for _ in 0..5 {
        let port = free_port();
        let child = Command::new(s3s_fs())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s3s-fs must be installed (scripts/test.sh installs it)");
        let mut child = Killed(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            && child.0.try_wait().unwrap().is_none()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        if child.0.try_wait().unwrap().is_none() {
            return (child, port);
        }
    }
    panic!("s3s-fs did not start");
}

/// One boto3 operation through `endpoint`; what the client script printed.
fn s3(endpoint: &str, op: &str, args: &[&str]) -> String {
    s3_with(endpoint, op, args, None)
}

/// [`s3`], trusting the CA bundle `ca` for https endpoints.
fn s3_with(endpoint: &str, op: &str, args: &[&str], ca: Option<&Path>) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3_client.py");
    let out = Command::new("python3")
        .arg(script)
        .args([endpoint, "bucket", op])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(ca.map(|ca| ("AWS_CA_BUNDLE", ca)))
        .envs(ca.map(|_| ("HG_SHOW_ENCODING", "1")))
        .output()
        .expect("python3 with boto3 (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{op}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

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
        format!("[s3_abort]\naccess_key = \"{ACCESS_KEY}\"\nsecret_key = \"{SECRET_KEY}\"\n"),
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
