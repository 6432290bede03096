//! A real Squid (Debian's package) with hashgate as its ICAP service, for the tests
//! that put the ICAP server where it runs; scripts/test.sh installs it.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::procs::{free_port, Killed, Setup};

impl Setup {
    /// Squid with hashgate as its REQMOD and RESPMOD service (`bypass=0`: fail closed),
    /// caching nothing.
    pub fn squid(&self, icap_port: u16) -> (Killed, u16) {
        let dir = self.path("squid");
        std::fs::create_dir_all(&dir).unwrap();
        // Started as root, Squid works as `proxy`: it must reach and write its directory.
        chmod(self.dir.path(), 0o755);
        chmod(&dir, 0o777);
        for _ in 0..5 {
            let port = free_port();
            let conf = format!(
                "http_port 127.0.0.1:{port}
pid_filename {dir}/squid.pid
cache_log {dir}/cache.log
access_log stdio:{dir}/access.log
coredump_dir {dir}
cache deny all
cache_mem 8 MB
pinger_enable off
http_access allow all
shutdown_lifetime 1 seconds
# Squid before 6.11 kills uploads whose request buffer fills (bug 5405); docs/ICAP in
# README.md says so and why this is set.
client_request_buffer_max_size 64 MB
icap_enable on
icap_send_client_ip on
icap_service hashgate_req reqmod_precache icap://127.0.0.1:{icap_port}/reqmod bypass=0
icap_service hashgate_resp respmod_precache icap://127.0.0.1:{icap_port}/respmod bypass=0
adaptation_access hashgate_req allow all
adaptation_access hashgate_resp allow all
",
                dir = dir.display()
            );
            let conf_path = dir.join("squid.conf");
            std::fs::write(&conf_path, conf).unwrap();
            let squid = ["/usr/sbin/squid", "squid"]
                .into_iter()
                .find(|p| Path::new(p).exists())
                .unwrap_or("squid");
            let child = Command::new(squid)
                .args(["-N", "-f"])
                .arg(&conf_path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("squid must be installed (scripts/test.sh installs it)");
            let mut child = Killed(child);
            let deadline = Instant::now() + Duration::from_secs(15);
            while TcpStream::connect(("127.0.0.1", port)).is_err()
                && child.0.try_wait().unwrap().is_none()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            if child.0.try_wait().unwrap().is_none()
                && TcpStream::connect(("127.0.0.1", port)).is_ok()
            {
                return (child, port);
            }
        }
        let log = std::fs::read_to_string(dir.join("cache.log")).unwrap_or_default();
        panic!("squid did not start:\n{log}");
    }
}

/// Sets `path`'s permission bits to `mode`.
pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// curl through the proxy: (status, body, curl's exit code).
pub fn curl_via(proxy: u16, args: &[&str], url: &str) -> (u16, Vec<u8>, i32) {
    let out = Command::new("curl")
        .args(["-s", "-x", &format!("http://127.0.0.1:{proxy}")])
        // No `Expect: 100-continue` pause on every upload.
        .args(["-H", "Expect:", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl");
    let mut body = out.stdout;
    let at = body.iter().rposition(|&b| b == b'\n').unwrap();
    let status = String::from_utf8_lossy(&body[at + 1..])
        .parse()
        .unwrap_or(0);
    body.truncate(at);
    (status, body, out.status.code().unwrap_or(-1))
}
