//! The gateway as a process, in front of a real nginx origin (WebDAV PUT), driven by
//! curl. Needs `nginx` (Debian's nginx-light) and `curl`; scripts/test.sh installs them.

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::procs::*;
use rand::RngCore;

/// An origin that routes on `Host` (nginx storing under `$host`) gets the host the
/// client named, however it named it: `Host`, HTTP/2's `:authority` (no `Host` on the
/// wire), or an absolute-form target, whose authority RFC 9112 puts before `Host`.
#[test]
fn the_origin_gets_the_host_the_client_named_over_http2_and_absolute_targets() {
    let s = Setup::new();
    let location = format!(
        "dav_methods PUT; create_full_put_path on; root {}/$host;",
        s.path("hosts").display()
    );
    let (_nginx, origin_port, _) = s.nginx_serving(None, &location, None);
    let (_gw, port, _) = s.gateway(
        &["--origin", &format!("http://127.0.0.1:{origin_port}")],
        &[],
    );
    let url = |k: &str| format!("http://127.0.0.1:{port}/{k}");
    let host = ["-H", "Host: files.example"];

    assert_eq!(curl_put(&s.clean, &url("h1.bin"), &host), 201);
    let h2 = [host.as_slice(), &["--http2-prior-knowledge"]].concat();
    assert_eq!(curl_put(&s.clean, &url("h2.bin"), &h2), 201);
    let absolute = [
        "--request-target",
        "http://files.example/absolute.bin",
        "-H",
        "Host: elsewhere.example",
    ];
    assert_eq!(curl_put(&s.clean, &url("ignored.bin"), &absolute), 201);
    // A listed file is refused whichever way its host is named.
    assert_eq!(curl_put(&s.listed, &url("h2-listed.bin"), &h2), 451);
    // Userinfo in an absolute-form target is no host: refused, nothing stored.
    let userinfo = ["--request-target", "http://u@files.example/userinfo.bin"];
    assert_eq!(curl_put(&s.clean, &url("ignored.bin"), &userinfo), 400);

    let mut stored: Vec<String> = files_under(&s.path("hosts"))
        .iter()
        .map(|p| {
            p.strip_prefix(s.path("hosts"))
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    stored.sort();
    assert_eq!(
        stored,
        [
            "files.example/absolute.bin",
            "files.example/h1.bin",
            "files.example/h2.bin"
        ]
    );
}

#[test]
fn listed_uploads_never_reach_the_origin_and_clean_ones_arrive_intact() {
    let s = Setup::new();
    let (_nginx, origin_port, root) = s.nginx();
    let origin = format!("http://127.0.0.1:{origin_port}");
    let (_gw, port, admin) = s.gateway(&["--origin", &origin], &[]);
    let url = |k: &str| format!("http://127.0.0.1:{port}/{k}");

    assert_eq!(curl_put(&s.listed, &url("up/listed.bin"), &[]), 451);
    assert_eq!(
        curl_put(
            &s.listed,
            &url("up/listed-chunked.bin"),
            &["-H", "Transfer-Encoding: chunked"]
        ),
        451
    );
    assert_eq!(curl_put(&s.clean, &url("up/clean.bin"), &[]), 201);
    assert_eq!(
        curl_put(
            &s.big_clean,
            &url("up/big.bin"),
            &["-H", "Transfer-Encoding: chunked"]
        ),
        201
    );
    assert_eq!(
        curl_put(&s.clean, &url("up/h2.bin"), &["--http2-prior-knowledge"]),
        201
    );
    assert_eq!(
        curl_put(
            &s.listed,
            &url("up/h2-listed.bin"),
            &["--http2-prior-knowledge"]
        ),
        451
    );

    let stored: Vec<String> = files_under(&root)
        .iter()
        .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    let mut sorted = stored.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["up/big.bin", "up/clean.bin", "up/h2.bin"],
        "origin holds {stored:?}"
    );
    assert_eq!(
        std::fs::read(root.join("up/clean.bin")).unwrap(),
        std::fs::read(&s.clean).unwrap()
    );
    assert_eq!(
        std::fs::read(root.join("up/big.bin")).unwrap(),
        std::fs::read(&s.big_clean).unwrap()
    );
    // nginx's temp files of the aborted uploads are gone too.
    assert!(files_under(&s.path("nginx-temp")).is_empty());

    // GET is proxied untouched.
    let out = Command::new("curl")
        .args(["-s", &url("up/clean.bin")])
        .output()
        .unwrap();
    assert_eq!(out.stdout, std::fs::read(&s.clean).unwrap());

    // Audit and metrics saw both blocks.
    let audit = std::fs::read_to_string(s.path("audit.log")).unwrap();
    let records: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 3, "{audit}");
    assert!(records
        .iter()
        .all(|r| r["action"] == "block" && r["category"] == "test-cat"));
    assert_eq!(records[0]["path"], "/up/listed.bin");
    let metrics = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{admin}/metrics")])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics.contains("hashgate_hits_total{action=\"block\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("hashgate_filter_version 1"), "{metrics}");
}

#[test]
fn monitor_mode_and_the_allow_list_let_listed_files_through() {
    let s = Setup::new();
    let (_nginx, origin_port, root) = s.nginx();
    let origin = format!("http://127.0.0.1:{origin_port}");
    {
        let (_gw, port, _) = s.gateway(&["--origin", &origin], &["--monitor"]);
        assert_eq!(
            curl_put(&s.listed, &format!("http://127.0.0.1:{port}/m.bin"), &[]),
            201
        );
    }
    let audit = std::fs::read_to_string(s.path("audit.log")).unwrap();
    assert!(audit.contains("\"action\":\"monitor\""), "{audit}");
    {
        let allow = s.path("allow.txt");
        let (_gw, port, _) = s.gateway(
            &["--origin", &origin],
            &["--allow-list", allow.to_str().unwrap()],
        );
        assert_eq!(
            curl_put(&s.listed, &format!("http://127.0.0.1:{port}/a.bin"), &[]),
            201
        );
    }
    assert!(root.join("m.bin").exists() && root.join("a.bin").exists());
}

#[test]
fn origin_down_gives_502_and_a_client_abort_stores_nothing() {
    let s = Setup::new();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let (_gw, port, _) = s.gateway(&["--origin", &dead], &[]);
    assert_eq!(
        curl_put(&s.clean, &format!("http://127.0.0.1:{port}/x.bin"), &[]),
        502
    );

    let (_nginx, origin_port, root) = s.nginx();
    let origin = format!("http://127.0.0.1:{origin_port}");
    let (_gw2, port2, _) = s.gateway(&["--origin", &origin], &[]);
    // A client that announces 1 MiB, sends 200 KiB and vanishes.
    {
        use std::io::Write;
        let mut stream = TcpStream::connect(("127.0.0.1", port2)).unwrap();
        write!(
            stream,
            "PUT /aborted.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n"
        )
        .unwrap();
        stream.write_all(&vec![7u8; 200 * 1024]).unwrap();
    }
    // The origin drops its partial file once the gateway has cut the upload off.
    assert!(wait_until(Duration::from_secs(10), || {
        !root.join("aborted.bin").exists() && files_under(&s.path("nginx-temp")).is_empty()
    }));
}

#[test]
fn the_embedded_store_keeps_clean_files_and_nothing_else() {
    let s = Setup::new();
    let store = s.path("store");
    let (_gw, port, _) = s.gateway(&["--store", store.to_str().unwrap()], &[]);
    let url = |k: &str| format!("http://127.0.0.1:{port}/{k}");
    assert_eq!(curl_put(&s.listed, &url("b/listed.bin"), &[]), 451);
    assert_eq!(curl_put(&s.clean, &url("b/clean.bin"), &[]), 201);
    assert_eq!(
        curl_put(&s.clean, &url("../escape.bin"), &["--path-as-is"]),
        400
    );
    assert_eq!(
        curl_put(
            &s.clean,
            &url("b/%2e%2e/%2e%2e/escape.bin"),
            &["--path-as-is"]
        ),
        400
    );
    let files: Vec<PathBuf> = files_under(&store);
    assert_eq!(files, [store.join("b/clean.bin")]);
    let out = Command::new("curl")
        .args(["-s", &url("b/clean.bin")])
        .output()
        .unwrap();
    assert_eq!(out.stdout, std::fs::read(&s.clean).unwrap());
    let status = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(status(&["-I", &url("b/clean.bin")]), "200");
    assert_eq!(status(&["-X", "DELETE", &url("b/clean.bin")]), "204");
    assert_eq!(status(&[&url("b/clean.bin")]), "404");
    let selftest = hashgate(&["selftest", &url("selftest/canary.txt")]);
    assert_eq!(
        selftest.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&selftest.stdout)
    );
}

#[test]
fn memory_stays_bounded_during_a_large_streamed_upload() {
    let s = Setup::new();
    let (_nginx, origin_port, root) = s.nginx();
    let origin = format!("http://127.0.0.1:{origin_port}");
    let (gw, port, _) = s.gateway(&["--origin", &origin], &[]);
    let pid = gw.0.id();
    let big = s.path("256m.bin");
    {
        let mut f = std::fs::File::create(&big).unwrap();
        let mut chunk = vec![0u8; 1 << 20];
        let mut rng = rand::thread_rng();
        for _ in 0..256 {
            rng.fill_bytes(&mut chunk);
            std::io::Write::write_all(&mut f, &chunk).unwrap();
        }
    }
    let before = rss_kb(pid);
    let url = format!("http://127.0.0.1:{port}/big.bin");
    let mut curl = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-T"])
        .arg(&big)
        .arg(&url)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut peak = before;
    while curl.try_wait().unwrap().is_none() {
        peak = peak.max(rss_kb(pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = curl.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "201");
    assert_eq!(
        std::fs::metadata(root.join("big.bin")).unwrap().len(),
        256 << 20
    );
    assert!(
        peak < before + 32 * 1024,
        "RSS grew from {before} KiB to {peak} KiB during a 256 MiB upload"
    );
}

#[test]
fn a_stalled_body_gets_408_and_the_config_file_is_read() {
    use std::io::{Read, Write};
    let s = Setup::new();
    let (_nginx, origin_port, root) = s.nginx();
    let config = s.path("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "origin = \"http://127.0.0.1:{origin_port}\"\nbody_timeout_secs = 1\n\n[actions]\ndefault = \"block\"\n"
        ),
    )
    .unwrap();
    let (_gw, port, _) = s.gateway(&["--config", config.to_str().unwrap()], &[]);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "PUT /slow.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
    )
    .unwrap();
    stream.write_all(&[1u8; 1000]).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(!root.join("slow.bin").exists());

    // A bad config file is a clear start-up error.
    std::fs::write(&config, "orgin = \"typo\"\n").unwrap();
    let out = s.gateway_run(&["--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field"));
}

#[test]
fn the_demo_serves_a_gateway_that_refuses_its_listed_samples() {
    let dir = tempfile::tempdir().unwrap();
    let (_demo, port, _) = spawn_listening(
        Command::new(env!("CARGO_BIN_EXE_hashgate"))
            .args(["demo", "--dir", dir.path().to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0"]),
    );
    let samples = dir.path().join("samples");
    let url = |k: &str| format!("http://127.0.0.1:{port}/{k}");
    assert_eq!(
        curl_put(
            &samples.join("uploads/2026/listed-sample-a.bin"),
            &url("u/a"),
            &[]
        ),
        451
    );
    assert_eq!(
        curl_put(
            &samples.join("uploads/2026/listed-sample-b.bin"),
            &url("u/b"),
            &[]
        ),
        451
    );
    assert_eq!(
        curl_put(&samples.join("holiday-photo.jpg"), &url("u/photo.jpg"), &[]),
        201
    );
    let stored = files_under(&dir.path().join("store"));
    assert_eq!(stored, [dir.path().join("store/u/photo.jpg")]);
}

#[test]
fn an_expired_filter_is_still_enforced_and_reported_stale() {
    let s = Setup::new();
    let out = Command::new(env!("CARGO_BIN_EXE_hashgate"))
        .args([
            "build",
            "--key",
            s.path("k.key").to_str().unwrap(),
            "--series",
            "gw",
        ])
        .args([
            "--version",
            "1",
            "--expires",
            "1h",
            "--out",
            s.path("f.hgf").to_str().unwrap(),
        ])
        .arg(s.path("list.txt"))
        .env("SOURCE_DATE_EPOCH", "1000000000")
        .output()
        .unwrap();
    assert!(out.status.success());
    let store = s.path("store");
    let (_gw, port, admin) = s.gateway(&["--store", store.to_str().unwrap()], &[]);
    assert_eq!(
        curl_put(&s.listed, &format!("http://127.0.0.1:{port}/x.bin"), &[]),
        451
    );
    let get = |path: &str| {
        let out = Command::new("curl")
            .args([
                "-s",
                "-w",
                "\n%{http_code}",
                &format!("http://127.0.0.1:{admin}{path}"),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let ready = get("/readyz");
    assert!(ready.ends_with("503") && ready.contains("stale"), "{ready}");
    assert!(get("/healthz").ends_with("200"));
    assert!(get("/metrics").contains("hashgate_filter_stale 1"));
}

#[test]
fn sigterm_lets_an_upload_in_flight_finish() {
    use std::io::{Read, Write};
    let s = Setup::new();
    let store = s.path("store");
    let (gw, port, admin) = s.gateway(&["--store", store.to_str().unwrap()], &[]);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "PUT /late.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\n\r\n"
    )
    .unwrap();
    stream.write_all(&[5u8; 10_000]).unwrap();
    wait_in_flight(admin, 1);
    let killed = Command::new("kill")
        .args(["-TERM", &gw.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // New connections are refused while the upload in flight goes on.
    assert!(wait_until(Duration::from_secs(10), || refused(port)));
    stream.write_all(&[5u8; 10_000]).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 201");
    assert_eq!(
        std::fs::read(store.join("late.bin")).unwrap(),
        vec![5u8; 20_000]
    );
}

/// A fake origin that only misbehaves (the one mock here: nginx cannot be told to stall
/// or reset on purpose). `reset`: close at once; otherwise read forever, never answer.
fn bad_origin(reset: bool) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            if reset {
                drop(stream);
                continue;
            }
            std::thread::spawn(move || {
                let mut sink = [0u8; 65536];
                while std::io::Read::read(&mut stream, &mut sink).is_ok_and(|n| n > 0) {}
            });
        }
    });
    port
}

#[test]
fn an_origin_that_stalls_gives_504_and_one_that_resets_gives_502() {
    let s = Setup::new();
    let config = s.path("gw.toml");
    std::fs::write(
        &config,
        format!(
            "origin = \"http://127.0.0.1:{}\"\norigin_timeout_secs = 1\n",
            bad_origin(false)
        ),
    )
    .unwrap();
    let (_gw, port, _) = s.gateway(&["--config", config.to_str().unwrap()], &[]);
    assert_eq!(
        curl_put(&s.clean, &format!("http://127.0.0.1:{port}/x"), &[]),
        504
    );
    let reset = format!("http://127.0.0.1:{}", bad_origin(true));
    let (_gw2, port2, _) = s.gateway(&["--origin", &reset], &[]);
    assert_eq!(
        curl_put(&s.clean, &format!("http://127.0.0.1:{port2}/x"), &[]),
        502
    );
}

#[test]
fn bodies_over_the_limit_get_413_and_leave_nothing() {
    let s = Setup::new();
    let store = s.path("store");
    let (_gw, port, _) = s.configured_gateway(&format!(
        "store = {:?}\nmax_body_bytes = 1000\n",
        store.to_str().unwrap()
    ));
    let url = format!("http://127.0.0.1:{port}/big.bin");
    assert_eq!(curl_put(&s.clean, &url, &[]), 413);
    assert_eq!(
        curl_put(&s.clean, &url, &["-H", "Transfer-Encoding: chunked"]),
        413
    );
    assert!(files_under(&store).is_empty());
}

#[test]
fn slow_headers_are_cut_off_and_connections_are_capped() {
    use std::io::{Read, Write};
    let s = Setup::new();
    let store = s.path("store");
    let (_gw, port, _) = s.configured_gateway(&format!(
        "store = {:?}\nheader_timeout_secs = 1\nmax_connections = 1\n",
        store.to_str().unwrap()
    ));

    // A client that trickles its headers is disconnected after the header timeout.
    let started = Instant::now();
    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.write_all(b"PUT /x HTTP/1.1\r\nHost: x\r\n").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "held {:?}",
        started.elapsed()
    );

    // With one connection allowed, an idle one keeps a second client waiting...
    let idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // A fixed wait: an accepted connection that sent nothing is not observable from
    // outside (no request is in flight), and the kernel's accept queue hides it too.
    std::thread::sleep(Duration::from_millis(200));
    let blocked = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "--max-time",
            "1",
            &format!("http://127.0.0.1:{port}/a"),
        ])
        .status()
        .unwrap();
    assert!(!blocked.success(), "a second connection was served");
    // ... until it goes away.
    drop(idle);
    assert!(wait_until(Duration::from_secs(10), || curl_put(
        &s.clean,
        &format!("http://127.0.0.1:{port}/a"),
        &["--max-time", "2"]
    ) == 201));
    assert_eq!(
        curl_put(&s.clean, &format!("http://127.0.0.1:{port}/a"), &[]),
        201
    );
}

#[test]
fn every_serving_thread_decides_and_drains_on_sigterm() {
    use std::io::{Read, Write};
    let s = Setup::new();
    let (_nginx, origin_port, root) = s.nginx();
    let origin = format!("http://127.0.0.1:{origin_port}");
    let (gw, port, admin) = s.gateway(&["--origin", &origin], &["--workers", "3"]);
    let pid = gw.0.id();
    let serving_threads = || -> Vec<String> {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|name| name.trim().to_string())
            .filter(|name| name.starts_with("hashgate-core"))
            .collect()
    };
    // The threads start just after the address is announced.
    let started = Instant::now();
    let mut threads = serving_threads();
    while threads.len() < 3 && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
        threads = serving_threads();
    }
    assert_eq!(threads.len(), 3, "serving threads: {threads:?}");

    // Many uploads at once, listed and clean, land on whichever thread accepts them.
    let uploads: Vec<_> = (0..24)
        .map(|i| {
            let (file, name) = if i % 2 == 0 {
                (s.listed.clone(), format!("many/listed-{i}.bin"))
            } else {
                (s.clean.clone(), format!("many/clean-{i}.bin"))
            };
            let url = format!("http://127.0.0.1:{port}/{name}");
            std::thread::spawn(move || (i, curl_put(&file, &url, &[])))
        })
        .collect();
    for upload in uploads {
        let (i, status) = upload.join().unwrap();
        assert_eq!(status, if i % 2 == 0 { 451 } else { 201 }, "upload {i}");
    }
    let mut stored: Vec<String> = files_under(&root.join("many"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    stored.sort();
    let mut clean: Vec<String> = (1..24)
        .step_by(2)
        .map(|i| format!("clean-{i}.bin"))
        .collect();
    clean.sort();
    assert_eq!(stored, clean);

    // Uploads in flight on several connections (so on several threads) all finish after
    // SIGTERM, and new connections are refused meanwhile.
    let mut streams: Vec<TcpStream> = (0..6)
        .map(|i| {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            write!(
                stream,
                "PUT /late/{i}.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\n\r\n"
            )
            .unwrap();
            stream.write_all(&[i as u8; 10_000]).unwrap();
            stream
        })
        .collect();
    wait_in_flight(admin, streams.len());
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    assert!(wait_until(Duration::from_secs(10), || refused(port)));
    for (i, stream) in streams.iter_mut().enumerate() {
        stream.write_all(&[i as u8; 10_000]).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut answer = [0u8; 12];
        stream.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"HTTP/1.1 201", "upload {i}");
        assert_eq!(
            std::fs::read(root.join(format!("late/{i}.bin"))).unwrap(),
            vec![i as u8; 20_000]
        );
    }
}

#[test]
fn zero_workers_is_a_clear_error() {
    let s = Setup::new();
    let out = s.gateway_run(&["--listen", "127.0.0.1:0", "--workers", "0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("workers must be at least 1"), "{stderr}");
}

#[test]
fn hop_by_hop_headers_stop_at_the_gateway_and_the_rest_reach_the_origin() {
    let s = Setup::new();
    // An origin that answers with the request headers it got (nginx's $http_* variables;
    // an empty value means the header did not arrive).
    let echo = r#"default_type text/plain; return 200 "named=$http_x_named kept=$http_x_kept keep-alive=$http_keep_alive proxy-authorization=$http_proxy_authorization te=$http_te target=$request_uri\n";"#;
    let (_nginx, origin_port, _) = s.nginx_serving(None, echo, None);
    let origin = format!("http://127.0.0.1:{origin_port}");
    let (_gw, port, _) = s.gateway(&["--origin", &origin], &[]);
    for method in ["GET", "PUT"] {
        let out = Command::new("curl")
            .args(["-s", "-X", method, "--data-binary", "abc"])
            .args(["-H", "Connection: keep-alive, X-Named"])
            .args([
                "-H",
                "X-Named: 1",
                "-H",
                "X-Kept: 2",
                "-H",
                "Keep-Alive: timeout=5",
            ])
            .args([
                "-H",
                "Proxy-Authorization: Basic c2VjcmV0",
                "-H",
                "TE: trailers",
            ])
            .arg(format!("http://127.0.0.1:{port}/a/b?c=d&e"))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "named= kept=2 keep-alive= proxy-authorization= te= target=/a/b?c=d&e\n",
            "{method}"
        );
    }
}

/// An origin that counts the body bytes it has been sent, as they arrive, and answers
/// `201` once a request's `Content-Length` is in (the other mock here: nginx cannot say
/// how much of a body it has received before the request ends).
fn counting_origin() -> (u16, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicU64, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = std::sync::Arc::new(AtomicU64::new(0));
    let count = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let (Ok(mut stream), count) = (stream, count.clone()) else {
                continue;
            };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                let mut pending: Vec<u8> = Vec::new();
                'requests: loop {
                    // The head, then Content-Length body bytes, counted as they come.
                    let head_end = loop {
                        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match stream.read(&mut buf) {
                            Ok(n) if n > 0 => pending.extend_from_slice(&buf[..n]),
                            _ => break 'requests,
                        }
                    };
                    let head = String::from_utf8_lossy(&pending[..head_end]).to_lowercase();
                    let length: u64 = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    let mut body = (pending.len() - head_end) as u64;
                    count.fetch_add(body, Ordering::SeqCst);
                    pending.clear();
                    while body < length {
                        match stream.read(&mut buf) {
                            Ok(n) if n > 0 => {
                                body += n as u64;
                                count.fetch_add(n as u64, Ordering::SeqCst);
                            }
                            _ => break 'requests,
                        }
                    }
                    let answer = b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n";
                    if stream.write_all(answer).is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, received)
}

#[test]
fn a_known_length_upload_streams_to_the_origin_all_but_its_final_bytes() {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    let s = Setup::new();
    let (origin_port, received) = counting_origin();
    let origin = format!("http://127.0.0.1:{origin_port}");
    let (_gw, port, _) = s.gateway(&["--origin", &origin], &[]);
    let wait_for_count = |at_least: u64| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while received.load(Ordering::SeqCst) < at_least && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        received.load(Ordering::SeqCst)
    };

    for (file, expect) in [(&s.listed, "451"), (&s.clean, "201")] {
        let body = std::fs::read(file).unwrap();
        let len = body.len() as u64;
        let before = received.load(Ordering::SeqCst);
        let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let head = format!("PUT /up/x HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n");
        client.write_all(head.as_bytes()).unwrap();
        // The first part, then a pause: none of it can be the last byte, so all of it
        // reaches the origin while the client waits, not just what precedes its last frame.
        let first = body.len() * 2 / 3;
        client.write_all(&body[..first]).unwrap();
        assert_eq!(
            wait_for_count(before + first as u64) - before,
            first as u64,
            "the origin got the first part while the client paused"
        );
        client.write_all(&body[first..]).unwrap();
        let mut status = [0u8; 12];
        client.read_exact(&mut status).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&status),
            format!("HTTP/1.1 {expect}")
        );
        if expect == "451" {
            // A fixed wait: for something that must not happen (more bytes reaching the
            // origin after the refusal).
            std::thread::sleep(Duration::from_millis(300));
            let got = received.load(Ordering::SeqCst) - before;
            assert!(
                got >= first as u64 && got < len,
                "a listed upload's final bytes never reach the origin ({got} of {len})"
            );
        } else {
            let got = wait_for_count(before + len) - before;
            assert_eq!(got, len, "a clean upload arrives whole");
        }
    }
}

/// Everything the peer sends until it closes the connection.
fn read_to_close(stream: &mut TcpStream) -> String {
    use std::io::Read;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut all = Vec::new();
    stream.read_to_end(&mut all).unwrap();
    String::from_utf8_lossy(&all).into_owned()
}

#[test]
fn a_request_with_two_lengths_is_refused_and_the_connection_closed() {
    use std::io::Write;
    let s = Setup::new();
    let (_nginx, origin_port, root) = s.nginx();
    let origin = format!("http://127.0.0.1:{origin_port}");
    let (_gw, port, _) = s.gateway(&["--origin", &origin], &[]);
    // A clean request, then one declaring both lengths whose chunked body "ends" early
    // and carries a second, smuggled request: as Content-Length frames it, the smuggled
    // request is body; as chunked frames it, it is the next request.
    let smuggled = "PUT /up/smuggled.bin HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc";
    let chunked = format!("0\r\n\r\n{smuggled}");
    for (name, lengths) in [
        (
            "CL first",
            format!(
                "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                chunked.len()
            ),
        ),
        (
            "TE first",
            format!(
                "transfer-encoding: chunked\r\ncontent-length: {}\r\n",
                chunked.len()
            ),
        ),
    ] {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let requests = format!(
            "PUT /up/first.bin HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nfirst\
             PUT /up/ambiguous.bin HTTP/1.1\r\nHost: h\r\n{lengths}\r\n{chunked}"
        );
        stream.write_all(requests.as_bytes()).unwrap();
        let answers = read_to_close(&mut stream);
        let statuses: Vec<&str> = answers
            .lines()
            .filter(|l| l.starts_with("HTTP/1.1 "))
            .collect();
        assert_eq!(statuses.len(), 2, "{name}: {answers}");
        assert!(statuses[0].starts_with("HTTP/1.1 201"), "{name}: {answers}");
        assert!(statuses[1].starts_with("HTTP/1.1 400"), "{name}: {answers}");
        assert!(answers.contains("Content-Length and Transfer-Encoding"));
        let stored: Vec<_> = files_under(&root)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(stored, ["first.bin"], "{name}");
        std::fs::remove_file(root.join("up/first.bin")).unwrap();
    }
    // A body that merely contains such a head is a body: stored intact.
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let body = format!(
        "PUT /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n{smuggled}"
    );
    let request = format!(
        "PUT /up/text.txt HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    assert!(read_to_close(&mut stream).starts_with("HTTP/1.1 201"));
    assert_eq!(
        std::fs::read_to_string(root.join("up/text.txt")).unwrap(),
        body
    );
}

#[test]
fn a_stalled_audit_write_holds_back_only_the_answer_it_audits() {
    use std::io::{Read, Write};
    let s = Setup::new();
    // The audit log is a pipe whose buffer is full: the gateway's next write of a
    // record blocks, as on a stalled disk, until the pipe is read.
    let fifo = s.path("audit.log");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let mut pipe = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    pipe.write_all(&[b'#'; 65536]).unwrap();
    let store = s.path("store");
    let (_gw, port, admin) = s.gateway(&["--store", store.to_str().unwrap()], &["--workers", "1"]);
    let listed = s.listed.clone();
    let blocked = std::thread::spawn(move || {
        curl_put(&listed, &format!("http://127.0.0.1:{port}/listed.bin"), &[])
    });
    let metrics = || {
        let out = Command::new("curl")
            .args(["-s", &format!("http://127.0.0.1:{admin}/metrics")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The hit is decided and its record queued (hits are counted just before).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !metrics().contains("hashgate_hits_total{action=\"block\"} 1") {
        assert!(std::time::Instant::now() < deadline, "no hit");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Another upload on the same (only) serving thread is answered meanwhile.
    let url = format!("http://127.0.0.1:{port}/clean.bin");
    assert_eq!(curl_put(&s.clean, &url, &["--max-time", "10"]), 201);
    assert!(
        !blocked.is_finished(),
        "the hit was answered before its record was written"
    );
    // Once the pipe is read, the record is written and the hit answered.
    let mut audit = Vec::new();
    let mut buf = vec![0u8; 65536];
    while !audit.ends_with(b"\n") || !String::from_utf8_lossy(&audit).contains("\"block\"") {
        let n = pipe.read(&mut buf).unwrap();
        audit.extend_from_slice(&buf[..n]);
    }
    assert_eq!(blocked.join().unwrap(), 451);
    assert!(String::from_utf8_lossy(&audit).contains("listed.bin"));
}

#[test]
fn check_config_validates_without_serving() {
    let s = Setup::new();
    let store = s.path("store");
    let config = s.path("gw.toml");
    std::fs::write(
        &config,
        format!("store = {store:?}\nmax_body_bytes = 1000\n"),
    )
    .unwrap();
    let out = s.gateway_run(&["--check-config", "--config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("configuration ok"), "{stderr}");
    // A typo in the file, and a tampered filter, are errors with exit 2.
    std::fs::write(&config, "max_body_byte = 1000\n").unwrap();
    let out = s.gateway_run(&["--check-config", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_body_byte"));
    let mut filter = std::fs::read(s.path("f.hgf")).unwrap();
    let mid = filter.len() / 2;
    filter[mid] ^= 1;
    std::fs::write(s.path("f.hgf"), filter).unwrap();
    let out = s.gateway_run(&["--check-config", "--store", store.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    // The error names the file that failed, once.
    let named = s.path("f.hgf").display().to_string();
    assert!(
        stderr.contains(&format!("loading {named}: signature check failed")),
        "{stderr}"
    );
    assert_eq!(stderr.matches(&named).count(), 1, "{stderr}");
}

/// A `Host` with a path in it is refused, as nginx refuses it: origins route on the
/// host, and the catalog keys objects by it.
#[test]
fn a_host_with_a_slash_in_it_is_refused_unforwarded() {
    let s = Setup::new();
    let (_nginx, origin_port, root) = s.nginx();
    let origin = format!("http://127.0.0.1:{origin_port}");
    let (_gw, port, _) = s.gateway(&["--origin", &origin], &[]);
    let url = format!("http://127.0.0.1:{port}/up/x.bin");
    let clean = s.clean.to_str().unwrap();
    for host in ["a/b", "a\\b", "example.com/up"] {
        let header = format!("Host: {host}");
        assert_eq!(curl_put(&s.clean, &url, &["-H", &header]), 400, "{host}");
    }
    assert!(files_under(&root).is_empty(), "nothing reached the origin");
    // An ordinary host is still an ordinary request.
    let status = curl(&["-T", clean, "-H", "Host: example.com:8080", &url]);
    assert_eq!(status, 201);
}
