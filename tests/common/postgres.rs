//! A real PostgreSQL server for the catalog tests: Debian's binaries
//! (`/usr/lib/postgresql/N/bin`, installed by scripts/test.sh), a cluster of its own in a
//! temp dir, on loopback, trust authentication, fsync off. As root (CI), the server runs
//! as the `postgres` user Debian's package creates: PostgreSQL refuses to run as root.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::procs::{free_port, wait_until, TestCa};

/// The role and database the tests connect as and to.
const USER: &str = "hashgate";

/// One PostgreSQL server, stopped when dropped.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The port it listens on (kept across a restart).
    pub port: u16,
    server: Option<Child>,
    /// Its certificate and key, when it speaks TLS.
    tls: Option<(PathBuf, PathBuf)>,
}

/// The newest installed server's binaries.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (scripts/test.sh installs Debian's postgresql)")
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("postgres").exists())
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL server binary").1
}

/// `command` as the `postgres` user when this process is root.
fn as_server_user(program: &Path) -> Command {
    if !is_root() {
        return Command::new(program);
    }
    let mut command = Command::new("setpriv");
    command
        .args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
    command
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid of the `postgres` user.
fn server_user() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "no postgres user (Debian's postgresql package makes it)"
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    (id("-u"), id("-g"))
}

impl Postgres {
    /// A new cluster, started and accepting connections.
    pub fn start() -> Postgres {
        Postgres::start_with(None)
    }

    /// [`Postgres::start`] with TLS on (`ssl = on`), its certificate for localhost and
    /// 127.0.0.1 signed by `ca`.
    pub fn start_tls(ca: &TestCa) -> Postgres {
        Postgres::start_with(Some(ca))
    }

    fn start_with(ca: Option<&TestCa>) -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let (uid, gid) = server_user();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let bin = bin_dir();
        let data = dir.path().join("data");
        let out = as_server_user(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "-A", "trust", "-E", "UTF8", "--no-sync"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The server reads its key only if no one else may (0600, its own user).
        let tls = ca.map(|ca| {
            let (cert, key) = ca.server(dir.path(), "postgres");
            std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            if is_root() {
                let (uid, gid) = server_user();
                for file in [&cert, &key] {
                    std::os::unix::fs::chown(file, Some(uid), Some(gid)).unwrap();
                }
            }
            (cert, key)
        });
        let mut postgres = Postgres {
            dir,
            bin,
            port: 0,
            server: None,
            tls,
        };
        // A free port can be taken between the check and the bind: try another.
        for _ in 0..5 {
            postgres.port = free_port();
            if postgres.run() {
                return postgres;
            }
        }
        panic!("PostgreSQL did not start: {}", postgres.log());
    }

    /// Starts the server on its port; whether it accepts connections.
    fn run(&mut self) -> bool {
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let mut server = as_server_user(&self.bin.join("postgres"));
        if let Some((cert, key)) = &self.tls {
            server.args(["-c", "ssl=on"]);
            server
                .arg("-c")
                .arg(format!("ssl_cert_file={}", cert.display()));
            server
                .arg("-c")
                .arg(format!("ssl_key_file={}", key.display()));
        }
        let child = server
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.server = Some(child);
        let ready = wait_until(Duration::from_secs(30), || {
            if let Some(Ok(Some(_))) = self.server.as_mut().map(|c| c.try_wait()) {
                return true; // exited: stop waiting
            }
            self.psql("SELECT 1").is_some()
        });
        let exited = matches!(
            self.server.as_mut().map(|c| c.try_wait()),
            Some(Ok(Some(_)))
        );
        ready && !exited
    }

    /// Stops the server (fast shutdown: sessions are cut, as when it crashes or is
    /// restarted under its clients).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, with its data.
    pub fn restart(&mut self) {
        assert!(self.run(), "PostgreSQL did not come back: {}", self.log());
    }

    /// A connection URL for a catalog in database `postgres`.
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/postgres", self.port)
    }

    /// A URL for a new, empty database of its own.
    pub fn new_database(&self, name: &str) -> String {
        self.psql(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|| panic!("CREATE DATABASE {name}: {}", self.log()));
        format!("postgres://{USER}@127.0.0.1:{}/{name}", self.port)
    }

    /// The one-column answer of `sql` in database `postgres`, lines joined; `None` if
    /// it failed.
    pub fn psql(&self, sql: &str) -> Option<String> {
        self.psql_in("postgres", sql)
    }

    /// The answer of `sql` in database `db`.
    pub fn psql_in(&self, db: &str, sql: &str) -> Option<String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .args(["-d", db, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            // Immediate shutdown: nothing to keep.
            let _ = Command::new("kill")
                .args(["-QUIT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}
