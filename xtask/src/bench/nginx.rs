//! An nginx of our own: generated config in a temporary directory, a free loopback port, plain
//! HTTP or HTTPS (a self-signed certificate made for the occasion).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::{TempDir, free_port, signal};

/// Path of the static file nginx serves.
pub const STATIC_PATH: &str = "/static.html";
/// Path answered by `return 200 "ok\n";`.
pub const RETURN_PATH: &str = "/ok";
/// Size of the static file.
const STATIC_BYTES: usize = 4096;

/// How long a TLS readiness probe (`openssl s_client`) may take.
const TLS_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Nginx {
    child: Child,
    port: u16,
    tls: bool,
    // Kept for its Drop (removes the directory once nginx has stopped).
    _dir: TempDir,
}

impl Nginx {
    /// Starts `nginx -p DIR -c DIR/nginx.conf` serving plain HTTP and waits until it answers.
    pub fn start() -> Result<Self> {
        Self::launch(false)
    }

    /// The same site over HTTPS (TLS through the system OpenSSL), with a self-signed
    /// certificate generated in the temporary directory.
    pub fn start_tls() -> Result<Self> {
        Self::launch(true)
    }

    fn launch(tls: bool) -> Result<Self> {
        let bin = nginx_binary().context("nginx not found (`cargo xtask setup` installs it)")?;
        let dir = TempDir::new("periscope-bench-nginx")?;
        let port = free_port()?;
        let cert = if tls {
            Some(self_signed_certificate(dir.path())?)
        } else {
            None
        };
        let conf = write_site(dir.path(), port, cert.as_ref())?;
        let child = Command::new(&bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut nginx = Nginx {
            child,
            port,
            tls,
            _dir: dir,
        };
        nginx.wait_ready().inspect_err(|_| nginx.stop())?;
        Ok(nginx)
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }

    /// CPU time used so far by the master and its workers.
    pub fn cpu_time(&self) -> Duration {
        let master = self.child.id();
        let mut pids = vec![master];
        pids.extend(children_of(master));
        pids.into_iter()
            .filter_map(|pid| super::agent::cpu_time(pid).ok())
            .sum()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                bail!("nginx exited at start ({status}): {err}");
            }
            if let Ok(body) = self.get(RETURN_PATH) {
                if body != "ok\n" {
                    bail!("nginx answered {RETURN_PATH} with {body:?}");
                }
                let page = self.get(STATIC_PATH)?;
                if page.len() != STATIC_BYTES {
                    bail!("nginx served {} bytes for {STATIC_PATH}", page.len());
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("nginx did not answer on port {} within 10 s", self.port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn get(&self, path: &str) -> Result<String> {
        if !self.tls {
            return get(self.port, path);
        }
        // Not listening yet: fail fast rather than start a TLS client.
        drop(TcpStream::connect(("127.0.0.1", self.port))?);
        get_tls(self.port, path)
    }

    /// Fast shutdown (SIGTERM), then waits for the master to exit.
    pub fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = signal(self.child.id(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Processes whose parent is `parent` (nginx's workers).
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| super::agent::parse_stat_ppid(&stat))
                == Some(parent)
        })
        .collect()
}

fn nginx_binary() -> Option<PathBuf> {
    crate::util::which("nginx").or_else(|| {
        let p = PathBuf::from("/usr/sbin/nginx");
        p.is_file().then_some(p)
    })
}

/// Certificate and key files (PEM).
struct Certificate {
    cert: PathBuf,
    key: PathBuf,
}

/// `openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost` into `dir`.
fn self_signed_certificate(dir: &Path) -> Result<Certificate> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdin(Stdio::null())
        .output()
        .context("could not run openssl (needed for the TLS certificate)")?;
    if !out.status.success() {
        bail!(
            "openssl req failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(Certificate { cert, key })
}

/// Writes the config, the static file and nginx's temp directories; returns the config path.
/// With a certificate, the server speaks TLS on its port.
fn write_site(dir: &Path, port: u16, cert: Option<&Certificate>) -> Result<PathBuf> {
    let www = dir.join("www");
    std::fs::create_dir_all(&www)?;
    // Workers may run as an unprivileged user: everything they serve must be world-readable.
    set_mode(dir, 0o755)?;
    set_mode(&www, 0o755)?;
    let page = static_page();
    let page_path = www.join(STATIC_PATH.trim_start_matches('/'));
    std::fs::write(&page_path, page)?;
    set_mode(&page_path, 0o644)?;
    let d = dir.display();
    let (ssl, ssl_files) = match cert {
        Some(c) => (
            " ssl",
            format!(
                "\n        ssl_certificate {};\n        ssl_certificate_key {};",
                c.cert.display(),
                c.key.display()
            ),
        ),
        None => ("", String::new()),
    };
    let conf = format!(
        r#"# Generated by `cargo xtask bench`.
daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    default_type text/html;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;

    server {{
        listen 127.0.0.1:{port}{ssl};{ssl_files}
        root {d}/www;

        location = {RETURN_PATH} {{
            default_type text/plain;
            return 200 "ok\n";
        }}

        location / {{
        }}
    }}
}}
"#
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf)?;
    Ok(path)
}

/// A small HTML page of exactly `STATIC_BYTES` bytes.
fn static_page() -> String {
    let head = "<!doctype html>\n<html><head><title>periscope bench</title></head><body>\n";
    let tail = "</body></html>\n";
    let mut page = String::from(head);
    let line = "<p>The quick brown fox jumps over the lazy dog.</p>\n";
    while page.len() + line.len() + tail.len() <= STATIC_BYTES {
        page.push_str(line);
    }
    while page.len() + tail.len() < STATIC_BYTES {
        page.push(' ');
    }
    page.push_str(tail);
    page
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// A one-shot HTTP/1.0-style GET; returns the body of a 200 response.
fn get(port: u16, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "{}", request(path))?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    body_of_200(path, &response)
}

/// The same GET over TLS, through `openssl s_client` (killed after `TLS_PROBE_TIMEOUT`).
fn get_tls(port: u16, path: &str) -> Result<String> {
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("could not run openssl s_client")?;
    // The request fits the pipe buffer; with `-quiet` (which implies `-ign_eof`), s_client
    // keeps reading after our end closes, until nginx closes the connection.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(request(path).as_bytes());
    }
    let mut stdout = child.stdout.take().context("no stdout pipe")?;
    let reader = std::thread::spawn(move || {
        let mut response = String::new();
        let _ = stdout.read_to_string(&mut response);
        response
    });
    let deadline = Instant::now() + TLS_PROBE_TIMEOUT;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.wait();
    let response = reader
        .join()
        .map_err(|_| anyhow::anyhow!("s_client reader panicked"))?;
    body_of_200(path, &response)
}

fn request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
}

fn body_of_200(path: &str, response: &str) -> Result<String> {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no end of headers")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn static_page_has_the_promised_size() {
        assert_eq!(super::static_page().len(), super::STATIC_BYTES);
    }
}
