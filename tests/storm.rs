//! Hit storms and the admin allow-list, through a real gateway (embedded store) and
//! curl from many loopback source addresses (127.0.x.y are all this host's).

mod common;

use std::path::Path;

use common::procs::*;

/// PUT `file` from source address `from`; the status.
fn put_from(file: &Path, port: u16, from: &str, key: &str) -> u16 {
    curl_put(
        file,
        &format!("http://127.0.0.1:{port}/{key}"),
        &["--interface", from],
    )
}

fn storms(admin: u16) -> serde_json::Value {
    let out = std::process::Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{admin}/storms")])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

fn audit_lines(s: &Setup) -> Vec<serde_json::Value> {
    s.audit_records("audit.log")
}

#[test]
fn a_storm_from_many_clients_alerts_and_by_default_still_blocks() {
    let (s, a, _) = Setup::small_listed();
    let (_gw, port, admin) = s.store_gateway("[storm]\nclients = 100\n");
    // 200 uploads from one client: no storm.
    for i in 0..200 {
        assert_eq!(put_from(&a, port, "127.0.0.1", &format!("one/{i}")), 451);
    }
    let seen = storms(admin);
    assert_eq!(seen["storming"].as_array().unwrap().len(), 0, "{seen}");
    assert_eq!(seen["hottest"][0]["hits"], 200, "{seen}");
    assert_eq!(seen["hottest"][0]["clients"], 1, "{seen}");
    assert_eq!(metric(admin, "hashgate_storms_total"), 0.0);
    // From 200 distinct addresses: a storm, alerted; every upload still refused.
    for i in 0..200 {
        let from = format!("127.0.{}.{}", 1 + i / 100, 1 + i % 100);
        assert_eq!(
            put_from(&a, port, &from, &format!("many/{i}")),
            451,
            "{from}"
        );
    }
    let seen = storms(admin);
    let storming = seen["storming"].as_array().unwrap();
    assert_eq!(storming.len(), 1, "{seen}");
    assert!(storming[0]["entry"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert_eq!(metric(admin, "hashgate_storms_total"), 1.0);
    assert_eq!(metric(admin, "hashgate_storms_active"), 1.0);
    let records = audit_lines(&s);
    assert_eq!(records.len(), 400);
    assert!(records.iter().all(|r| r["action"] == "block"));
    let alerted = records.iter().filter(|r| r["storm"] == "alert").count();
    assert!((100..200).contains(&alerted), "{alerted}");
}

#[test]
fn on_storm_monitor_lets_only_the_storming_entry_through_for_the_cool_down() {
    let (s, a, b) = Setup::small_listed();
    let (_gw, port, admin) =
        s.store_gateway("[storm]\nclients = 100\non_storm = \"monitor\"\ncooldown_secs = 600\n");
    let codes: Vec<u16> = (0..200)
        .map(|i| {
            let from = format!("127.0.{}.{}", 1 + i / 100, 1 + i % 100);
            put_from(&a, port, &from, &format!("a/{i}"))
        })
        .collect();
    // Refused until the 100th distinct client, let through from then on.
    assert!(codes[..99].iter().all(|&c| c == 451), "{codes:?}");
    assert!(codes[99..].iter().all(|&c| c == 201), "{codes:?}");
    assert!(s.path("store/a/150").exists());
    // Another listed entry, from the same clients, still blocks; so does the canary.
    assert_eq!(put_from(&b, port, "127.0.1.5", "b"), 451);
    let canary = s.path("canary.txt");
    assert!(hashgate(&["canary", "--out", canary.to_str().unwrap()])
        .status
        .success());
    assert_eq!(put_from(&canary, port, "127.0.1.5", "canary"), 451);
    let records = audit_lines(&s);
    let monitored: Vec<_> = records.iter().filter(|r| r["storm"] == "monitor").collect();
    assert_eq!(monitored.len(), 101, "{records:?}");
    assert!(monitored.iter().all(|r| r["action"] == "monitor"));
    assert_eq!(storms(admin)["storming"].as_array().unwrap().len(), 1);
}

/// `GET /allow-list`: the entries added through the admin listener.
fn local_list(admin: u16) -> String {
    let out = std::process::Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{admin}/allow-list")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_admin_allow_list_changes_without_a_restart_needs_the_token_and_is_kept() {
    let (s, a, _) = Setup::small_listed();
    std::fs::write(s.path("token"), "s3cret-token\n").unwrap();
    let toml = format!(
        "admin_token_file = {:?}\nallow_list_local = {:?}\n",
        s.path("token"),
        s.path("local-allow.txt")
    );
    let entry = format!("sha256:{}", sha256_hex(&std::fs::read(&a).unwrap()));
    let admin_call = |admin: u16, method: &str, token: Option<&str>| -> u16 {
        let url = format!("http://127.0.0.1:{admin}/allow-list/{entry}");
        let auth = token.map(|t| format!("Authorization: Bearer {t}"));
        let mut args = vec!["-X", method];
        if let Some(h) = &auth {
            args.extend(["-H", h.as_str()]);
        }
        args.push(&url);
        curl(&args)
    };
    let (gw, port, admin) = s.store_gateway(&toml);
    assert_eq!(put_from(&a, port, "127.0.0.1", "1"), 451);
    assert_eq!(admin_call(admin, "PUT", None), 401);
    assert_eq!(admin_call(admin, "PUT", Some("wrong-token!")), 401);
    assert_eq!(put_from(&a, port, "127.0.0.1", "2"), 451);
    assert_eq!(admin_call(admin, "PUT", Some("s3cret-token")), 200);
    assert_eq!(put_from(&a, port, "127.0.0.1", "3"), 201);
    let bad = format!("http://127.0.0.1:{admin}/allow-list/sha256:abc");
    assert_eq!(
        curl(&[
            "-X",
            "PUT",
            "-H",
            "Authorization: Bearer s3cret-token",
            &bad
        ]),
        400
    );
    drop(gw);
    // Kept across a restart.
    let (gw, port, admin) = s.store_gateway(&toml);
    assert_eq!(put_from(&a, port, "127.0.0.1", "4"), 201);
    assert!(local_list(admin).contains(&entry));
    // A client that percent-encodes the `:` names the same entry.
    let encoded = format!(
        "http://127.0.0.1:{admin}/allow-list/{}",
        entry.replace(':', "%3A")
    );
    assert_eq!(
        curl(&[
            "-X",
            "DELETE",
            "-H",
            "Authorization: Bearer s3cret-token",
            &encoded
        ]),
        200
    );
    assert!(!local_list(admin).contains(&entry));
    assert_eq!(put_from(&a, port, "127.0.0.1", "5"), 451);
    drop(gw);
    // Without a token configured, writes are off.
    let (_gw, _, admin) = s.store_gateway("");
    assert_eq!(admin_call(admin, "PUT", Some("s3cret-token")), 403);
}
