//! Real processes for the end-to-end tests: the built binary, nginx (Debian's
//! nginx-light, WebDAV PUT) as the origin, curl as the client; all on loopback. The
//! test scripts install nginx and curl.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rand::RngCore;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_for(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a shell command line in `dir` (the tools as an operator would type them).
pub fn sh(dir: &Path, line: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(line)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{line}: {out:?}");
}

/// Polls `done` every 20 ms until it holds or `limit` has passed; whether it held. For
/// what a test waits on instead of sleeping a guessed time.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

/// Whether nothing accepts connections on `port` any more (a server shutting down).
pub fn refused(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_err()
}

pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A filter, a key, sample files (one listed by SHA-256), in a temp dir.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub listed: PathBuf,
    pub clean: PathBuf,
    pub big_clean: PathBuf,
}

pub fn hashgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hashgate"))
        .args(args)
        .output()
        .unwrap()
}

impl Setup {
    pub fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let mut rng = rand::thread_rng();
        let mut write = |name: &str, size: usize| {
            let mut bytes = vec![0u8; size];
            rng.fill_bytes(&mut bytes);
            std::fs::write(p(name), &bytes).unwrap();
            (p(name), bytes)
        };
        let (listed, listed_bytes) = write("listed.bin", 3 << 20);
        let (clean, _) = write("clean.bin", 70_000);
        let (big_clean, _) = write("big-clean.bin", 24 << 20);
        let mut h = hashgate_host::hashing::ObjectHasher::new(&[hashgate_host::Algorithm::Sha256]);
        h.update(&listed_bytes);
        let digest = hex::encode(&h.finish()[0].bytes);
        std::fs::write(p("list.txt"), format!("{digest},test-cat\n")).unwrap();
        assert!(hashgate(&["keygen", "--out", p("k").to_str().unwrap()])
            .status
            .success());
        let out = hashgate(&[
            "build",
            "--key",
            p("k.key").to_str().unwrap(),
            "--series",
            "gw",
            "--version",
            "1",
            "--out",
            p("f.hgf").to_str().unwrap(),
            p("list.txt").to_str().unwrap(),
        ]);
        assert!(out.status.success());
        std::fs::write(p("allow.txt"), format!("sha256:{digest}\n")).unwrap();
        Setup {
            dir,
            listed,
            clean,
            big_clean,
        }
    }

    pub fn path(&self, n: &str) -> PathBuf {
        self.dir.path().join(n)
    }

    /// nginx with WebDAV PUT on a port of its own, serving `root`.
    pub fn nginx(&self) -> (Nginx, u16, PathBuf) {
        self.nginx_with(None)
    }

    /// nginx as [`Setup::nginx`], serving https with `tls` (certificate, key) if given.
    pub fn nginx_with(&self, tls: Option<(&Path, &Path)>) -> (Nginx, u16, PathBuf) {
        self.nginx_serving(tls, DAV, None)
    }

    /// nginx with `location` (the body of `location / { ... }`), on `port` if given (a
    /// restart on the same address), else on a port the kernel picks.
    ///
    /// nginx cannot listen on port 0, so the test binds the socket and nginx inherits it
    /// (its `NGINX` variable, as in a binary upgrade): no free port is guessed, so no
    /// neighbour can take it between the guess and the bind.
    pub fn nginx_serving(
        &self,
        tls: Option<(&Path, &Path)>,
        location: &str,
        port: Option<u16>,
    ) -> (Nginx, u16, PathBuf) {
        let listener = bind_loopback(port.unwrap_or(0));
        let port = listener.local_addr().unwrap().port();
        let root = self.path("origin");
        let temp = self.path("nginx-temp");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&temp).unwrap();
        // A master process: with `master_process off`, nginx 1.22 dies of SIGSEGV taking
        // over an inherited socket. `user` keeps root's workers able to write `root`
        // (nginx ignores it, with a notice, when it does not run as root).
        let conf = format!(
            "daemon off; master_process on; worker_processes 1; user root root;
pid {pid}; error_log {err} info;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {temp};
  proxy_temp_path {temp}; fastcgi_temp_path {temp}; uwsgi_temp_path {temp}; scgi_temp_path {temp};
  client_max_body_size 0;
  server {{
    listen 127.0.0.1:{port}{ssl};
    root {root};
    location / {{ {location} }}
  }}
}}
",
            pid = self.path("nginx.pid").display(),
            err = self.path("nginx.err").display(),
            temp = temp.display(),
            root = root.display(),
            ssl = match tls {
                Some((cert, key)) => format!(
                    " ssl; ssl_certificate {}; ssl_certificate_key {}",
                    cert.display(),
                    key.display()
                ),
                None => String::new(),
            },
        );
        std::fs::write(self.path("nginx.conf"), conf).unwrap();
        let fd = listener.as_raw_fd();
        let mut command = Command::new("nginx");
        command
            .args(["-p", self.dir.path().to_str().unwrap(), "-c"])
            .arg(self.path("nginx.conf"))
            .env("NGINX", format!("{fd};"))
            .stderr(Stdio::null());
        // SAFETY: between fork and exec only fcntl, which is async-signal-safe, runs; it
        // lets the child keep the listening socket that std opened close-on-exec.
        unsafe {
            command.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .expect("nginx must be installed (scripts/test.sh installs nginx-light)");
        drop(listener);
        let mut nginx = Nginx(child);
        // Connections queue on the socket from the start; ready is when nginx answers one.
        let ready = wait_until(Duration::from_secs(10), || {
            assert!(
                nginx.0.try_wait().unwrap().is_none(),
                "nginx exited: {}",
                std::fs::read_to_string(self.path("nginx.err")).unwrap_or_default()
            );
            answers_http(port)
        });
        assert!(ready, "nginx does not answer on {port}");
        (nginx, port, root)
    }
}

/// A listening socket on 127.0.0.1:`port` (0: the kernel picks). A given port may still be
/// held by a server that is shutting down, so that is tried for a while.
fn bind_loopback(port: u16) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(listener) => return listener,
            Err(e) if Instant::now() > deadline => panic!("cannot bind 127.0.0.1:{port}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Whether something on `port` answers an HTTP request (any status, plain or TLS alert).
fn answers_http(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut byte = [0u8; 1];
    stream.write_all(b"HEAD / HTTP/1.0\r\n\r\n").is_ok() && matches!(stream.read(&mut byte), Ok(1))
}

/// An nginx master process: stopped with SIGTERM on drop, so that it takes its worker
/// down with it (a killed master would leave the worker holding the port).
pub struct Nginx(pub Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// nginx's `location /` for an origin that stores PUTs and moves and copies them (WebDAV).
const DAV: &str = "dav_methods PUT DELETE MKCOL COPY MOVE; create_full_put_path on;";

/// A server's `/metrics` on its admin port.
pub fn metrics(admin: u16) -> String {
    let out = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{admin}/metrics")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of the sample whose name and labels are exactly `series`, 0 if absent.
pub fn metric(admin: u16, series: &str) -> f64 {
    metrics(admin)
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// Waits until the server with admin port `admin` is answering at least `n` requests
/// (ICAP transactions): uploads under way, before a signal or a swap is sent.
pub fn wait_in_flight(admin: u16, n: usize) {
    let got = || metric(admin, "hashgate_requests_in_flight");
    assert!(
        wait_until(Duration::from_secs(20), || got() >= n as f64),
        "{} requests in flight, not {n}",
        got()
    );
}

/// Starts a server (gateway, ICAP server, demo) that binds port 0 and reads the ports it
/// announces on stderr: no port is chosen here, so parallel tests cannot collide.
pub fn spawn_listening(command: &mut Command) -> (Killed, u16, u16) {
    let (child, port, admin, _) = spawn_logged(command);
    (child, port, admin)
}

/// What a server started by [`spawn_logged`] has written to stderr so far, line by line.
pub type Log = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// [`spawn_listening`], keeping the server's stderr lines.
pub fn spawn_logged(command: &mut Command) -> (Killed, u16, u16, Log) {
    use std::io::BufRead;
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let child = Killed(child);
    // The server's one line for programs (`hashgate_host::serve`), once it listens:
    // ready {"server":"gateway","listen":"http://127.0.0.1:PORT","admin":...}
    let port_of = |url: &serde_json::Value| -> u16 {
        url.as_str()
            .and_then(|u| u.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    };
    let mut lines = std::io::BufReader::new(stderr).lines();
    let ready: serde_json::Value = loop {
        let line = lines
            .next()
            .expect("the server exited before it was ready")
            .unwrap();
        if let Some(json) = line.strip_prefix("ready ") {
            break serde_json::from_str(json).expect("the ready line is JSON");
        }
    };
    let (port, admin) = (port_of(&ready["listen"]), port_of(&ready["admin"]));
    assert_ne!(port, 0, "{ready}");
    // Keep draining stderr so the gateway never blocks on a full pipe.
    let log = Log::default();
    log.lock().unwrap().push(format!("ready {ready}"));
    let kept = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if std::env::var_os("HASHGATE_TEST_LOG").is_some() {
                eprintln!("[server] {line}");
            }
            kept.lock().unwrap().push(line);
        }
    });
    (child, port, admin, log)
}

/// curl with `args` (and no `Expect: 100-continue` pause), returning the status code.
pub fn curl(args: &[&str]) -> u16 {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Expect:",
        ])
        .args(args)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

/// `curl -T file url`, returning the status code.
pub fn curl_put(file: &Path, url: &str, extra: &[&str]) -> u16 {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-T"])
        .arg(file)
        .args(extra)
        .arg(url)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    walk(dir)
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Resident memory of a process, in KiB.
pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl Setup {
    /// `hashgate gateway` with an admin listener and an audit log, `backend` and `extra` flags.
    pub fn gateway(&self, backend: &[&str], extra: &[&str]) -> (Killed, u16, u16) {
        self.gateway_at("127.0.0.1:0", backend, extra)
    }

    /// [`Setup::gateway`] listening on `listen` (a restarted gateway takes its old port).
    pub fn gateway_at(&self, listen: &str, backend: &[&str], extra: &[&str]) -> (Killed, u16, u16) {
        let mut args = vec![
            "gateway",
            "--filter",
            self.path("f.hgf").to_str().unwrap().to_owned().leak(),
            "--pub",
            self.path("k.pub").to_str().unwrap().to_owned().leak(),
            "--listen",
            listen.to_owned().leak(),
            "--admin",
            "127.0.0.1:0",
            "--audit-log",
            self.free_audit_log("audit.log")
                .to_str()
                .unwrap()
                .to_owned()
                .leak(),
        ];
        args.extend_from_slice(backend);
        args.extend_from_slice(extra);
        spawn_listening(Command::new(env!("CARGO_BIN_EXE_hashgate")).args(&args))
    }
}

impl Setup {
    /// Runs `hashgate gateway` with this setup's filter and key and `extra` to the end
    /// (for start-up errors: a gateway that starts does not return).
    pub fn gateway_run(&self, extra: &[&str]) -> Output {
        let (filter, key) = (self.path("f.hgf"), self.path("k.pub"));
        let mut args = vec!["gateway", "--filter", filter.to_str().unwrap()];
        args.extend(["--pub", key.to_str().unwrap()]);
        args.extend_from_slice(extra);
        hashgate(&args)
    }

    /// A gateway started with `--config` holding `toml`.
    pub fn configured_gateway(&self, toml: &str) -> (Killed, u16, u16) {
        let config = self.path("gw.toml");
        std::fs::write(&config, toml).unwrap();
        self.gateway(&["--config", config.to_str().unwrap()], &[])
    }
}

impl Setup {
    /// Filter `name` (series `icap`) listing `Setup::listed` and new random files of the
    /// given names and sizes, which it returns after `Setup::listed`.
    pub fn filter_listing(
        &self,
        name: &str,
        version: u32,
        extra: &[(&str, usize)],
    ) -> Vec<PathBuf> {
        let mut rng = rand::thread_rng();
        let mut files = vec![self.listed.clone()];
        for &(file, size) in extra {
            let mut bytes = vec![0u8; size];
            rng.fill_bytes(&mut bytes);
            std::fs::write(self.path(file), &bytes).unwrap();
            files.push(self.path(file));
        }
        let list: String = files
            .iter()
            .map(|f| format!("{},icap-test\n", sha256_hex(&std::fs::read(f).unwrap())))
            .collect();
        let list_path = self.path(&format!("{name}.txt"));
        std::fs::write(&list_path, list).unwrap();
        let out = hashgate(&[
            "build",
            "--key",
            self.path("k.key").to_str().unwrap(),
            "--series",
            "icap",
            "--version",
            &version.to_string(),
            "--out",
            self.path(name).to_str().unwrap(),
            list_path.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{out:?}");
        files
    }
}

impl Setup {
    /// `hashgate build` of `list` into `out` (series `gw`, `version`), with this setup's
    /// key.
    pub fn build(&self, list: &Path, out: &str, version: u32) {
        let built = hashgate(&[
            "build",
            "--key",
            self.path("k.key").to_str().unwrap(),
            "--series",
            "gw",
            "--version",
            &version.to_string(),
            "--out",
            self.path(out).to_str().unwrap(),
            list.to_str().unwrap(),
        ]);
        assert!(built.status.success(), "{built:?}");
    }
}

impl Setup {
    /// The paths `hashgate recheck` names in `catalog` with a filter listing `files`:
    /// where the catalog says those files are stored.
    pub fn recorded_at(&self, catalog: &Path, files: &[&Path]) -> Vec<String> {
        let list: String = files
            .iter()
            .map(|f| format!("{},recorded\n", sha256_hex(&std::fs::read(f).unwrap())))
            .collect();
        std::fs::write(self.path("recorded.txt"), list).unwrap();
        let filter = self.path("recorded.hgf");
        let built = hashgate(&[
            "build",
            "--key",
            self.path("k.key").to_str().unwrap(),
            "--series",
            "recorded",
            "--version",
            "1",
            "--out",
            filter.to_str().unwrap(),
            self.path("recorded.txt").to_str().unwrap(),
        ]);
        assert!(built.status.success(), "{built:?}");
        let out = hashgate(&[
            "recheck",
            "--json",
            "--catalog",
            catalog.to_str().unwrap(),
            "--filter",
            filter.to_str().unwrap(),
            "--pub",
            self.path("k.pub").to_str().unwrap(),
        ]);
        let mut paths: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["type"] == "hit")
            .filter_map(|v| v["path"].as_str().map(str::to_string))
            .collect();
        paths.sort();
        paths
    }
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let mut h = hashgate_host::hashing::ObjectHasher::new(&[hashgate_host::Algorithm::Sha256]);
    h.update(bytes);
    hex::encode(&h.finish()[0].bytes)
}

/// A test CA and a server certificate for localhost / 127.0.0.1, as PEM files in `dir`:
/// `ca.pem`, `<name>.pem`, `<name>.key`.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    pub fn new(dir: &Path) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "hashgate test CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
        TestCa { cert, key }
    }

    /// Writes a fresh server certificate; returns (cert path, key path).
    pub fn server(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("hashgate test {name}"));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

impl Setup {
    /// A setup whose filter `f.hgf` lists two small files, `a.bin` and `b.bin` (quick to
    /// upload hundreds of times).
    pub fn small_listed() -> (Setup, PathBuf, PathBuf) {
        let s = Setup::new();
        let (a, b) = (s.path("a.bin"), s.path("b.bin"));
        std::fs::write(
            &a,
            b"a listed file, small so that hundreds of uploads are quick",
        )
        .unwrap();
        std::fs::write(&b, b"another listed file").unwrap();
        let list = s.path("small.txt");
        std::fs::write(
            &list,
            format!(
                "{}\n{}\n",
                sha256_hex(&std::fs::read(&a).unwrap()),
                sha256_hex(&std::fs::read(&b).unwrap())
            ),
        )
        .unwrap();
        s.build(&list, "f.hgf", 2);
        (s, a, b)
    }

    /// A gateway over the embedded store `store/`, configured by `toml`, with `extra`
    /// flags.
    pub fn store_gateway(&self, toml: &str) -> (Killed, u16, u16) {
        self.store_gateway_with(toml, &[])
    }

    /// [`Setup::store_gateway`] with `extra` flags.
    pub fn store_gateway_with(&self, toml: &str, extra: &[&str]) -> (Killed, u16, u16) {
        let config = self.path(&format!("gw-{}.toml", sha256_hex(toml.as_bytes())));
        std::fs::write(&config, toml).unwrap();
        let store = self.path("store");
        let mut flags = vec!["--config", config.to_str().unwrap()];
        flags.extend_from_slice(extra);
        self.gateway(&["--store", store.to_str().unwrap()], &flags)
    }
}

impl Setup {
    /// `name` (`audit.log`), or, while a server started from this setup writes it,
    /// `audit-2.log`, `audit-3.log`, ...: an audit log is one hash chain with one
    /// writer, and a second process is refused it.
    pub fn free_audit_log(&self, name: &str) -> PathBuf {
        let (stem, ext) = name.rsplit_once('.').unwrap_or((name, "log"));
        (1..)
            .map(|n| match n {
                1 => self.path(name),
                n => self.path(&format!("{stem}-{n}.{ext}")),
            })
            .find(|log| {
                let mut head = log.as_os_str().to_owned();
                head.push(".head");
                match std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(PathBuf::from(head))
                {
                    Ok(f) => f.try_lock().is_ok(),
                    Err(_) => false,
                }
            })
            .expect("a free audit log")
    }
}

impl Setup {
    /// The records of the audit log `name` (`audit.log`), its chain's own lines
    /// (checkpoints, recoveries) left out.
    pub fn audit_records(&self, name: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path(name))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|v: &serde_json::Value| v.get("event").is_none())
            .collect()
    }
}
