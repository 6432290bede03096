//! Feeds end to end: `hashgate publish` writes a feed, a real nginx serves it, gateway
//! processes follow it; then every attack and fault a feed must survive, each on its own.
//! Needs `nginx` (Debian's nginx-light) and `curl`; scripts/test.sh installs them.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::procs::*;
use hashgate_host::feed::protocol::{Envelope, Manifest, MANIFEST_TYPE};
use hashgate_host::trust::SecretKey;
use rand::RngCore;

/// nginx serving the feed directory, with switches a test flips by creating files:
/// `.busy` answers 429 with `Retry-After`, `.slow` trickles at 100 bytes a second.
const FEED_LOCATION: &str = r#"
      if (-f $document_root/.busy) { add_header Retry-After 1 always; return 429; }
      if (-f $document_root/.slow) { limit_rate 100; }
"#;

/// An authority with keys, a root, a list and a feed served by nginx.
struct Authority {
    s: Setup,
    nginx: Option<Nginx>,
    port: u16,
    /// Manifest keys that sign each publication.
    keys: Vec<&'static str>,
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Authority {
    /// Root keys r1; manifest keys m1 and m2, `threshold` of them needed.
    fn new(threshold: u32) -> Authority {
        let s = Setup::new();
        let p = |n: &str| s.path(n).to_str().unwrap().to_string();
        for k in ["r1", "r2", "m1", "m2", "x"] {
            ok(hashgate(&["keygen", "--out", &p(k)]));
        }
        ok(hashgate(&[
            "root",
            "init",
            "--root-key",
            &p("r1.pub"),
            "--manifest-key",
            &p("m1.pub"),
            "--manifest-key",
            &p("m2.pub"),
            "--manifest-threshold",
            &threshold.to_string(),
            "--out",
            &p("root.json"),
        ]));
        ok(hashgate(&[
            "root",
            "sign",
            "--key",
            &p("r1.key"),
            &p("root.json"),
        ]));
        let (nginx, port, _) = s.nginx_serving(None, FEED_LOCATION, None);
        let a = Authority {
            s,
            nginx: Some(nginx),
            port,
            keys: ["m1", "m2"][..threshold as usize].to_vec(),
        };
        a.publish();
        a
    }

    fn p(&self, n: &str) -> String {
        self.s.path(n).to_str().unwrap().to_string()
    }

    fn feed(&self, rel: &str) -> PathBuf {
        self.s.path("origin").join(rel)
    }

    fn publish_with(&self, root: &str, keys: &[&str], extra: &[&str]) -> Output {
        self.publish_at(None, root, keys, extra)
    }

    /// [`Authority::publish_with`] at a creation time of `epoch` (SOURCE_DATE_EPOCH), if
    /// given, instead of now.
    fn publish_at(&self, epoch: Option<u64>, root: &str, keys: &[&str], extra: &[&str]) -> Output {
        let mut args = vec![
            "publish".to_string(),
            "--feed".into(),
            self.p("origin"),
            "--series".into(),
            "feed".into(),
            "--root".into(),
            self.p(root),
            "--min-poll".into(),
            "1s".into(),
        ];
        if !extra.contains(&"--expires") {
            args.extend(["--expires".into(), "1h".into()]);
        }
        for k in keys {
            args.push("--key".into());
            args.push(self.p(&format!("{k}.key")));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(self.p("list.txt"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_hashgate"));
        command.args(&args);
        if let Some(epoch) = epoch {
            command.env("SOURCE_DATE_EPOCH", epoch.to_string());
        }
        command.output().unwrap()
    }

    fn publish(&self) {
        ok(self.publish_with("root.json", &self.keys, &[]));
    }

    /// A new random file of `size` bytes, added to the list.
    fn list_new_file(&self, name: &str, size: usize) -> PathBuf {
        let mut bytes = vec![0u8; size];
        rand::thread_rng().fill_bytes(&mut bytes);
        std::fs::write(self.s.path(name), &bytes).unwrap();
        let mut list = std::fs::read_to_string(self.s.path("list.txt")).unwrap();
        list.push_str(&format!("{},test-cat\n", sha256_hex(&bytes)));
        std::fs::write(self.s.path("list.txt"), list).unwrap();
        self.s.path(name)
    }

    /// `hashgate root rotate` from root.json to a root with one root key and one manifest
    /// key (base names), unsigned.
    fn rotate(&self, root_key: &str, manifest_key: &str, out: &str) {
        let p = |n: &str| self.p(n);
        let (root_key, manifest_key) = (
            p(&format!("{root_key}.pub")),
            p(&format!("{manifest_key}.pub")),
        );
        ok(hashgate(&[
            "root",
            "rotate",
            "--from",
            &p("root.json"),
            "--root-key",
            &root_key,
            "--manifest-key",
            &manifest_key,
            "--out",
            &p(out),
        ]));
    }

    /// `hashgate root sign` of root file `file` with key `key` (base name).
    fn sign_root(&self, key: &str, file: &str) {
        ok(hashgate(&[
            "root",
            "sign",
            "--key",
            &self.p(&format!("{key}.key")),
            &self.p(file),
        ]));
    }

    /// Lists a new 1000-byte file and publishes the next version; returns the file.
    fn publish_listing(&self, name: &str) -> PathBuf {
        let file = self.list_new_file(name, 1000);
        self.publish();
        file
    }

    /// A gateway (embedded store) following the feed, state in `state`.
    fn gateway(&self, state: &str, env: &[(&str, &str)]) -> (Killed, u16, u16) {
        let (child, port, admin, _) = self.gateway_logged(state, env);
        (child, port, admin)
    }

    /// [`Authority::gateway`], keeping its log.
    fn gateway_logged(&self, state: &str, env: &[(&str, &str)]) -> (Killed, u16, u16, Log) {
        let url = format!("http://127.0.0.1:{}/manifest.json", self.port);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hashgate"));
        cmd.args(["gateway", "--feed", &url, "--root", &self.p("root.json")])
            .args(["--state-dir", &self.p(state), "--feed-poll", "1s"])
            .args([
                "--feed-timeout",
                "3s",
                "--store",
                &self.p(&format!("store-{state}")),
            ])
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .envs(env.iter().copied());
        spawn_logged(&mut cmd)
    }

    /// The feed's manifest, its payload parsed.
    fn manifest(&self) -> Manifest {
        let envelope =
            Envelope::parse(&std::fs::read(self.feed("manifest.json")).unwrap()).unwrap();
        serde_json::from_slice(&envelope.payload().unwrap()).unwrap()
    }

    /// Writes `manifest` into the feed, signed by `keys` (key file base names).
    fn write_manifest(&self, manifest: &Manifest, keys: &[&str]) {
        let mut envelope = manifest.envelope();
        for k in keys {
            envelope
                .sign(&SecretKey::read(&self.s.path(&format!("{k}.key"))).unwrap())
                .unwrap();
        }
        // Atomically, as `publish` does: nginx must never serve half a manifest.
        let tmp = self.feed(".manifest.tmp");
        std::fs::write(&tmp, envelope.to_bytes()).unwrap();
        std::fs::rename(tmp, self.feed("manifest.json")).unwrap();
    }
}

/// Feed files of `kind` (delta, snapshot, guest) the gateway downloaded and used.
fn downloads(admin: u16, kind: &str) -> f64 {
    metric(
        admin,
        &format!("hashgate_feed_downloads_total{{outcome=\"{kind}\"}}"),
    )
}

/// The status `/readyz` answers, as text (`200`, `503`).
/// What `/readyz` answers (its body).
fn readyz_says(admin: u16) -> String {
    let out = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{admin}/readyz")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn readyz(admin: u16) -> String {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://127.0.0.1:{admin}/readyz"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn version(admin: u16) -> u64 {
    metric(admin, "hashgate_filter_version") as u64
}

fn wait_version(admin: u16, v: u64) {
    assert!(
        wait_until(Duration::from_secs(20), || version(admin) == v),
        "the gateway did not reach version {v} (at {})",
        version(admin)
    );
}

const FAILED: &str = "hashgate_feed_polls_total{outcome=\"failed\"}";

/// Waits for another failed poll and checks the gateway still enforces `v`.
fn wait_refused(admin: u16, v: u64) {
    let before = metric(admin, FAILED);
    assert!(
        wait_until(Duration::from_secs(20), || metric(admin, FAILED) > before),
        "no poll failed"
    );
    assert_eq!(version(admin), v, "the filter in force changed");
}

fn put(port: u16, file: &Path) -> u16 {
    let name = file.file_name().unwrap().to_str().unwrap();
    curl_put(file, &format!("http://127.0.0.1:{port}/{name}"), &[])
}

#[test]
fn two_gateways_follow_new_versions_and_uploads_during_the_swap_complete() {
    let a = Authority::new(1);
    let (_g1, port1, admin1) = a.gateway("state1", &[]);
    let (_g2, port2, admin2) = a.gateway("state2", &[]);
    let fresh = a.list_new_file("fresh.bin", 200_000);
    for port in [port1, port2] {
        assert_eq!(put(port, &a.s.listed), 451);
        assert_eq!(put(port, &fresh), 201);
    }
    // Slow uploads (listed and clean) that straddle the swap.
    let slow: Vec<_> = [
        (port1, &a.s.listed, "1M"),
        (port1, &a.s.big_clean, "4M"),
        (port2, &a.s.listed, "1M"),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (port, file, rate))| {
        let (file, url) = (file.clone(), format!("http://127.0.0.1:{port}/slow-{i}"));
        std::thread::spawn(move || curl_put(&file, &url, &["--limit-rate", rate]))
    })
    .collect();
    wait_in_flight(admin1, 2);
    wait_in_flight(admin2, 1);
    a.publish();
    wait_version(admin1, 2);
    wait_version(admin2, 2);
    let codes: Vec<u16> = slow.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(codes, [451, 201, 451], "uploads running during the swap");
    for port in [port1, port2] {
        assert_eq!(put(port, &fresh), 451, "the new version is enforced");
        assert_eq!(put(port, &a.s.clean), 201);
    }
    // The second version came as a delta, not a full download.
    for admin in [admin1, admin2] {
        assert_eq!(downloads(admin, "delta"), 1.0);
        assert_eq!(downloads(admin, "snapshot"), 0.0);
    }
}

#[test]
fn a_delta_gives_exactly_the_published_snapshot_and_a_restart_resumes_it() {
    let a = Authority::new(1);
    let (g, _, admin) = a.gateway("state", &[]);
    a.publish_listing("x.bin");
    wait_version(admin, 2);
    drop(g);
    let m = a.manifest();
    let file = std::fs::read(a.feed(&m.snapshot.path)).unwrap();
    let body = std::fs::read(a.s.path(&format!("state/bodies/{}.body", m.state_sha256))).unwrap();
    assert_eq!(
        body,
        file[..file.len() - 80],
        "the state after the delta is the snapshot's body"
    );
    assert_eq!(
        walk(&a.s.path("state/bodies")).len(),
        1,
        "the old state is collected"
    );
    // Restart with the feed gone: the accepted version comes back from disk.
    std::fs::rename(a.feed("manifest.json"), a.feed("manifest.away")).unwrap();
    let (_g, port, admin) = a.gateway("state", &[]);
    assert_eq!(version(admin), 2);
    assert_eq!(put(port, &a.s.path("x.bin")), 451);
}

#[test]
fn a_forged_manifest_is_refused() {
    let a = Authority::new(1);
    let (_g, port, admin) = a.gateway("state", &[]);
    a.publish_listing("x.bin");
    wait_version(admin, 2);
    // Change the signed payload (a later version), keep the old signature.
    let bytes = std::fs::read(a.feed("manifest.json")).unwrap();
    let mut envelope = Envelope::parse(&bytes).unwrap();
    let mut m = a.manifest();
    m.version = 3;
    envelope.payload = Manifest::envelope(&m).payload;
    std::fs::write(a.feed("manifest.json"), envelope.to_bytes()).unwrap();
    wait_refused(admin, 2);
    assert_eq!(put(port, &a.s.listed), 451);
}

#[test]
fn an_unsigned_manifest_is_refused() {
    let a = Authority::new(1);
    let (_g, _, admin) = a.gateway("state", &[]);
    a.publish_listing("x.bin");
    let m = a.manifest();
    a.write_manifest(&m, &[]);
    wait_refused(admin, 1);
}

#[test]
fn a_manifest_signed_by_a_key_outside_the_root_is_refused() {
    let a = Authority::new(1);
    let (_g, _, admin) = a.gateway("state", &[]);
    a.publish_listing("x.bin");
    let m = a.manifest();
    a.write_manifest(&m, &["x"]);
    wait_refused(admin, 1);
    // A root key is not a manifest key either.
    a.write_manifest(&m, &["r1"]);
    wait_refused(admin, 1);
    a.write_manifest(&m, &["m1"]);
    wait_version(admin, 2);
}

#[test]
fn one_key_counted_twice_does_not_meet_a_threshold_of_two() {
    let a = Authority::new(2);
    let (_g, _, admin) = a.gateway("state", &[]);
    a.publish_listing("x.bin");
    wait_version(admin, 2);
    let mut m = a.manifest();
    m.version = 3;
    m.expires += 10;
    // m1's signature twice (the same entry repeated).
    let mut envelope = m.envelope();
    envelope
        .sign(&SecretKey::read(&a.s.path("m1.key")).unwrap())
        .unwrap();
    let twice = envelope.signatures[0].clone();
    envelope.signatures.push(twice);
    assert_eq!(envelope.payload_type, MANIFEST_TYPE);
    std::fs::write(a.feed("manifest.json"), envelope.to_bytes()).unwrap();
    wait_refused(admin, 2);
    // One valid key plus an outsider is not two either.
    a.write_manifest(&m, &["m1", "x"]);
    wait_refused(admin, 2);
}

#[test]
fn a_rollback_is_refused_also_across_a_restart() {
    let a = Authority::new(1);
    let (g, port, admin) = a.gateway("state", &[]);
    let old = std::fs::read(a.feed("manifest.json")).unwrap();
    let fresh = a.publish_listing("x.bin");
    wait_version(admin, 2);
    // Replay version 1's manifest (validly signed, not expired).
    std::fs::write(a.feed("manifest.json"), &old).unwrap();
    wait_refused(admin, 2);
    drop(g);
    let (_g, port2, admin) = a.gateway("state", &[]);
    assert_eq!(version(admin), 2, "resumed from the state directory");
    wait_refused(admin, 2);
    assert_eq!(put(port2, &fresh), 451);
    let _ = port;
}

#[test]
fn an_unchanged_list_only_re_signs_and_the_gateway_only_refreshes() {
    let a = Authority::new(1);
    let (_g, _, admin) = a.gateway("state", &[]);
    let before = a.manifest();
    // Re-signed as if a few seconds later (rather than waiting for the clock to tick).
    let later = before.expires - 3600 + 5;
    let out = ok(a.publish_at(Some(later), "root.json", &["m1"], &[]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unchanged"));
    let after = a.manifest();
    assert_eq!(after.version, before.version);
    assert_eq!(after.state_sha256, before.state_sha256);
    assert!(after.expires > before.expires);
    let fresher = "hashgate_feed_polls_total{outcome=\"fresher\"}";
    assert!(wait_until(Duration::from_secs(15), || metric(
        admin, fresher
    ) == 1.0));
    assert_eq!(version(admin), 1);
    assert_eq!(
        metric(admin, "hashgate_feed_manifest_expires_seconds") as u64,
        after.expires
    );
}

#[test]
fn an_expired_manifest_freezes_the_filter_and_reports_stale() {
    let a = Authority::new(1);
    ok(a.publish_with("root.json", &["m1"], &["--expires", "4s"]));
    let (_g, port, admin) = a.gateway("state", &[]);
    let ready = || readyz(admin);
    assert_eq!(ready(), "200");
    assert!(wait_until(Duration::from_secs(10), || ready() == "503"));
    assert_eq!(metric(admin, "hashgate_filter_stale"), 1.0);
    assert_eq!(put(port, &a.s.listed), 451, "still enforcing");
    // A fresh signature on the same version thaws it.
    ok(a.publish_with("root.json", &["m1"], &[]));
    assert!(wait_until(Duration::from_secs(15), || ready() == "200"));
}

#[test]
fn a_re_signing_that_expired_already_is_refused_and_the_filter_stays_fresh() {
    let a = Authority::new(1);
    let (_g, _, admin, log) = a.gateway_logged("state", &[]);
    let ready = || readyz(admin);
    assert_eq!(ready(), "200");
    // The same version re-signed with an expiry in the past.
    let mut m = a.manifest();
    m.published = now_secs() - 120;
    m.expires = now_secs() - 60;
    a.write_manifest(&m, &["m1"]);
    wait_refused(admin, 1);
    let said = log.lock().unwrap().join("\n");
    assert!(
        said.contains("refused the fetched manifest (version 1)"),
        "{said}"
    );
    assert!(
        said.contains("the filter in force (version 1) stays, valid until"),
        "{said}"
    );
    assert!(!said.contains("stale"), "{said}");
    assert_eq!(ready(), "200");
    assert_eq!(metric(admin, "hashgate_filter_stale"), 0.0);
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn a_delta_for_another_base_falls_back_to_the_snapshot() {
    let a = Authority::new(1);
    let (_g, _, admin) = a.gateway("state", &[]);
    a.publish_listing("x.bin");
    wait_version(admin, 2);
    a.publish_listing("y.bin");
    // Replace the delta from v2 with one made for another base (v3 to v3).
    let mut m = a.manifest();
    let v3 = std::fs::read(a.feed(&m.snapshot.path)).unwrap();
    let v3 = &v3[..v3.len() - 80];
    let wrong = hashgate_guest::delta::diff(v3, v3).unwrap();
    let d = m.deltas.iter_mut().find(|d| d.from == 2).unwrap();
    std::fs::write(a.feed(&d.file.path), &wrong).unwrap();
    d.file.length = wrong.len() as u64;
    d.file.sha256 = sha256_hex(&wrong);
    a.write_manifest(&m, &["m1"]);
    wait_version(admin, 3);
    assert_eq!(downloads(admin, "snapshot"), 1.0);
}

#[test]
fn a_body_longer_than_listed_is_cut_at_the_listed_length() {
    let a = Authority::new(1);
    let (_g, port, admin) = a.gateway("state", &[]);
    let fresh = a.publish_listing("x.bin");
    let m = a.manifest();
    for rel in [&m.snapshot.path, &m.deltas[0].file.path] {
        let mut bytes = std::fs::read(a.feed(rel)).unwrap();
        bytes.extend_from_slice(&[0xAB; 100_000]);
        std::fs::write(a.feed(rel), bytes).unwrap();
    }
    wait_version(admin, 2);
    assert_eq!(put(port, &fresh), 451);
}

#[test]
fn truncated_or_bit_flipped_files_are_refused() {
    let a = Authority::new(1);
    let (_g, port, admin) = a.gateway("state", &[]);
    let fresh = a.publish_listing("x.bin");
    let m = a.manifest();
    let (snapshot, delta) = (a.feed(&m.snapshot.path), a.feed(&m.deltas[0].file.path));
    let (good_snapshot, good_delta) = (
        std::fs::read(&snapshot).unwrap(),
        std::fs::read(&delta).unwrap(),
    );
    let flipped = |b: &[u8]| {
        let mut b = b.to_vec();
        let at = b.len() / 2;
        b[at] ^= 0x10;
        b
    };
    // A flipped delta and a truncated snapshot; then the other way round.
    std::fs::write(&delta, flipped(&good_delta)).unwrap();
    std::fs::write(&snapshot, &good_snapshot[..good_snapshot.len() / 2]).unwrap();
    wait_refused(admin, 1);
    std::fs::write(&delta, &good_delta[..good_delta.len() - 1]).unwrap();
    std::fs::write(&snapshot, flipped(&good_snapshot)).unwrap();
    wait_refused(admin, 1);
    assert_eq!(put(port, &fresh), 201, "version 1 still in force");
    assert_eq!(put(port, &a.s.listed), 451);
    std::fs::write(&delta, &good_delta).unwrap();
    std::fs::write(&snapshot, &good_snapshot).unwrap();
    wait_version(admin, 2);
}

#[test]
fn a_state_hash_mismatch_is_refused() {
    let a = Authority::new(1);
    let (_g, _, admin) = a.gateway("state", &[]);
    a.publish_listing("x.bin");
    let mut m = a.manifest();
    m.state_sha256 = sha256_hex(b"not the state");
    a.write_manifest(&m, &["m1"]);
    wait_refused(admin, 1);
    wait_refused(admin, 1);
    assert!(
        walk(&a.s.path("state/bodies")).len() == 1,
        "no second state persisted"
    );
}

#[test]
fn key_rotation_recovers_from_a_fast_forwarded_version() {
    let a = Authority::new(1);
    let (_g, port, admin) = a.gateway("state", &[]);
    let legit = std::fs::read(a.feed("manifest.json")).unwrap();
    // An attacker with manifest key m1 signs version 1000 of their own filter.
    let p = |n: &str| a.p(n);
    std::fs::write(
        a.s.path("attack.txt"),
        format!("{}\n", sha256_hex(b"whatever")),
    )
    .unwrap();
    ok(hashgate(&[
        "build",
        "--key",
        &p("m1.key"),
        "--series",
        "feed",
        "--version",
        "1000",
        "--out",
        &a.feed("attack/1000.hgf").to_string_lossy(),
        &p("attack.txt"),
    ]));
    let attack = std::fs::read(a.feed("attack/1000.hgf")).unwrap();
    let mut m = a.manifest();
    m.version = 1000;
    m.state_sha256 = sha256_hex(&attack[..attack.len() - 80]);
    m.snapshot.path = "attack/1000.hgf".into();
    m.snapshot.length = attack.len() as u64;
    m.snapshot.sha256 = sha256_hex(&attack);
    m.deltas.clear();
    a.write_manifest(&m, &["m1"]);
    wait_version(admin, 1000);

    // The authority rotates: a new root (signed by the old root key and the new one)
    // that drops m1, and publishes its next version with m2.
    a.rotate("r2", "m2", "root2.json");
    for k in ["r1", "r2"] {
        a.sign_root(k, "root2.json");
    }
    ok(hashgate(&[
        "root",
        "verify",
        "--trusted",
        &p("root.json"),
        &p("root2.json"),
    ]));
    std::fs::write(a.feed("manifest.json"), &legit).unwrap();
    let fresh = a.list_new_file("x.bin", 1000);
    ok(a.publish_with("root2.json", &["m2"], &[]));
    assert_eq!(a.manifest().version, 2);
    wait_version(admin, 2);
    assert_eq!(put(port, &fresh), 451);
    assert!(
        a.s.path("state/roots/2.json").exists(),
        "the rotation is persisted"
    );

    // m1 is no longer trusted, whatever it signs.
    let mut m = a.manifest();
    m.version = 3;
    a.write_manifest(&m, &["m1"]);
    wait_refused(admin, 2);
}

#[test]
fn a_root_rotation_signed_by_the_new_keys_alone_is_refused() {
    let a = Authority::new(1);
    let (_g, _, admin) = a.gateway("state", &[]);
    let p = |n: &str| a.p(n);
    a.rotate("x", "x", "root2.json");
    a.sign_root("x", "root2.json");
    let verify = hashgate(&[
        "root",
        "verify",
        "--trusted",
        &p("root.json"),
        &p("root2.json"),
    ]);
    assert!(!verify.status.success());
    // Served anyway, with a manifest signed by the new keys.
    std::fs::create_dir_all(a.feed("roots")).unwrap();
    std::fs::copy(a.s.path("root2.json"), a.feed("roots/2.json")).unwrap();
    let mut m = a.manifest();
    m.version = 2;
    m.root_version = 2;
    a.write_manifest(&m, &["x"]);
    wait_refused(admin, 1);
}

#[test]
fn a_busy_or_missing_feed_keeps_the_filter() {
    let a = Authority::new(1);
    let (_g, port, admin) = a.gateway("state", &[]);
    let fresh = a.list_new_file("x.bin", 1000);
    std::fs::write(a.feed(".busy"), "").unwrap();
    a.publish();
    wait_refused(admin, 1);
    assert_eq!(put(port, &a.s.listed), 451);
    std::fs::remove_file(a.feed(".busy")).unwrap();
    wait_version(admin, 2);
    std::fs::rename(a.feed("manifest.json"), a.feed("manifest.away")).unwrap();
    wait_refused(admin, 2);
    assert_eq!(put(port, &fresh), 451);
    std::fs::rename(a.feed("manifest.away"), a.feed("manifest.json")).unwrap();
    a.publish_listing("y.bin");
    wait_version(admin, 3);
}

#[test]
fn a_slow_or_vanished_feed_server_keeps_the_filter() {
    let mut a = Authority::new(1);
    let (_g, port, admin) = a.gateway("state", &[]);
    let fresh = a.list_new_file("x.bin", 1000);
    std::fs::write(a.feed(".slow"), "").unwrap();
    a.publish();
    wait_refused(admin, 1);
    let started = Instant::now();
    assert_eq!(
        put(port, &a.s.clean),
        201,
        "uploads are not held up by the feed"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    std::fs::remove_file(a.feed(".slow")).unwrap();
    wait_version(admin, 2);
    // nginx goes away, comes back on the same address with a new version.
    drop(a.nginx.take());
    wait_refused(admin, 2);
    assert_eq!(put(port, &fresh), 451);
    a.publish_listing("y.bin");
    let (nginx, _, _) = a.s.nginx_serving(None, FEED_LOCATION, Some(a.port));
    a.nginx = Some(nginx);
    wait_version(admin, 3);
}

#[test]
fn a_crash_between_download_and_commit_restarts_on_the_old_state() {
    let a = Authority::new(1);
    let (g, _, admin) = a.gateway("state", &[]);
    assert_eq!(version(admin), 1);
    drop(g);
    let fresh = a.publish_listing("x.bin");
    let (mut g, _, _) = a.gateway("state", &[("HASHGATE_FAILPOINT", "feed-before-commit")]);
    assert!(
        wait_until(Duration::from_secs(20), || g
            .0
            .try_wait()
            .unwrap()
            .is_some()),
        "the failpoint did not fire"
    );
    // The manifest on disk is still version 1, and its body is intact.
    let bytes = std::fs::read(a.s.path("state/manifest.json")).unwrap();
    let persisted: Manifest =
        serde_json::from_slice(&Envelope::parse(&bytes).unwrap().payload().unwrap()).unwrap();
    assert_eq!(persisted.version, 1);
    std::fs::rename(a.feed("manifest.json"), a.feed("manifest.away")).unwrap();
    let (_g, port, admin) = a.gateway("state", &[]);
    assert_eq!(version(admin), 1);
    assert_eq!(put(port, &a.s.listed), 451);
    assert_eq!(put(port, &fresh), 201);
    std::fs::rename(a.feed("manifest.away"), a.feed("manifest.json")).unwrap();
    wait_version(admin, 2);
    assert_eq!(put(port, &fresh), 451);
}

#[test]
fn a_new_guest_is_hot_loaded_and_one_with_imports_is_refused() {
    let a = Authority::new(1);
    let (_g, port, admin) = a.gateway("state", &[]);
    // The reference guest with a custom section appended: a different component.
    let mut guest = hashgate_host::GUEST_COMPONENT.to_vec();
    guest.extend_from_slice(&[0, 6, 5, b'h', b'g', b'-', b'v', b'2']);
    std::fs::write(a.s.path("guest.wasm"), &guest).unwrap();
    let fresh = a.list_new_file("x.bin", 1000);
    ok(a.publish_with("root.json", &["m1"], &["--guest", &a.p("guest.wasm")]));
    wait_version(admin, 2);
    assert_eq!(downloads(admin, "guest"), 1.0);
    assert!(a
        .s
        .path(&format!("state/guests/{}.wasm", sha256_hex(&guest)))
        .exists());
    assert_eq!(put(port, &fresh), 451);

    std::fs::write(a.s.path("bad.wasm"), common::component_with_an_import()).unwrap();
    a.list_new_file("y.bin", 1000);
    ok(a.publish_with("root.json", &["m1"], &["--guest", &a.p("bad.wasm")]));
    wait_refused(admin, 2);
    assert_eq!(put(port, &fresh), 451);
}

#[test]
fn the_icap_server_follows_a_feed_too() {
    let a = Authority::new(1);
    let url = format!("http://127.0.0.1:{}/manifest.json", a.port);
    let (_icap, _, admin) = spawn_listening(Command::new(env!("CARGO_BIN_EXE_hashgate")).args([
        "icap",
        "--feed",
        &url,
        "--root",
        &a.p("root.json"),
        "--state-dir",
        &a.p("icap-state"),
        "--feed-poll",
        "1s",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ]));
    assert_eq!(version(admin), 1);
    a.publish_listing("x.bin");
    wait_version(admin, 2);
}

/// Appends the SHA-256 of `bytes` to the authority's list.
fn list_bytes(a: &Authority, bytes: &[u8]) {
    let mut list = std::fs::read_to_string(a.s.path("list.txt")).unwrap();
    list.push_str(&format!("{},test-cat\n", sha256_hex(bytes)));
    std::fs::write(a.s.path("list.txt"), list).unwrap();
}

/// A gateway following `a`'s feed with a catalog whose re-check `action`s, in front of
/// `backend` (`--store DIR` or `--origin URL`); its audit log is `audit-{state}.log`.
fn catalog_gateway(
    a: &Authority,
    state: &str,
    action: &str,
    backend: [&str; 2],
) -> (Killed, u16, u16) {
    let catalog = a.p(&format!("{state}/catalog.db"));
    catalog_gateway_at(a, state, action, &catalog, &backend)
}

/// [`catalog_gateway`] with the catalog at `catalog` (a file or a `postgres://` URL).
fn catalog_gateway_at(
    a: &Authority,
    state: &str,
    action: &str,
    catalog: &str,
    backend: &[&str],
) -> (Killed, u16, u16) {
    let toml = format!("[catalog]\naction = \"{action}\"\n");
    catalog_gateway_conf(a, state, &toml, catalog, backend)
}

/// [`catalog_gateway_at`] with the config file `toml`.
fn catalog_gateway_conf(
    a: &Authority,
    state: &str,
    toml: &str,
    catalog: &str,
    backend: &[&str],
) -> (Killed, u16, u16) {
    let config = a.s.path(&format!("{state}.toml"));
    std::fs::write(&config, toml).unwrap();
    let url = format!("http://127.0.0.1:{}/manifest.json", a.port);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hashgate"));
    cmd.args(["gateway", "--config", config.to_str().unwrap()])
        .args(["--feed", &url, "--root", &a.p("root.json")])
        .args(["--state-dir", &a.p(state), "--feed-poll", "1s"])
        .args(["--catalog", catalog])
        .args(["--audit-log", &a.p(&format!("audit-{state}.log"))])
        .args(backend)
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    spawn_listening(&mut cmd)
}

/// The audit log's `retroactive` records.
fn retroactive(a: &Authority, state: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(a.s.path(&format!("audit-{state}.log")))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["evidence"] == "retroactive")
        .collect()
}

fn random_file(a: &Authority, name: &str, size: usize) -> (PathBuf, Vec<u8>) {
    let mut bytes = vec![0u8; size];
    rand::thread_rng().fill_bytes(&mut bytes);
    let path = a.s.path(name);
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

#[test]
fn objects_stored_before_they_were_listed_are_found_by_the_re_check_and_deleted() {
    use std::io::Write as _;
    let a = Authority::new(1);
    let store = a.p("store-retro");
    let (_gw, port, admin) = catalog_gateway(&a, "retro", "delete", ["--store", &store]);
    let (early, early_bytes) = random_file(&a, "early.bin", 300_000);
    let (kept, _) = random_file(&a, "kept.bin", 20_000);
    // A zip holding a file that is listed later: the member is recorded too.
    let (_, inner) = random_file(&a, "inner.bin", 5_000);
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file("photos/inner.bin", zip::write::SimpleFileOptions::default())
        .unwrap();
    zip.write_all(&inner).unwrap();
    let zipped = a.s.path("bundle.zip");
    std::fs::write(&zipped, zip.finish().unwrap().into_inner()).unwrap();
    for file in [&early, &kept, &zipped] {
        assert_eq!(put(port, file), 201, "clean when stored");
    }
    // Uploaded and deleted again before the listing: nothing to find.
    let (gone, gone_bytes) = random_file(&a, "gone.bin", 1000);
    assert_eq!(put(port, &gone), 201);
    assert_eq!(
        curl(&["-X", "DELETE", &format!("http://127.0.0.1:{port}/gone.bin")]),
        204
    );

    list_bytes(&a, &early_bytes);
    list_bytes(&a, &inner);
    list_bytes(&a, &gone_bytes);
    a.publish();
    wait_version(admin, 2);
    assert!(
        wait_until(Duration::from_secs(20), || retroactive(&a, "retro").len()
            >= 2),
        "no retroactive records: {:?}",
        retroactive(&a, "retro")
    );
    let records = retroactive(&a, "retro");
    let paths: std::collections::BTreeSet<&str> = records
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/bundle.zip", "/early.bin"].into_iter().collect());
    for r in &records {
        assert_eq!(r["action"], "delete", "{r}");
        assert_eq!(r["filter_version"], 2);
        assert_eq!(r["stored"]["passed_by"]["version"], 1, "{r}");
        assert!(r["stored"]["time"].as_i64().unwrap() > 1_700_000_000);
    }
    let member = records.iter().find(|r| r["path"] == "/bundle.zip").unwrap();
    assert_eq!(member["part"], "photos/inner.bin");
    assert!(!Path::new(&store).join("early.bin").exists(), "deleted");
    assert!(!Path::new(&store).join("bundle.zip").exists(), "deleted");
    assert!(
        Path::new(&store).join("kept.bin").exists(),
        "a clean object stays"
    );
    assert_eq!(
        metric(admin, "hashgate_retroactive_hits_total{action=\"delete\"}"),
        2.0
    );
    assert!(
        wait_until(Duration::from_secs(5), || metric(
            admin,
            "hashgate_rechecks_total{outcome=\"done\"}"
        ) >= 1.0),
        "the re-check is counted"
    );
    // What is listed now is refused at upload as ever.
    assert_eq!(put(port, &early), 451);
}

#[test]
fn a_re_check_reports_objects_at_an_nginx_origin_and_deletes_them_when_told() {
    let a = Authority::new(1);
    let origin = Setup::new();
    let (_nginx, nport, root) = origin.nginx();
    let url = format!("http://127.0.0.1:{nport}");
    let (_report, rport, _) = catalog_gateway(&a, "report", "report", ["--origin", &url]);
    let (_delete, dport, dadmin) = catalog_gateway(&a, "delete", "delete", ["--origin", &url]);
    let (first, first_bytes) = random_file(&a, "first.bin", 100_000);
    let (second, second_bytes) = random_file(&a, "second.bin", 100_000);
    assert_eq!(
        curl_put(
            &first,
            &format!("http://127.0.0.1:{rport}/r/first.bin"),
            &[]
        ),
        201
    );
    assert_eq!(
        curl_put(
            &second,
            &format!("http://127.0.0.1:{dport}/d/second.bin"),
            &[]
        ),
        201
    );
    list_bytes(&a, &first_bytes);
    list_bytes(&a, &second_bytes);
    a.publish();
    assert!(
        wait_until(Duration::from_secs(30), || {
            retroactive(&a, "report").len() == 1 && retroactive(&a, "delete").len() == 1
        }),
        "report: {:?}, delete: {:?}",
        retroactive(&a, "report"),
        retroactive(&a, "delete")
    );
    assert_eq!(retroactive(&a, "report")[0]["action"], "report");
    assert_eq!(retroactive(&a, "report")[0]["path"], "/r/first.bin");
    assert_eq!(retroactive(&a, "delete")[0]["action"], "delete");
    assert!(root.join("r/first.bin").exists(), "report leaves it");
    assert!(
        !root.join("d/second.bin").exists(),
        "delete removes it at the origin"
    );
    // A catalog row is removed once its object is deleted: the next filter finds nothing
    // more to delete.
    let (_, third) = random_file(&a, "third.bin", 10);
    list_bytes(&a, &third);
    a.publish();
    wait_version(dadmin, 3);
    assert!(wait_until(Duration::from_secs(10), || metric(
        dadmin,
        "hashgate_rechecks_total{outcome=\"done\"}"
    ) >= 2.0));
    assert_eq!(retroactive(&a, "delete").len(), 1);
}

/// A row can be stale (its object replaced since, under another spelling of its path or
/// around the gateway): a re-check reads the object back and acts only on the bytes it
/// recorded.
#[test]
fn a_re_check_leaves_alone_a_clean_object_that_replaced_a_listed_one() {
    let a = Authority::new(1);
    let origin = Setup::new();
    let (_nginx, nport, root) = origin.nginx();
    let url = format!("http://127.0.0.1:{nport}");
    let (_gw, port, admin) = catalog_gateway(&a, "stale", "delete", ["--origin", &url]);
    let (early, early_bytes) = random_file(&a, "early.bin", 50_000);
    let (clean, clean_bytes) = random_file(&a, "clean.bin", 50_000);
    let (gone, gone_bytes) = random_file(&a, "gone.bin", 1_000);
    let (kept, kept_bytes) = random_file(&a, "kept.bin", 1_000);
    let at = |path: &str| format!("http://127.0.0.1:{port}{path}");
    // nginx decodes `%61` to `a`: two spellings of one file, two rows of the catalog.
    assert_eq!(curl_put(&early, &at("/s/%61.bin"), &[]), 201);
    let replaced = curl_put(&clean, &at("/s/a.bin"), &[]);
    assert!((200..300).contains(&replaced), "{replaced}");
    assert_eq!(std::fs::read(root.join("s/a.bin")).unwrap(), clean_bytes);
    // One removed at the origin, around the gateway; one still stored as recorded.
    assert_eq!(curl_put(&gone, &at("/s/gone.bin"), &[]), 201);
    std::fs::remove_file(root.join("s/gone.bin")).unwrap();
    assert_eq!(curl_put(&kept, &at("/s/kept.bin"), &[]), 201);

    for bytes in [&early_bytes, &gone_bytes, &kept_bytes] {
        list_bytes(&a, bytes);
    }
    a.publish();
    assert!(
        wait_until(Duration::from_secs(30), || retroactive(&a, "stale").len()
            == 3),
        "{:?}",
        retroactive(&a, "stale")
    );
    let records = retroactive(&a, "stale");
    let action = |path: &str| {
        let r = records.iter().find(|r| r["path"] == path);
        r.unwrap_or_else(|| panic!("no record of {path}: {records:?}"))["action"].clone()
    };
    assert_eq!(action("/s/%61.bin"), "replaced");
    assert_eq!(action("/s/gone.bin"), "gone");
    assert_eq!(action("/s/kept.bin"), "delete");
    assert_eq!(
        std::fs::read(root.join("s/a.bin")).unwrap(),
        clean_bytes,
        "the clean object that took the listed one's place stays"
    );
    assert!(
        !root.join("s/kept.bin").exists(),
        "what is still listed goes"
    );
    for outcome in ["replaced", "gone", "delete"] {
        let series = format!("hashgate_retroactive_hits_total{{action=\"{outcome}\"}}");
        assert_eq!(metric(admin, &series), 1.0, "{series}");
    }
    // The stale rows are gone with the deleted one: the next filter finds nothing more.
    let (_, other) = random_file(&a, "other.bin", 10);
    list_bytes(&a, &other);
    a.publish();
    wait_version(admin, 3);
    assert!(wait_until(Duration::from_secs(10), || metric(
        admin,
        "hashgate_rechecks_total{outcome=\"done\"}"
    ) >= 2.0));
    assert_eq!(retroactive(&a, "stale").len(), 3);
}

/// A WebDAV `MOVE` or `COPY` through the gateway: the origin moves the bytes, the
/// catalog's rows follow them, so a re-check finds them where they are now.
#[test]
fn objects_moved_or_copied_at_the_origin_are_found_where_they_are_now() {
    let a = Authority::new(1);
    let origin = Setup::new();
    let (_nginx, nport, root) = origin.nginx();
    let url = format!("http://127.0.0.1:{nport}");
    let (_gw, port, _) = catalog_gateway(&a, "moves", "delete", ["--origin", &url]);
    let (x, x_bytes) = random_file(&a, "x.bin", 20_000);
    let (y, y_bytes) = random_file(&a, "y.bin", 20_000);
    let at = |path: &str| format!("http://127.0.0.1:{port}{path}");
    assert_eq!(curl_put(&x, &at("/m/a/x.bin"), &[]), 201);
    assert_eq!(curl_put(&y, &at("/m/y.bin"), &[]), 201);
    for collection in ["/n/", "/c/"] {
        assert_eq!(curl(&["-X", "MKCOL", &at(collection)]), 201);
    }
    let relocate = |method: &str, from: &str, to: &str| {
        let destination = format!("Destination: {to}");
        curl(&["-X", method, "-H", &destination, &at(from)])
    };
    // A collection, a file, then a copy of the moved file.
    // (nginx answers 201 or 204.)
    for (method, from, to) in [
        ("MOVE", "/m/a/", "/n/a/".to_string()),
        ("MOVE", "/m/y.bin", "/n/y.bin".to_string()),
        ("COPY", "/n/y.bin", at("/c/y.bin")),
    ] {
        let status = relocate(method, from, &to);
        assert!((200..300).contains(&status), "{method} {from}: {status}");
    }
    assert!(root.join("n/a/x.bin").exists() && root.join("c/y.bin").exists());
    // A Destination the gateway cannot read is refused, not left to the origin to read.
    assert_eq!(relocate("MOVE", "/n/y.bin", "/n/y 2.bin"), 400);
    assert!(root.join("n/y.bin").exists(), "not moved");

    list_bytes(&a, &x_bytes);
    list_bytes(&a, &y_bytes);
    a.publish();
    assert!(
        wait_until(Duration::from_secs(30), || retroactive(&a, "moves").len()
            == 3),
        "{:?}",
        retroactive(&a, "moves")
    );
    let records = retroactive(&a, "moves");
    let mut found: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r["path"].as_str().unwrap(), r["action"].as_str().unwrap()))
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("/c/y.bin", "delete"),
            ("/n/a/x.bin", "delete"),
            ("/n/y.bin", "delete")
        ]
    );
    for gone in ["n/a/x.bin", "n/y.bin", "c/y.bin"] {
        assert!(!root.join(gone).exists(), "{gone} deleted");
    }
}

/// S3 mode: the read-back and the delete are requests signed with the gateway's `[s3]`
/// key, to a real s3s-fs.
#[test]
fn a_re_check_deletes_at_an_s3_origin_with_signed_requests() {
    use common::s3::{s3, s3_server, ACCESS_KEY, SECRET_KEY};
    let a = Authority::new(1);
    let (_s3, s3_port) = s3_server(&a.s.path("s3-root"));
    let direct = format!("http://127.0.0.1:{s3_port}");
    assert_eq!(s3(&direct, "mkbucket", &[]), "200");
    let toml = format!(
        "[catalog]\naction = \"delete\"\n[s3]\naccess_key = \"{ACCESS_KEY}\"\nsecret_key = \"{SECRET_KEY}\"\n"
    );
    let (catalog, spool) = (a.p("s3r/catalog.db"), a.p("s3r-spool"));
    let backend = ["--origin", &direct, "--s3-spool", &spool];
    let (_gw, port, _) = catalog_gateway_conf(&a, "s3r", &toml, &catalog, &backend);
    let gw = format!("http://127.0.0.1:{port}");
    let (early, early_bytes) = random_file(&a, "early.bin", 50_000);
    let (kept, _) = random_file(&a, "kept.bin", 5_000);
    for (key, file) in [("photos/early.bin", &early), ("kept.bin", &kept)] {
        assert_eq!(s3(&gw, "put", &[key, file.to_str().unwrap()]), "200");
    }
    assert_eq!(s3(&direct, "list", &[]), "kept.bin photos/early.bin");

    list_bytes(&a, &early_bytes);
    a.publish();
    assert!(
        wait_until(Duration::from_secs(30), || retroactive(&a, "s3r").len()
            == 1),
        "{:?}",
        retroactive(&a, "s3r")
    );
    let record = &retroactive(&a, "s3r")[0];
    assert_eq!(record["action"], "delete", "{record}");
    assert_eq!(record["path"], "/bucket/photos/early.bin");
    assert_eq!(s3(&direct, "list", &[]), "kept.bin", "deleted at the store");
}

/// S3 mode: a `DeleteObjects` through the gateway removes the rows of what the store
/// deleted, and only those.
#[test]
fn delete_objects_removes_the_rows_of_what_the_store_deleted() {
    use common::s3::{s3, s3_server, ACCESS_KEY, SECRET_KEY};
    let a = Authority::new(1);
    let (_s3, s3_port) = s3_server(&a.s.path("do-root"));
    let direct = format!("http://127.0.0.1:{s3_port}");
    assert_eq!(s3(&direct, "mkbucket", &[]), "200");
    let toml = format!(
        "[catalog]\naction = \"delete\"\n[s3]\naccess_key = \"{ACCESS_KEY}\"\nsecret_key = \"{SECRET_KEY}\"\n"
    );
    let (catalog, spool) = (a.p("do/catalog.db"), a.p("do-spool"));
    let backend = ["--origin", &direct, "--s3-spool", &spool];
    let (_gw, port, _) = catalog_gateway_conf(&a, "do", &toml, &catalog, &backend);
    let gw = format!("http://127.0.0.1:{port}");
    let (gone, gone_bytes) = random_file(&a, "do-gone.bin", 20_000);
    let (kept, kept_bytes) = random_file(&a, "do-kept.bin", 20_000);
    for (key, file) in [("photos/a b+c.bin", &gone), ("kept.bin", &kept)] {
        assert_eq!(s3(&gw, "put", &[key, file.to_str().unwrap()]), "200");
    }
    let rows = || {
        let out = Command::new("python3")
            .args(["-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM objects').fetchone()[0])"])
            .arg(&catalog)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert!(
        wait_until(Duration::from_secs(10), || rows() == "2"),
        "{}",
        rows()
    );
    // One key deleted, one the store has not: only the first row goes.
    assert_eq!(s3(&gw, "delete", &["photos/a b+c.bin", "never.bin"]), "200");
    assert_eq!(s3(&direct, "list", &[]), "kept.bin");
    assert!(
        wait_until(Duration::from_secs(10), || rows() == "1"),
        "{}",
        rows()
    );

    list_bytes(&a, &gone_bytes);
    list_bytes(&a, &kept_bytes);
    a.publish();
    assert!(
        wait_until(Duration::from_secs(30), || !retroactive(&a, "do")
            .is_empty()),
        "{:?}",
        retroactive(&a, "do")
    );
    let records = retroactive(&a, "do");
    assert_eq!(
        records.len(),
        1,
        "no record of the deleted object: {records:?}"
    );
    assert_eq!(records[0]["path"], "/bucket/kept.bin");
    assert_eq!(records[0]["action"], "delete");
}

/// S3 mode with virtual-hosted buckets: two buckets' objects at one key are two rows,
/// so a clean upload to one bucket does not hide a listed object in another from the
/// re-check.
#[test]
fn a_re_check_tells_virtual_hosted_buckets_apart() {
    use common::s3::{s3_in, s3_server_at, ACCESS_KEY, SECRET_KEY};
    let a = Authority::new(1);
    let toml = format!(
        "[catalog]\naction = \"delete\"\n[s3]\naccess_key = \"{ACCESS_KEY}\"\nsecret_key = \"{SECRET_KEY}\"\n"
    );
    let (catalog, spool) = (a.p("vh/catalog.db"), a.p("vh-spool"));
    // The store is told the gateway's port (its domain names carry it): the gateway
    // starts first, towards the store's port.
    let s3_port = free_port();
    let direct_url = format!("http://127.0.0.1:{s3_port}");
    let backend = ["--origin", &direct_url, "--s3-spool", &spool];
    let (_gw, port, _) = catalog_gateway_conf(&a, "vh", &toml, &catalog, &backend);
    let domains = [format!("localhost:{port}"), format!("localhost:{s3_port}")];
    let _s3 = s3_server_at(&a.s.path("vh-root"), s3_port, &domains).expect("s3s-fs");
    let (gw, direct) = (
        format!("http://localhost:{port}"),
        format!("http://localhost:{s3_port}"),
    );
    let run = |bucket: &str, endpoint: &str, op: &str, args: &[&str]| {
        s3_in(bucket, endpoint, op, args, None, "virtual")
    };
    let (early, early_bytes) = random_file(&a, "vh-early.bin", 40_000);
    let (clean, _) = random_file(&a, "vh-clean.bin", 40_000);
    for (bucket, file) in [("one", &early), ("two", &clean)] {
        assert_eq!(run(bucket, &direct, "mkbucket", &[]), "200");
        assert_eq!(
            run(bucket, &gw, "put", &["same.bin", file.to_str().unwrap()]),
            "200"
        );
    }

    list_bytes(&a, &early_bytes);
    a.publish();
    assert!(
        wait_until(Duration::from_secs(30), || retroactive(&a, "vh").len() == 1),
        "the listed object is still found: {:?}",
        retroactive(&a, "vh")
    );
    let record = &retroactive(&a, "vh")[0];
    assert_eq!(record["action"], "delete", "{record}");
    assert_eq!(record["path"], "/same.bin", "{record}");
    assert_eq!(record["host"], format!("one.localhost:{port}"), "{record}");
    assert_eq!(
        run("one", &direct, "list", &[]),
        "",
        "deleted in its bucket"
    );
    assert_eq!(
        run("two", &direct, "list", &[]),
        "same.bin",
        "the other bucket's stays"
    );
}

#[test]
fn two_gateways_sharing_a_postgres_catalog_re_check_each_filter_once() {
    let postgres = common::postgres::Postgres::start();
    let catalog = postgres.url();
    let a = Authority::new(1);
    let origin = Setup::new();
    let (_nginx, nport, root) = origin.nginx();
    let url = format!("http://127.0.0.1:{nport}");
    let (_one, port1, admin1) =
        catalog_gateway_at(&a, "one", "delete", &catalog, &["--origin", &url]);
    let (_two, port2, admin2) =
        catalog_gateway_at(&a, "two", "delete", &catalog, &["--origin", &url]);
    let (first, first_bytes) = random_file(&a, "first.bin", 100_000);
    let (second, second_bytes) = random_file(&a, "second.bin", 100_000);
    let (gone, gone_bytes) = random_file(&a, "gone.bin", 1000);
    let at = |port: u16, name: &str| format!("http://127.0.0.1:{port}/f/{name}");
    assert_eq!(curl_put(&first, &at(port1, "first.bin"), &[]), 201);
    assert_eq!(curl_put(&second, &at(port2, "second.bin"), &[]), 201);
    assert_eq!(curl_put(&gone, &at(port1, "gone.bin"), &[]), 201);
    let rows = || postgres.psql("SELECT count(*) FROM hashgate.objects");
    assert!(
        wait_until(Duration::from_secs(10), || rows().as_deref() == Some("3")),
        "both gateways record in the one catalog: {:?}",
        rows()
    );
    // Deleted through the other gateway: the row goes all the same.
    assert_eq!(curl(&["-X", "DELETE", &at(port2, "gone.bin")]), 204);
    assert!(wait_until(Duration::from_secs(10), || rows().as_deref() == Some("2")));

    list_bytes(&a, &first_bytes);
    list_bytes(&a, &second_bytes);
    list_bytes(&a, &gone_bytes);
    a.publish();
    let outcome = |outcome: &str| {
        let series = format!("hashgate_rechecks_total{{outcome=\"{outcome}\"}}");
        metric(admin1, &series) + metric(admin2, &series)
    };
    assert!(
        wait_until(Duration::from_secs(30), || outcome("done") == 1.0
            && outcome("elsewhere") == 1.0),
        "one gateway re-checks, the other finds it done: done {}, elsewhere {}",
        outcome("done"),
        outcome("elsewhere")
    );
    let records: Vec<serde_json::Value> = [retroactive(&a, "one"), retroactive(&a, "two")].concat();
    let mut paths: Vec<&str> = records
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        ["/f/first.bin", "/f/second.bin"],
        "each once: {records:?}"
    );
    assert!(
        records.iter().all(|r| r["action"] == "delete"),
        "{records:?}"
    );
    assert!(!root.join("f/first.bin").exists(), "deleted at the origin");
    assert!(!root.join("f/second.bin").exists(), "deleted at the origin");
    assert!(wait_until(Duration::from_secs(10), || rows().as_deref() == Some("0")));
}

#[test]
fn uploads_are_answered_while_the_postgres_catalog_is_down_and_recorded_once_it_is_back() {
    let mut postgres = common::postgres::Postgres::start();
    let catalog = postgres.url();
    let a = Authority::new(1);
    let store = a.p("store-down");
    let (_gw, port, admin) =
        catalog_gateway_at(&a, "down", "report", &catalog, &["--store", &store]);
    let written = || metric(admin, "hashgate_catalog_rows{outcome=\"written\"}");
    let failed = || metric(admin, "hashgate_catalog_rows{outcome=\"failed\"}");
    let degraded = || metric(admin, "hashgate_catalog_degraded");
    let ready = || readyz_says(admin);
    let (before, _) = random_file(&a, "before.bin", 10_000);
    assert_eq!(put(port, &before), 201);
    assert!(wait_until(Duration::from_secs(10), || written() == 1.0));

    postgres.stop();
    let (during, _) = random_file(&a, "during.bin", 10_000);
    let started = Instant::now();
    assert_eq!(put(port, &during), 201, "answered with the catalog down");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "and not held up"
    );
    assert!(
        wait_until(Duration::from_secs(10), || failed() >= 1.0
            && degraded() == 1.0),
        "the gap is counted: failed {}, degraded {}",
        failed(),
        degraded()
    );
    assert!(ready().contains("catalog degraded"), "{}", ready());

    postgres.restart();
    let mut n = 0;
    assert!(
        wait_until(Duration::from_secs(20), || {
            n += 1;
            let (after, _) = random_file(&a, &format!("after{n}.bin"), 1000);
            put(port, &after) == 201 && wait_until(Duration::from_secs(1), || degraded() == 0.0)
        }),
        "recovered: written {}, failed {}",
        written(),
        failed()
    );
    assert!(!ready().contains("degraded"), "{}", ready());
    let recorded = postgres
        .psql(
            "SELECT string_agg(convert_from(key, 'UTF8'), ' ' ORDER BY key) FROM hashgate.objects",
        )
        .unwrap();
    assert!(recorded.contains("/before.bin"), "{recorded}");
    assert!(
        !recorded.contains("/during.bin"),
        "lost, and counted: {recorded}"
    );
    assert_eq!(
        written() + failed(),
        1.0 + 1.0 + n as f64,
        "every row counted"
    );
}

/// A small tmpfs mounted for one test (root: CI runs the tests as root), unmounted
/// when dropped: a disk that really fills (`ENOSPC`).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: PathBuf, size: &str) -> SmallDisk {
        std::fs::create_dir_all(&at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test mounts a tmpfs and needs root (scripts/test.sh runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(at)
    }

    /// Writes a file until the disk is full; returns it.
    fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let filler = self.0.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        let _ = file.write_all(&[0]); // the last partial block
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn uploads_are_answered_while_the_catalog_disk_is_full_and_recorded_once_it_has_room() {
    let a = Authority::new(1);
    let disk = SmallDisk::mount(a.s.path("catalog-disk"), "4m");
    let catalog = disk.0.join("catalog.db").display().to_string();
    let store = a.p("store-full");
    let (_gw, port, admin) =
        catalog_gateway_at(&a, "full", "report", &catalog, &["--store", &store]);
    let written = || metric(admin, "hashgate_catalog_rows{outcome=\"written\"}");
    let failed = || metric(admin, "hashgate_catalog_rows{outcome=\"failed\"}");
    let degraded = || metric(admin, "hashgate_catalog_degraded");
    let (before, _) = random_file(&a, "before.bin", 10_000);
    assert_eq!(put(port, &before), 201);
    assert!(wait_until(Duration::from_secs(10), || written() == 1.0));

    let filler = disk.fill();
    let mut n = 0;
    assert!(
        wait_until(Duration::from_secs(20), || {
            n += 1;
            let (during, _) = random_file(&a, &format!("during{n}.bin"), 1000);
            assert_eq!(put(port, &during), 201, "answered with the disk full");
            failed() >= 1.0 && degraded() == 1.0
        }),
        "the gap is counted: written {}, failed {}",
        written(),
        failed()
    );
    assert!(readyz_says(admin).contains("catalog degraded"));

    std::fs::remove_file(&filler).unwrap();
    let mut m = 0;
    assert!(
        wait_until(Duration::from_secs(20), || {
            m += 1;
            let (after, _) = random_file(&a, &format!("after{m}.bin"), 1000);
            assert_eq!(put(port, &after), 201);
            wait_until(Duration::from_secs(1), || degraded() == 0.0)
        }),
        "recovered: written {}, failed {}",
        written(),
        failed()
    );
    assert!(!readyz_says(admin).contains("degraded"));
    assert!(
        wait_until(Duration::from_secs(5), || {
            written() + failed() == (1 + n + m) as f64
        }),
        "every row counted: written {}, failed {}, {} uploads",
        written(),
        failed(),
        1 + n + m
    );
    let mut recorded = hashgate_host::catalog::Catalog::open(Path::new(&catalog)).unwrap();
    let kind = hashgate_host::catalog::Kind::Object;
    assert!(recorded.get(kind, b"/before.bin").unwrap().is_some());
    let last = format!("/after{m}.bin");
    assert!(
        recorded.get(kind, last.as_bytes()).unwrap().is_some(),
        "{last} recorded"
    );
}

#[test]
fn a_re_check_quarantines_what_a_new_filter_lists_then_deletes_it_at_the_origin() {
    use std::io::Write as _;
    let a = Authority::new(1);
    let origin = Setup::new();
    let (_nginx, nport, root) = origin.nginx();
    let url = format!("http://127.0.0.1:{nport}");
    let quarantine = a.p("quarantine-retro");
    std::fs::create_dir_all(&quarantine).unwrap();
    let catalog = a.p("q/catalog.db");
    let backend = ["--origin", &url, "--quarantine", &quarantine];
    let (_gw, port, _) = catalog_gateway_at(&a, "q", "quarantine", &catalog, &backend);
    let (early, early_bytes) = random_file(&a, "early.bin", 300_000);
    let (kept, _) = random_file(&a, "kept.bin", 2_000);
    let (_, inner) = random_file(&a, "inner.bin", 5_000);
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file("a/inner.bin", zip::write::SimpleFileOptions::default())
        .unwrap();
    zip.write_all(&inner).unwrap();
    let zip_bytes = zip.finish().unwrap().into_inner();
    let zipped = a.s.path("bundle.zip");
    std::fs::write(&zipped, &zip_bytes).unwrap();
    for file in [&early, &kept, &zipped] {
        assert_eq!(put(port, file), 201);
    }
    list_bytes(&a, &early_bytes);
    list_bytes(&a, &inner);
    a.publish();
    assert!(
        wait_until(Duration::from_secs(30), || retroactive(&a, "q").len() == 2),
        "{:?}",
        retroactive(&a, "q")
    );
    let records = retroactive(&a, "q");
    let mut copies = Vec::new();
    for r in &records {
        assert_eq!(r["action"], "quarantine", "{r}");
        let copy = r["quarantine"].as_str().expect("names its copy");
        assert!(copy.starts_with(&quarantine), "{copy}");
        copies.push(std::fs::read(copy).unwrap());
    }
    copies.sort();
    let mut expected = vec![early_bytes, zip_bytes];
    expected.sort();
    assert_eq!(copies, expected, "the copies are the objects, whole");
    assert!(!root.join("early.bin").exists(), "deleted once copied");
    assert!(!root.join("bundle.zip").exists(), "deleted once copied");
    assert!(root.join("kept.bin").exists(), "a clean object stays");
}

#[test]
fn an_object_that_cannot_be_quarantined_is_left_in_place() {
    let a = Authority::new(1);
    let store = a.p("store-noq");
    let quarantine = a.p("quarantine-gone");
    std::fs::create_dir_all(&quarantine).unwrap();
    let catalog = a.p("noq/catalog.db");
    let backend = ["--store", &store, "--quarantine", &quarantine];
    let (_gw, port, admin) = catalog_gateway_at(&a, "noq", "quarantine", &catalog, &backend);
    let (early, early_bytes) = random_file(&a, "early.bin", 10_000);
    assert_eq!(put(port, &early), 201);
    // The quarantine directory is gone (an unmounted disk): no evidence can be kept.
    std::fs::remove_dir_all(&quarantine).unwrap();
    list_bytes(&a, &early_bytes);
    a.publish();
    assert!(
        wait_until(Duration::from_secs(30), || retroactive(&a, "noq").len()
            == 1),
        "{:?}",
        retroactive(&a, "noq")
    );
    assert_eq!(retroactive(&a, "noq")[0]["action"], "quarantine-failed");
    assert_eq!(
        metric(
            admin,
            "hashgate_retroactive_hits_total{action=\"quarantine-failed\"}"
        ),
        1.0
    );
    assert!(
        Path::new(&store).join("early.bin").exists(),
        "not deleted without its copy"
    );
}

#[test]
fn a_quarantine_action_without_a_quarantine_directory_is_refused_at_start() {
    let a = Authority::new(1);
    let config = a.s.path("noqdir.toml");
    std::fs::write(&config, "[catalog]\naction = \"quarantine\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hashgate"))
        .args([
            "gateway",
            "--check-config",
            "--config",
            config.to_str().unwrap(),
        ])
        .args(["--filter", &a.p("f.hgf"), "--pub", &a.p("k.pub")])
        .args([
            "--store",
            &a.p("store-x"),
            "--catalog",
            &a.p("x/catalog.db"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs quarantine_dir"),
        "{out:?}"
    );
}

#[test]
fn with_confirmation_a_re_check_acts_only_on_what_the_authority_confirms() {
    let a = Authority::new(1);
    let store = a.p("store-conf");
    let quarantine = a.p("quarantine-conf");
    std::fs::create_dir_all(&quarantine).unwrap();
    let (early, early_bytes) = random_file(&a, "early.bin", 10_000);
    let (wrong, wrong_bytes) = random_file(&a, "wrong.bin", 10_000);
    // The authority's own list holds `early` only: `wrong` in the filter is a false
    // positive, as when a popular file is listed by mistake.
    std::fs::write(
        a.s.path("confirm-list.txt"),
        format!("{},test-cat\n", sha256_hex(&early_bytes)),
    )
    .unwrap();
    std::fs::write(a.s.path("confirm-tokens.txt"), "token-1\n").unwrap();
    std::fs::write(a.s.path("confirm-token"), "token-1\n").unwrap();
    let (_confirmer, cport, _) = spawn_listening(
        Command::new(env!("CARGO_BIN_EXE_hashgate"))
            .args(["authority", "serve", "--list", &a.p("confirm-list.txt")])
            .args([
                "--tokens",
                &a.p("confirm-tokens.txt"),
                "--listen",
                "127.0.0.1:0",
            ]),
    );
    let toml = format!(
        "[confirm]\nurl = \"http://127.0.0.1:{cport}\"\ntoken_file = {:?}\nquarantine = \"confirmed\"\n\n[catalog]\naction = \"quarantine\"\n",
        a.p("confirm-token")
    );
    let catalog = a.p("conf/catalog.db");
    let backend = ["--store", &store, "--quarantine", &quarantine];
    let (_gw, port, _) = catalog_gateway_conf(&a, "conf", &toml, &catalog, &backend);
    assert_eq!(put(port, &early), 201);
    assert_eq!(put(port, &wrong), 201);
    list_bytes(&a, &early_bytes);
    list_bytes(&a, &wrong_bytes);
    a.publish();
    assert!(
        wait_until(Duration::from_secs(30), || retroactive(&a, "conf").len()
            == 2),
        "{:?}",
        retroactive(&a, "conf")
    );
    let records = retroactive(&a, "conf");
    let of = |path: &str| records.iter().find(|r| r["path"] == path).unwrap().clone();
    assert_eq!(of("/early.bin")["action"], "quarantine", "{records:?}");
    assert_eq!(of("/early.bin")["confirmation"], "confirmed");
    assert_eq!(of("/wrong.bin")["action"], "report", "{records:?}");
    assert_eq!(of("/wrong.bin")["confirmation"], "not-listed");
    assert!(
        !Path::new(&store).join("early.bin").exists(),
        "confirmed: quarantined"
    );
    assert!(
        Path::new(&store).join("wrong.bin").exists(),
        "a false positive stays where it is"
    );
}

#[test]
fn an_icap_server_records_what_squid_passes_and_reports_it_once_listed() {
    let a = Authority::new(1);
    let origin = Setup::new();
    let (_nginx, nport, root) = origin.nginx();
    let url = format!("http://127.0.0.1:{}/manifest.json", a.port);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hashgate"));
    cmd.args(["icap", "--feed", &url, "--root", &a.p("root.json")])
        .args(["--state-dir", &a.p("icap"), "--feed-poll", "1s"])
        .args(["--catalog", &a.p("icap/catalog.db")])
        .args(["--audit-log", &a.p("audit-icap.log")])
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    let (_icap, iport, admin) = spawn_listening(&mut cmd);
    let (_squid, proxy) = origin.squid(iport);
    let (early, early_bytes) = random_file(&a, "early.bin", 200_000);
    let (kept, _) = random_file(&a, "kept.bin", 3_000);
    let at = |name: &str| format!("http://127.0.0.1:{nport}/up/{name}");
    for (file, name) in [(&early, "early.bin"), (&kept, "kept.bin")] {
        let (status, _, _) =
            common::squid::curl_via(proxy, &["-T", file.to_str().unwrap()], &at(name));
        assert_eq!(status, 201, "clean when stored");
    }
    list_bytes(&a, &early_bytes);
    a.publish();
    assert!(
        wait_until(Duration::from_secs(30), || retroactive(&a, "icap").len()
            == 1),
        "{:?}",
        retroactive(&a, "icap")
    );
    let record = &retroactive(&a, "icap")[0];
    assert_eq!(record["path"], "/up/early.bin", "{record}");
    assert_eq!(record["host"], format!("127.0.0.1:{nport}"), "{record}");
    assert_eq!(record["action"], "report");
    assert_eq!(record["stored"]["passed_by"]["version"], 1, "{record}");
    assert!(
        root.join("up/early.bin").exists(),
        "the ICAP server only reports"
    );
    assert_eq!(
        metric(admin, "hashgate_retroactive_hits_total{action=\"report\"}"),
        1.0
    );
    // Listed now: refused at upload as ever (past Squid's 204 window the echo is cut
    // short and Squid answers with its own error).
    let (status, _, _) =
        common::squid::curl_via(proxy, &["-T", early.to_str().unwrap()], &at("again.bin"));
    assert!(status == 451 || status >= 500, "{status}");
    assert!(!root.join("up/again.bin").exists());
}

#[test]
fn an_icap_server_refuses_a_re_check_action_it_cannot_take() {
    let a = Authority::new(1);
    let config = a.s.path("icap-delete.toml");
    std::fs::write(&config, "[catalog]\naction = \"delete\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hashgate"))
        .args([
            "icap",
            "--check-config",
            "--config",
            config.to_str().unwrap(),
        ])
        .args(["--filter", &a.p("f.hgf"), "--pub", &a.p("k.pub")])
        .args(["--catalog", &a.p("y/catalog.db")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("can only report"),
        "{out:?}"
    );
}

/// PDQ lines in a published list: the first version with them is a full snapshot (format
/// v2, a new section), the next that adds one hash is a delta of a few hundred bytes that
/// the gateway applies in its guest, reaching exactly the published body; digest
/// matching is unchanged beside them.
#[test]
fn pdq_lines_are_published_and_a_new_hash_travels_as_a_small_delta() {
    let a = Authority::new(1);
    let (_g, port, admin) = a.gateway("state", &[]);
    let hashes: Vec<String> = (0..500)
        .map(|_| {
            let mut h = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut h);
            hex::encode(h)
        })
        .collect();
    let append = |lines: &[String]| {
        let mut list = std::fs::read_to_string(a.s.path("list.txt")).unwrap();
        for l in lines {
            list.push_str(&format!("pdq:{l},pictures\n"));
        }
        std::fs::write(a.s.path("list.txt"), list).unwrap();
    };
    // A hash listed twice is one entry, as digests are.
    append(&[&hashes[..499], &hashes[..1]].concat());
    a.publish();
    wait_version(admin, 2);
    append(&hashes[499..]);
    a.publish();
    wait_version(admin, 3);

    let m = a.manifest();
    let delta = m
        .deltas
        .iter()
        .find(|d| d.from == 2)
        .expect("a delta from 2");
    // About 630 bytes (the header and one slot's bits), more when the new hash lands in
    // a run of occupied slots whose order it shifts (measured up to ~1.3 KB): bounded by
    // the run, never by the list.
    let snapshot = a.manifest().snapshot.length;
    assert!(
        delta.file.length < 2_500 && delta.file.length * 20 < snapshot,
        "{} bytes of a {snapshot}-byte snapshot",
        delta.file.length
    );
    assert!(downloads(admin, "delta") >= 1.0);
    let file = std::fs::read(a.feed(&m.snapshot.path)).unwrap();
    let body = std::fs::read(a.s.path(&format!("state/bodies/{}.body", m.state_sha256))).unwrap();
    assert_eq!(body, file[..file.len() - 80]);
    let filter = hashgate_guest::Filter::parse(body).unwrap();
    assert_eq!(filter.pdq_sections().len(), 1);
    assert_eq!(filter.header().format_version(), 2);
    let last: [u8; 32] = hex::decode(&hashes[499]).unwrap().try_into().unwrap();
    assert_eq!(filter.check_pdq(&[last]).unwrap().len(), 1);
    // The digest entries still block.
    assert_eq!(put(port, &a.s.path("listed.bin")), 451);
}
