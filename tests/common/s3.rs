//! A real S3 store for the tests: s3s-fs (crates.io, installed by scripts/test.sh) with
//! SigV4 authentication, on loopback, and boto3 (tests/s3_client.py) as the client.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::procs::{free_port, Killed};

pub const ACCESS_KEY: &str = "HGTESTACCESSKEY";
pub const SECRET_KEY: &str = "hgtestsecretkey0123456789";

pub fn s3s_fs() -> PathBuf {
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
pub fn s3_server(root: &Path) -> (Killed, u16) {
    for _ in 0..5 {
        let port = free_port();
        if let Some(server) = s3_server_at(root, port, &[]) {
            return (server, port);
        }
    }
    panic!("s3s-fs did not start");
}

/// s3s-fs on `port`, storing under `root`, also taking virtual-hosted-style requests
/// for `domains`; `None` if it did not start (the port was taken meanwhile).
pub fn s3_server_at(root: &Path, port: u16, domains: &[String]) -> Option<Killed> {
    std::fs::create_dir_all(root).unwrap();
    let child = Command::new(s3s_fs())
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(domains.iter().flat_map(|d| ["--domain", d]))
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
    child.0.try_wait().unwrap().is_none().then_some(child)
}

/// One boto3 operation through `endpoint`; what the client script printed.
pub fn s3(endpoint: &str, op: &str, args: &[&str]) -> String {
    s3_with(endpoint, op, args, None)
}

/// [`s3`], trusting the CA bundle `ca` for https endpoints.
pub fn s3_with(endpoint: &str, op: &str, args: &[&str], ca: Option<&Path>) -> String {
    s3_client(endpoint, op, args, ca, "path")
}

/// One boto3 operation, buckets addressed `addressing` style (`path` or `virtual`).
pub fn s3_client(
    endpoint: &str,
    op: &str,
    args: &[&str],
    ca: Option<&Path>,
    addressing: &str,
) -> String {
    s3_in("bucket", endpoint, op, args, ca, addressing)
}

/// [`s3_client`] on the bucket `bucket`.
pub fn s3_in(
    bucket: &str,
    endpoint: &str,
    op: &str,
    args: &[&str],
    ca: Option<&Path>,
    addressing: &str,
) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3_client.py");
    let out = Command::new("python3")
        .arg(script)
        .args([endpoint, bucket, op])
        .args(args)
        .env("HG_ADDRESSING", addressing)
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
