//! The audit log as evidence: a real gateway (embedded store) writes a signed hash
//! chain through logrotate's two rotations, a crash and restarts, and `hashgate audit
//! verify` proves it intact, and names the first bad line of every tampered copy.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::procs::*;

fn verify(key: &Path, files: &[&Path]) -> (i32, String) {
    let mut args = vec!["audit", "verify", "--pub", key.to_str().unwrap()];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let out = hashgate(&args);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn signal(pid: u32, name: &str) {
    assert!(Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

fn records(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"action\":\"block\""))
        .count()
}

#[test]
fn a_gateways_audit_chain_survives_rotation_and_a_crash_and_exposes_tampering() {
    let s = Setup::new();
    assert!(
        hashgate(&["keygen", "--out", s.path("operator").to_str().unwrap()])
            .status
            .success()
    );
    let (key, public) = (s.path("operator.key"), s.path("operator.pub"));
    let config = s.path("gw.toml");
    std::fs::write(&config, "audit_checkpoint_records = 3\n").unwrap();
    let store = s.path("store");
    let start = || {
        s.gateway(
            &["--store", store.to_str().unwrap()],
            &[
                "--config",
                config.to_str().unwrap(),
                "--audit-key",
                key.to_str().unwrap(),
            ],
        )
    };
    let log = s.path("audit.log");
    let put_listed = |port: u16, n: usize| {
        for i in 0..n {
            let url = format!("http://127.0.0.1:{port}/up/{i}.bin");
            assert_eq!(curl_put(&s.listed, &url, &[]), 451);
        }
    };

    let (gw, port, _) = start();
    put_listed(port, 4);
    assert_eq!(
        curl_put(&s.clean, &format!("http://127.0.0.1:{port}/c.bin"), &[]),
        201
    );
    // logrotate's `create`: rename, then SIGHUP.
    let rotated = s.path("audit.log.2");
    std::fs::rename(&log, &rotated).unwrap();
    signal(gw.0.id(), "HUP");
    put_listed(port, 2);
    assert!(wait_until(Duration::from_secs(10), || records(&log) == 2));
    // The gateway dies; the crash left part of a record behind.
    drop(gw);
    let mut torn = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut torn, br#"{"seq":99,"prev":"00ff"#).unwrap();
    drop(torn);
    let (code, text) = verify(&public, &[&rotated, &log]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("audit.log:") && text.contains("cut off"),
        "{text}"
    );

    let (gw, port, _) = start();
    put_listed(port, 1);
    // logrotate's `copytruncate`: copy, a record in between, truncate.
    let copied = s.path("audit.log.1");
    std::fs::copy(&log, &copied).unwrap();
    put_listed(port, 1);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    put_listed(port, 2);
    // A graceful stop signs what is unsigned.
    let pid = gw.0.id();
    signal(pid, "TERM");
    let mut gw = gw;
    assert!(wait_until(Duration::from_secs(20), || gw
        .0
        .try_wait()
        .unwrap()
        .is_some()));

    let files = [rotated.as_path(), copied.as_path(), log.as_path()];
    let (code, text) = verify(&public, &files);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("intact"), "{text}");
    assert!(
        text.contains("recovered") || text.contains("bytes no record holds"),
        "{text}"
    );
    assert!(text.contains("written again after a truncation"), "{text}");
    assert!(!text.contains("not signed yet"), "{text}");
    let total: usize = files.iter().map(|f| records(f)).sum();
    // 10 refusals, one counted twice: written before the copy and again after the
    // truncation.
    assert!(total >= 10, "{total}");

    // Each kind of tampering in the first file, and the line it is named at.
    let lines: Vec<String> = std::fs::read_to_string(&rotated)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert!(lines.len() >= 6, "{lines:?}");
    let tampered = |name: &str, lines: &[String]| -> PathBuf {
        let p = s.path(name);
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        p
    };
    let expect_broken_at = |path: &Path, line: usize| {
        let (code, text) = verify(&public, &[path, &copied, &log]);
        assert_eq!(code, 1, "{text}");
        let at = format!("{}:{line}:", path.display());
        assert!(text.contains(&at), "expected {at} in: {text}");
    };
    let mut deleted = lines.clone();
    deleted.remove(1);
    expect_broken_at(&tampered("deleted", &deleted), 2);
    let mut edited = lines.clone();
    edited[1] = edited[1].replace("\"method\":\"PUT\"", "\"method\":\"GET\"");
    assert_ne!(edited[1], lines[1]);
    expect_broken_at(&tampered("edited", &edited), 2);
    let mut swapped = lines.clone();
    swapped.swap(0, 1);
    // The first line of the first file may start mid-chain: the swap shows at line 2.
    expect_broken_at(&tampered("swapped", &swapped), 2);
    let mut cut = lines.clone();
    cut.truncate(4);
    let half = cut[3].len() / 2;
    cut[3].truncate(half);
    let p = s.path("cut");
    std::fs::write(&p, cut.join("\n")).unwrap();
    expect_broken_at(&p, 4);
    // A line far longer than any record (read in pieces, never whole) whose tail is a
    // genuine record: foreign bytes, named at its line, the tail not taken for a record.
    let mut padded = lines.clone();
    padded[2] = "x".repeat(3 << 20) + &lines[2];
    expect_broken_at(&tampered("padded", &padded), 3);
    // Checked with another key, the checkpoints do not verify.
    assert!(
        hashgate(&["keygen", "--out", s.path("other").to_str().unwrap()])
            .status
            .success()
    );
    let (code, text) = verify(&s.path("other.pub"), &files);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("not by the key given"), "{text}");
}

#[test]
fn a_scans_audit_log_is_signed_too() {
    let s = Setup::new();
    assert!(
        hashgate(&["keygen", "--out", s.path("operator").to_str().unwrap()])
            .status
            .success()
    );
    let log = s.path("scan-audit.log");
    let out = hashgate(&[
        "scan",
        "--filter",
        s.path("f.hgf").to_str().unwrap(),
        "--pub",
        s.path("k.pub").to_str().unwrap(),
        "--audit-log",
        log.to_str().unwrap(),
        "--audit-key",
        s.path("operator.key").to_str().unwrap(),
        s.listed.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let (code, text) = verify(&s.path("operator.pub"), &[&log]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("intact: 2 records"), "{text}");
}

#[test]
fn a_gateway_killed_while_it_writes_records_leaves_a_chain_that_verifies() {
    let (s, a, _) = Setup::small_listed();
    assert!(
        hashgate(&["keygen", "--out", s.path("operator").to_str().unwrap()])
            .status
            .success()
    );
    let toml = format!(
        "audit_key = {:?}\naudit_checkpoint_records = 7\n",
        s.path("operator.key")
    );
    let log = s.path("audit.log");
    let listed_lines = || records(&log);
    for round in 0..3 {
        let (gw, port, _) = s.store_gateway(&toml);
        // Eight clients refusing listed uploads as fast as they can: the kill lands
        // while records are being written and committed.
        let clients: Vec<std::process::Child> = (0..8)
            .map(|c| {
                let urls: Vec<String> = (0..400)
                    .map(|i| format!("http://127.0.0.1:{port}/r{round}/c{c}/{i}"))
                    .collect();
                let mut cmd = Command::new("curl");
                cmd.args(["-s", "-o", "/dev/null", "--retry", "0"]);
                for url in &urls {
                    cmd.args(["-T", a.to_str().unwrap(), url]);
                }
                cmd.stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let before = listed_lines();
        assert!(wait_until(Duration::from_secs(20), || listed_lines() > before + 50));
        signal(gw.0.id(), "KILL");
        drop(gw);
        for mut c in clients {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    // A last start: it recovers whatever the last kill tore, and signs on its stop.
    let (gw, port, _) = s.store_gateway(&toml);
    assert_eq!(
        curl_put(&a, &format!("http://127.0.0.1:{port}/last"), &[]),
        451
    );
    signal(gw.0.id(), "TERM");
    let mut gw = gw;
    assert!(wait_until(Duration::from_secs(20), || gw
        .0
        .try_wait()
        .unwrap()
        .is_some()));
    let (code, text) = verify(&s.path("operator.pub"), &[&log]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("intact"), "{text}");
    assert!(listed_lines() > 150, "{}", listed_lines());
}
