//! Feedback to the authority: two operators' gateways (embedded stores) report hits to
//! one real `hashgate authority serve`, which keeps what its registered operators sign
//! and refuses forged, replayed and unknown reports; `hashgate authority feedback`
//! totals them. The first gateway starts before the authority: its report is retried
//! until it lands, while it goes on refusing listed files.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::procs::*;

fn keygen(s: &Setup, name: &str) {
    assert!(
        hashgate(&["keygen", "--out", s.path(name).to_str().unwrap()])
            .status
            .success()
    );
}

fn totals(dir: &Path) -> Vec<serde_json::Value> {
    let out = hashgate(&[
        "authority",
        "feedback",
        "--json",
        "--feedback-dir",
        dir.to_str().unwrap(),
    ]);
    if !out.status.success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn post(port: u16, body: &[u8], s: &Setup) -> u16 {
    let file = s.path("post.bin");
    std::fs::write(&file, body).unwrap();
    curl(&[
        "-X",
        "POST",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("http://127.0.0.1:{port}/v1/feedback"),
    ])
}

#[test]
fn operators_reports_are_verified_kept_once_and_totalled() {
    let (s, a, b) = Setup::small_listed();
    for name in ["op1", "op2", "stranger"] {
        keygen(&s, name);
    }
    let operators = s.path("operators");
    std::fs::create_dir(&operators).unwrap();
    for name in ["op1", "op2"] {
        std::fs::copy(
            s.path(&format!("{name}.pub")),
            operators.join(format!("{name}.pub")),
        )
        .unwrap();
    }
    let authority_port = free_port();
    let feedback = |key: &str| {
        format!(
            "[feedback]\nurl = \"http://127.0.0.1:{authority_port}/v1/feedback\"\nkey = {:?}\ninterval_secs = 1\ntimeout_secs = 2\n",
            s.path(&format!("{key}.key"))
        )
    };
    // The first gateway reports to an authority that is not there yet.
    // Its audit log is signed after every record: each report carries the last
    // checkpoint, which the authority keeps as a witness.
    let gw1_config = format!(
        "audit_key = {:?}\naudit_checkpoint_records = 1\n{}",
        s.path("op1.key"),
        feedback("op1")
    );
    let (_gw1, port1, admin1) = s.store_gateway(&gw1_config);
    for i in 0..3 {
        let url = format!("http://127.0.0.1:{port1}/one/{i}");
        assert_eq!(curl_put(&a, &url, &[]), 451);
    }
    assert!(wait_until(Duration::from_secs(20), || metric(
        admin1,
        "hashgate_feedback_reports_total{outcome=\"failed\"}"
    ) >= 1.0));
    // Enforcement goes on meanwhile.
    assert_eq!(
        curl_put(&b, &format!("http://127.0.0.1:{port1}/one/b"), &[]),
        451
    );
    let allow = s.path("allow.txt");
    let (_gw2, port2, _) =
        s.store_gateway_with(&feedback("op2"), &["--allow-list", allow.to_str().unwrap()]);
    for i in 0..2 {
        assert_eq!(
            curl_put(&a, &format!("http://127.0.0.1:{port2}/two/{i}"), &[]),
            451
        );
    }
    assert_eq!(
        curl_put(&b, &format!("http://127.0.0.1:{port2}/two/b"), &[]),
        451
    );

    let tokens = s.path("tokens");
    std::fs::write(&tokens, "a-token-for-range-queries\n").unwrap();
    let dir = s.path("feedback");
    let listen = format!("127.0.0.1:{authority_port}");
    let (_authority, _, _) = spawn_listening(Command::new(env!("CARGO_BIN_EXE_hashgate")).args([
        "authority",
        "serve",
        "--list",
        s.path("small.txt").to_str().unwrap(),
        "--tokens",
        tokens.to_str().unwrap(),
        "--listen",
        &listen,
        "--operators",
        operators.to_str().unwrap(),
        "--feedback-dir",
        dir.to_str().unwrap(),
    ]));
    let entry = |file: &Path| format!("sha256:{}", sha256_hex(&std::fs::read(file).unwrap()));
    let total = |totals: &[serde_json::Value], e: &str| {
        totals
            .iter()
            .find(|t| t["entry"] == e)
            .cloned()
            .unwrap_or_default()
    };
    assert!(
        wait_until(Duration::from_secs(30), || {
            let t = totals(&dir);
            total(&t, &entry(&a))["hits"] == 5 && total(&t, &entry(&b))["hits"] == 2
        }),
        "{:?}",
        totals(&dir)
    );
    let t = totals(&dir);
    assert_eq!(total(&t, &entry(&a))["operators"], 2);
    // The second operator's allow-list (the setup's listed file) is reported.
    assert_eq!(total(&t, &entry(&s.listed))["allowed_by"], 1, "{t:?}");

    // A kept report sent again is a replay; changed, it is forged; by a key the
    // authority does not know, refused.
    let kept = std::fs::read_dir(dir.join("op1"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "report"))
        .unwrap();
    let sealed = std::fs::read(&kept).unwrap();
    assert_eq!(post(authority_port, &sealed, &s), 409);
    let mut forged = sealed.clone();
    let text = String::from_utf8_lossy(&forged[..forged.len() - 80]).into_owned();
    let at = text.find("\"hits\":").unwrap() + 7;
    forged[at] = if forged[at] == b'9' { b'8' } else { b'9' };
    assert_eq!(post(authority_port, &forged, &s), 403);
    let stranger = hashgate_host::trust::SecretKey::read(&s.path("stranger.key")).unwrap();
    let report = hashgate_trust::feedback::Report {
        hits: vec![hashgate_trust::feedback::EntryCount {
            entry: entry(&a),
            hits: 1_000_000,
        }],
        ..hashgate_trust::feedback::Report::new(&stranger.public_key(), u64::MAX)
    };
    let unknown = hashgate_trust::feedback::seal(&report, &stranger);
    assert_eq!(post(authority_port, &unknown, &s), 403);
    assert_eq!(post(authority_port, b"not a report at all", &s), 403);
    // None of them changed the totals.
    let after = totals(&dir);
    assert!(
        total(&after, &entry(&a))["hits"].as_u64().unwrap() < 1000,
        "{after:?}"
    );
    let human = hashgate(&[
        "authority",
        "feedback",
        "--feedback-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&human.stdout).contains(&entry(&a)));

    // The witness: op1's checkpoints as the authority received them. Its log verifies
    // against them; cut back before the last one, it does not.
    let witness = s.path("witness");
    let out = hashgate(&[
        "authority",
        "feedback",
        "--feedback-dir",
        dir.to_str().unwrap(),
        "--checkpoints",
        "op1",
    ]);
    let lines = String::from_utf8_lossy(&out.stdout).into_owned();
    let last = lines
        .lines()
        .last()
        .expect("op1's reports carried checkpoints");
    std::fs::write(&witness, &lines).unwrap();
    let log = s.path("audit.log");
    let verify = |log: &Path| {
        hashgate(&[
            "audit",
            "verify",
            "--pub",
            s.path("op1.pub").to_str().unwrap(),
            "--witness",
            witness.to_str().unwrap(),
            log.to_str().unwrap(),
        ])
    };
    let ok = verify(&log);
    assert!(ok.status.success(), "{ok:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    let cut_at = text.find(last).unwrap();
    let cut = s.path("cut.log");
    std::fs::write(&cut, &text[..cut_at]).unwrap();
    let broken = verify(&cut);
    assert_eq!(broken.status.code(), Some(1), "{broken:?}");
    assert!(
        String::from_utf8_lossy(&broken.stdout).contains("removed from the end"),
        "{broken:?}"
    );
}
