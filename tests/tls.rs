//! TLS on both sides of the gateway process: curl over https (HTTP/1.1 and HTTP/2)
//! against a certificate from a test CA made here with rcgen, a certificate reload during
//! uploads, an https nginx origin, and boto3 over https, which switches to aws-chunked
//! uploads (to s3s-fs behind the gateway).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::procs::*;

/// curl over https trusting the test CA; (status, stderr).
fn curl_tls(ca: &Path, args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
            "-H",
            "Expect:",
        ])
        .arg("--cacert")
        .arg(ca)
        .args(args)
        .output()
        .expect("curl");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let status = stdout.split(' ').next().unwrap_or("0").parse().unwrap_or(0);
    (
        status,
        format!("{stdout} {}", String::from_utf8_lossy(&out.stderr)),
    )
}

/// The subject CN of the certificate a TLS server presents now.
fn served_cn(port: u16, ca: &Path) -> String {
    let out = Command::new("curl")
        .args(["-sv", "-o", "/dev/null", "--cacert"])
        .arg(ca)
        .arg(format!("https://127.0.0.1:{port}/"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    err.lines()
        .find_map(|l| l.split("subject: CN=").nth(1))
        .unwrap_or("")
        .trim()
        .to_string()
}

#[test]
fn https_clients_over_http1_and_h2_listed_refused_and_certificates_reload_live() {
    let s = Setup::new();
    let ca = TestCa::new(s.dir.path());
    let (cert, key) = ca.server(s.dir.path(), "first");
    let store = s.path("store");
    let (gw, port, admin) = s.gateway(
        &["--store", store.to_str().unwrap()],
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let ca_pem = s.path("ca.pem");
    let url = |k: &str| format!("https://127.0.0.1:{port}/{k}");
    let listed = s.listed.to_str().unwrap();
    let clean = s.clean.to_str().unwrap();
    let (status, how) = curl_tls(&ca_pem, &["-T", listed, "--http1.1", &url("a/listed")]);
    assert_eq!(status, 451, "{how}");
    let (status, how) = curl_tls(&ca_pem, &["-T", listed, "--http2", &url("a/listed-h2")]);
    assert_eq!(status, 451, "{how}");
    assert!(
        how.contains(" 2 ") || how.starts_with("451 2"),
        "h2 expected: {how}"
    );
    assert_eq!(
        curl_tls(&ca_pem, &["-T", clean, "--http2", &url("a/clean")]).0,
        201
    );
    assert_eq!(
        std::fs::read(store.join("a/clean")).unwrap(),
        std::fs::read(&s.clean).unwrap()
    );
    // Without the CA, curl refuses the certificate: it is really verified.
    let out = Command::new("curl")
        .args(["-s", &url("a/clean")])
        .output()
        .unwrap();
    assert!(!out.status.success());

    // Reload: a slow upload runs across a SIGHUP that swaps the certificate.
    assert_eq!(served_cn(port, &ca_pem), "hashgate test first");
    let slow = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Expect:",
            "--limit-rate",
            "8M",
            "--cacert",
        ])
        .arg(&ca_pem)
        .args(["-T", s.big_clean.to_str().unwrap(), &url("a/during-reload")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_in_flight(admin, 1);
    let (new_cert, new_key) = ca.server(s.dir.path(), "second");
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &gw.0.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    assert!(wait_until(Duration::from_secs(10), || served_cn(
        port, &ca_pem
    )
        == "hashgate test second"));
    let out = slow.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "201",
        "the upload across the reload failed"
    );
    assert_eq!(
        std::fs::read(store.join("a/during-reload")).unwrap(),
        std::fs::read(&s.big_clean).unwrap()
    );
    // A broken new certificate is refused and the working one stays.
    std::fs::write(&cert, "not a certificate").unwrap();
    Command::new("kill")
        .args(["-HUP", &gw.0.id().to_string()])
        .status()
        .unwrap();
    let failed = "hashgate_tls_reloads_total{outcome=\"failed\"}";
    assert!(wait_until(Duration::from_secs(10), || metric(
        admin, failed
    ) == 1.0));
    assert_eq!(served_cn(port, &ca_pem), "hashgate test second");
    let mut gw = gw;
    assert!(gw.0.try_wait().unwrap().is_none());
}

#[test]
fn a_wrong_or_unreadable_certificate_is_a_clear_start_up_error() {
    let s = Setup::new();
    let ca = TestCa::new(s.dir.path());
    let (cert, _) = ca.server(s.dir.path(), "one");
    let (_, other_key) = ca.server(s.dir.path(), "two");
    let run = |cert: &Path, key: &Path| {
        s.gateway_run(&[
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ])
    };
    let out = run(&cert, &other_key);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("do not go together"),
        "{out:?}"
    );
    let out = run(&s.path("missing.pem"), &other_key);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing.pem"),
        "{out:?}"
    );
}

#[test]
fn an_https_origin_is_verified_against_the_given_ca() {
    let s = Setup::new();
    let ca = TestCa::new(s.dir.path());
    let (cert, key) = ca.server(s.dir.path(), "origin");
    let (_nginx, origin, root) = s.nginx_with(Some((&cert, &key)));
    let origin_url = format!("https://127.0.0.1:{origin}");
    let ca_pem = s.path("ca.pem");
    let (_gw, port, _) = s.gateway(
        &["--origin", &origin_url],
        &["--origin-ca", ca_pem.to_str().unwrap()],
    );
    let url = |k: &str| format!("http://127.0.0.1:{port}/{k}");
    assert_eq!(
        curl_put(&s.clean, &url("up/clean.bin"), &["-H", "Expect:"]),
        201
    );
    assert_eq!(
        curl_put(&s.big_clean, &url("up/big.bin"), &["-H", "Expect:"]),
        201
    );
    assert_eq!(
        curl_put(&s.listed, &url("up/listed.bin"), &["-H", "Expect:"]),
        451
    );
    assert_eq!(
        std::fs::read(root.join("up/big.bin")).unwrap(),
        std::fs::read(&s.big_clean).unwrap()
    );
    assert!(!root.join("up/listed.bin").exists());

    // Without the private CA the origin's certificate is not trusted: 502, nothing sent.
    let (_gw2, port2, _) = s.gateway(&["--origin", &origin_url], &[]);
    let status = curl_put(
        &s.clean,
        &format!("http://127.0.0.1:{port2}/up/untrusted.bin"),
        &["-H", "Expect:"],
    );
    assert_eq!(status, 502);
    assert!(!root.join("up/untrusted.bin").exists());
}
