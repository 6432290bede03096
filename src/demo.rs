//! `hashgate demo`: the whole flow on one machine, with nothing external.
//!
//! Plays both parts: a demo authority (key, list, signed filter) and an operator
//! (scan of sample files, then an upload gateway on 127.0.0.1:8080 with the embedded
//! store, with curl commands to paste), narrating each step. Every listed digest is either random
//! or the digest of a sample file made here: no real list, no real material.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use hashgate_authority::{build, inspect, BuildParams};
use hashgate_host::config::FileConfig;
use hashgate_host::hashing::ObjectHasher;
use hashgate_host::scan::{self, Event};
use hashgate_host::serve::{self, Front, Mode};
use hashgate_host::trust::SecretKey;
use hashgate_host::Algorithm;
use rand::RngCore;

/// Random digests added to the demo list so the filter has some bulk.
const RANDOM_ENTRIES: usize = 100_000;

/// Runs the demo; unless `scan_only`, ends by serving the gateway on `listen` (with the
/// admin listener on the next port) until interrupted.
pub fn run(dir: Option<PathBuf>, listen: &str, scan_only: bool) -> Result<ExitCode> {
    let dir = match dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("hashgate-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    println!("hashgate demo in {}\n", dir.display());

    println!("1. The authority makes a signing key pair.");
    let key_base = dir.join("demo-authority");
    let keys = hashgate_authority::keys::generate(&key_base, true)?;
    let (secret_path, public_path) = (keys.secret, keys.public);
    let key = SecretKey::read(&secret_path)?;

    println!("\n2. Sample files are made: two will be listed, the rest are clean.");
    let samples = dir.join("samples");
    let files = make_samples(&samples)?;
    for (path, listed) in &files {
        let note = if *listed { "  <- listed" } else { "" };
        println!("   {}{note}", path.display());
    }

    println!(
        "\n3. The authority writes its list: the listed samples' digests plus {RANDOM_ENTRIES} \
         random ones."
    );
    let list_path = dir.join("demo-list.txt");
    write_list(&list_path, &files)?;
    println!("   {}", list_path.display());

    println!("\n4. It builds a signed Bloom filter (false-positive rate 1e-9).");
    let filter_path = dir.join("demo.hgf");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let request = build::Request {
        lists: vec![list_path],
        default_category: None,
        params: BuildParams::new("hashgate-demo", 1, now, now + 7 * 86_400, 1e-9),
    };
    build::build_signed(&request, &key, &filter_path)?;
    let report = inspect::inspect(&filter_path, Some(&key.public_key()))?;
    println!(
        "   {}: {} entries in {} bytes, k={}, signature {:?}",
        filter_path.display(),
        report.entries,
        report.file_len,
        report.hashes,
        report.signature
    );

    println!(
        "\n5. The operator verifies the filter with the authority's public key, loads it into \
         the sandboxed guest (no imports: no network, clock or disk), and scans."
    );
    let found = Mutex::new(Vec::new());
    let key = hashgate_host::trust::PublicKey::read(&public_path)?;
    let job = scan::job::Job {
        paths: &[samples],
        filters: std::slice::from_ref(&filter_path),
        keys: std::slice::from_ref(&key),
        runtime: Arc::new(hashgate_host::Runtime::new(Default::default())?),
        limits: Default::default(),
        uninspectable: Default::default(),
        allow_list: None,
        audit_log: None,
        audit_key: None,
        threads: 2,
        catalog: None,
        catalog_algorithms: Vec::new(),
    };
    let summary = scan::job::run(&job, &|event| match event {
        Event::Hit { path, hits, .. } => {
            let hit = &hits[0];
            found.lock().unwrap().push(format!(
                "   HIT     {}  {}:{}  category {}",
                path.display(),
                hit.algorithm,
                hex::encode(&hit.bytes),
                hit.category.as_deref().unwrap_or("-")
            ));
        }
        Event::Uninspectable { path, problem, .. } => found
            .lock()
            .unwrap()
            .push(format!("  NOTE  {}: {problem}", path.display())),
        Event::Canary { path } => found.lock().unwrap().push(format!(
            "   CANARY  {}  (the test file every filter lists)",
            path.display()
        )),
        Event::Error { path, error } => found
            .lock()
            .unwrap()
            .push(format!("   ERROR   {}: {error}", path.display())),
        Event::Scanned { .. } | Event::Listed { .. } => {}
    })?
    .summary;
    let mut found = found.into_inner().unwrap();
    found.sort();
    for line in found {
        println!("{line}");
    }
    println!(
        "   scanned {} files: {} hits, {} canary, {} errors",
        summary.files, summary.hits, summary.canaries, summary.errors
    );
    println!(
        "\nTry it yourself:\n  hashgate inspect --pub {pub} {filter}\n  hashgate scan --filter {filter} --pub {pub} {dir}",
        pub = public_path.display(),
        filter = filter_path.display(),
        dir = dir.join("samples").display()
    );
    let expected_hits = files.iter().filter(|(_, listed)| *listed).count() as u64;
    if summary.hits != expected_hits || summary.canaries != 1 {
        eprintln!(
            "the demo did not find what it planted: expected {expected_hits} hits and 1 canary"
        );
        return Ok(ExitCode::from(2));
    }
    if scan_only {
        return Ok(ExitCode::SUCCESS);
    }

    let addr: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("--listen {listen:?} is not an address"))?;
    // The admin listener takes the next port (or any free one when the gateway's is 0).
    let admin_port = if addr.port() == 0 {
        0
    } else {
        addr.port().wrapping_add(1)
    };
    let admin = std::net::SocketAddr::new(addr.ip(), admin_port);
    let listed = files
        .iter()
        .find(|(_, l)| *l)
        .map(|(p, _)| p.clone())
        .unwrap_or_default();
    let clean = files
        .iter()
        .find(|(_, l)| !*l)
        .map(|(p, _)| p.clone())
        .unwrap_or_default();
    println!(
        "\n6. The operator puts the upload gateway in front of storage: http://{addr}, with the \
         embedded store in {store}.\n   Paste these in another terminal (Ctrl-C here stops it):\n\n\
         \x20 curl -i -T {listed} http://{addr}/uploads/listed.bin     # 451: refused, never stored\n\
         \x20 curl -i -T {clean} http://{addr}/uploads/photo.jpg       # 201: stored\n\
         \x20 curl -s http://{addr}/uploads/photo.jpg | cmp - {clean} && echo identical\n\
         \x20 hashgate selftest http://{addr}/selftest/canary.txt       # the canary is refused\n\
         \x20 curl -s http://{admin}/metrics | grep hashgate_hits\n\
         \x20 cat {audit}\n",
        store = dir.join("store").display(),
        listed = listed.display(),
        clean = clean.display(),
        audit = dir.join("audit.jsonl").display(),
    );
    let settings = FileConfig {
        listen: Some(addr.to_string()),
        store: Some(dir.join("store")),
        filter: Some(filter_path),
        public_key: Some(public_path),
        admin: Some(admin.to_string()),
        audit_log: Some(dir.join("audit.jsonl")),
        ..FileConfig::default()
    };
    serve::run(Front::gateway(&settings)?, &settings, Mode::Serve)
        .context("starting the demo gateway (try --listen with a free port)")?;
    Ok(ExitCode::SUCCESS)
}

fn make_samples(dir: &Path) -> Result<Vec<(PathBuf, bool)>> {
    std::fs::create_dir_all(dir.join("uploads/2026"))?;
    let mut rng = rand::thread_rng();
    let mut files = Vec::new();
    for (name, size, listed) in [
        ("holiday-photo.jpg", 180_000, false),
        ("quarterly-report.pdf", 65_536, false),
        ("uploads/2026/listed-sample-a.bin", 300_000, true),
        ("uploads/2026/listed-sample-b.bin", 4_096, true),
        ("uploads/notes.txt", 1_200, false),
        ("empty.txt", 0, false),
    ] {
        let mut bytes = vec![0u8; size];
        rng.fill_bytes(&mut bytes);
        let path = dir.join(name);
        std::fs::write(&path, &bytes)?;
        files.push((path, listed));
    }
    let canary = dir.join("hashgate-canary.txt");
    std::fs::write(&canary, hashgate_authority::canary_content())?;
    files.push((canary, false));
    Ok(files)
}

fn write_list(path: &Path, files: &[(PathBuf, bool)]) -> Result<()> {
    use std::fmt::Write as _;
    let mut text = String::from("# hashgate demo list: generated, nothing real\n");
    for (i, (file, _)) in files.iter().filter(|(_, listed)| *listed).enumerate() {
        // One listed sample by SHA-256, the other by MD5, in two categories.
        let algorithm = if i == 0 {
            Algorithm::Sha256
        } else {
            Algorithm::Md5
        };
        let mut hasher = ObjectHasher::new(&[algorithm]);
        hasher.update(&std::fs::read(file)?);
        let digest = hasher.finish().remove(0);
        let category = if i == 0 { "demo-a" } else { "demo-b" };
        writeln!(
            text,
            "{algorithm}:{},{category}",
            hex::encode(&digest.bytes)
        )?;
    }
    let mut rng = rand::thread_rng();
    let mut digest = [0u8; 32];
    for _ in 0..RANDOM_ENTRIES {
        rng.fill_bytes(&mut digest);
        writeln!(text, "{},demo-a", hex::encode(digest))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
