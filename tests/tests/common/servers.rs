//! Real database servers for the end-to-end tests, each a private instance on a free loopback
//! port with its data in a temporary directory, stopped when dropped.

use std::{
    ffi::CString,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use periscope_tests::{OtlpReceiver, ReceivedSpan, Transport};

use super::{Agent, Program, free_port, wait_for_port};

pub struct Server {
    pub port: u16,
    _program: Program,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn user_ids(name: &str) -> (u32, u32) {
    let c = CString::new(name).unwrap();
    // SAFETY: getpwnam returns a pointer to static storage or null; read at once.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    assert!(
        !pw.is_null(),
        "system user {name} missing: run `cargo xtask setup`"
    );
    // SAFETY: non-null result of getpwnam.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

fn private_dir(tag: &str, owner: (u32, u32)) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("periscope-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let c = CString::new(dir.to_str().unwrap()).unwrap();
    // SAFETY: chown on a path we just created.
    unsafe { libc::chown(c.as_ptr(), owner.0, owner.1) };
    dir
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn postgres_bin(name: &str) -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .expect("PostgreSQL installed (cargo xtask setup)")
        .flatten()
        .map(|e| e.path())
        .collect();
    versions.sort();
    versions.last().unwrap().join("bin").join(name)
}

/// PostgreSQL with trust authentication for user `postgres`.
pub fn postgres() -> Server {
    let ids = user_ids("postgres");
    let dir = private_dir("pg", ids);
    let data = dir.join("data");
    run_ok(
        Command::new(postgres_bin("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .uid(ids.0)
            .gid(ids.1),
    );
    let port = free_port();
    let program = Program::spawn(
        Command::new(postgres_bin("postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&dir)
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
            ])
            .uid(ids.0)
            .gid(ids.1),
    );
    wait_for_port(port);
    Server {
        port,
        _program: program,
        dir,
    }
}

/// MariaDB without grant tables: `root` with any password.
pub fn mariadb() -> Server {
    let ids = user_ids("mysql");
    let dir = private_dir("mariadb", ids);
    let data = dir.join("data");
    run_ok(
        Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args([
                "--user=mysql",
                "--skip-test-db",
                "--auth-root-authentication-method=normal",
            ]),
    );
    let port = free_port();
    let program = Program::spawn(
        Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
            .arg(format!("--port={port}"))
            .args([
                "--bind-address=127.0.0.1",
                "--user=mysql",
                "--skip-grant-tables",
            ]),
    );
    wait_for_port(port);
    // The port opens a moment before the server accepts logins.
    std::thread::sleep(Duration::from_millis(300));
    Server {
        port,
        _program: program,
        dir,
    }
}

pub fn redis() -> Server {
    let dir = private_dir("redis", (0, 0));
    let port = free_port();
    let program = Program::spawn(
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--daemonize", "no", "--dir"])
            .arg(&dir),
    );
    wait_for_port(port);
    Server {
        port,
        _program: program,
        dir,
    }
}

/// How an nginx site listens.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    Http,
    Https,
    /// HTTPS with HTTP/2 offered by ALPN.
    Http2OverTls,
}

/// A prepared nginx site (config, files, certificate). Started separately, so that a test can
/// start the agent first and see nginx picked up at exec.
pub struct NginxSite {
    pub port: u16,
    dir: PathBuf,
    conf: PathBuf,
}

impl NginxSite {
    /// `locations`: extra `location … { … }` blocks; `/index.html` is served from the root.
    pub fn prepare(tag: &str, listen: Listen, locations: &str) -> NginxSite {
        let dir = private_dir(tag, (0, 0));
        std::fs::write(dir.join("index.html"), "<h1>hello</h1>\n").unwrap();
        let tls = if listen == Listen::Http {
            String::new()
        } else {
            run_ok(
                Command::new("openssl")
                    .args([
                        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    ])
                    .args(["-subj", "/CN=localhost", "-keyout"])
                    .arg(dir.join("key.pem"))
                    .arg("-out")
                    .arg(dir.join("cert.pem")),
            );
            format!(
                "ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem;",
                d = dir.display()
            )
        };
        let suffix = match listen {
            Listen::Http => "",
            Listen::Https => " ssl",
            Listen::Http2OverTls => " ssl http2",
        };
        let port = free_port();
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon off; master_process on; worker_processes 1; pid {d}/nginx.pid;\n\
                 error_log {d}/error.log;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d};\n\
                   fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
                   server {{ listen 127.0.0.1:{port}{suffix}; root {d}; {tls}\n\
                     {locations} }} }}\n",
                d = dir.display()
            ),
        )
        .unwrap();
        NginxSite { port, dir, conf }
    }

    /// Serve `contents` as `/NAME`.
    pub fn add_file(&self, name: &str, contents: &str) {
        std::fs::write(self.dir.join(name), contents).unwrap();
    }

    /// Start nginx (master and one worker) on this site and wait for its port.
    pub fn start(&self) -> Program {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("nginx is not installed: run `cargo xtask setup`");
        let program = Program::spawn(Command::new(nginx).arg("-c").arg(&self.conf));
        wait_for_port(self.port);
        program
    }
}

impl NginxSite {
    /// Start the agent (`--exe nginx`, OTLP gRPC), then nginx so it is picked up at exec, run
    /// `requests` against the site's base URL, and return the spans of this site's port once
    /// `expected` have arrived (other nginx processes on the machine are selected too).
    pub fn traced(&self, requests: impl FnOnce(&str), expected: usize) -> Vec<ReceivedSpan> {
        let receiver = OtlpReceiver::start(Transport::Grpc).expect("receiver");
        let endpoint = receiver.endpoint();
        let agent = Agent::start(
            &[
                "--exe",
                "nginx",
                "--otlp-endpoint",
                &endpoint,
                "--otlp-protocol",
                "grpc",
            ],
            &[],
        );
        let _server = self.start();
        let scheme = if self.conf_is_tls() { "https" } else { "http" };
        requests(&format!("{scheme}://127.0.0.1:{}", self.port));
        let port = Some(self.port as i64);
        let ours = |s: &ReceivedSpan| s.int_attr("server.port") == port;
        let spans = receiver.wait_for(Duration::from_secs(20), |s| {
            s.iter().filter(|s| ours(s)).count() >= expected
        });
        agent.stop();
        spans.into_iter().filter(|s| ours(s)).collect()
    }

    fn conf_is_tls(&self) -> bool {
        self.dir.join("cert.pem").exists()
    }
}

impl Drop for NginxSite {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
