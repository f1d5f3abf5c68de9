//! Harness for the privileged end-to-end tests: the real agent binary, real programs, and the
//! real OTLP receiver from this crate's library.

// Each test binary uses part of the harness.
#![allow(dead_code, unused_macros, unused_imports)]

pub mod servers;

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Mutex, MutexGuard, mpsc},
    time::{Duration, Instant},
};

/// One agent at a time: each loads kernel programs and the machine has two cores.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn agent_binary() -> PathBuf {
    if let Ok(path) = std::env::var("PERISCOPE_BIN") {
        return PathBuf::from(path);
    }
    workspace_root().join("target/debug/periscope")
}

pub fn workload(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("workloads")
        .join(name)
}

/// Why these tests cannot run here, if they cannot: not root, no agent binary, or a kernel
/// without what capture needs (`periscope check` says which).
pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root to load eBPF programs".into());
    }
    let bin = agent_binary();
    if !bin.exists() {
        return Some(format!(
            "agent binary {} missing: run `cargo build -p periscope` (cargo xtask test does)",
            bin.display()
        ));
    }
    let out = Command::new(&bin).arg("check").output().ok()?;
    if !out.status.success() {
        let report = String::from_utf8_lossy(&out.stdout);
        // A kernel without a feature is a reason to skip; programs the verifier refuses are
        // our bug, and must fail the tests rather than skip them.
        assert!(
            !report.contains("[FAIL] load and attach"),
            "the kernel programs do not load:\n{report}"
        );
        return Some(format!("kernel lacks what capture needs:\n{report}"));
    }
    None
}

macro_rules! require_capture {
    () => {
        if let Some(reason) = common::skip_reason() {
            eprintln!("SKIPPED {}: {reason}", module_path!());
            return;
        }
    };
}
pub(crate) use require_capture;

/// The agent under test. Stopped with SIGINT (and checked to exit 0) by `stop`.
pub struct Agent {
    child: Option<Child>,
    /// Everything the agent writes to stdout, once it has exited.
    stdout: Option<std::thread::JoinHandle<String>>,
    stderr: mpsc::Receiver<String>,
    pub stderr_log: Vec<String>,
}

impl Agent {
    /// `periscope run ARGS`, exporting to `receiver` over the receiver's own transport.
    pub fn exporting_to(receiver: &periscope_tests::OtlpReceiver, args: &[&str]) -> Agent {
        Agent::start(
            args,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint()),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", receiver.protocol()),
            ],
        )
    }

    /// Start `periscope run ARGS` with extra environment, and wait until its probes are attached.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Agent {
        let mut agent = Agent::spawn(args, env);
        agent.wait_ready();
        agent
    }

    /// Start `periscope run ARGS` with extra environment, without waiting for anything.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Agent {
        let mut cmd = Command::new(agent_binary());
        cmd.arg("run").args(args);
        for key in [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ] {
            cmd.env_remove(key);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start agent");
        // Read as it comes: a pipe left full would stall the agent's terminal output (which,
        // bounded by its flush timeout, then gives up).
        let mut stdout_pipe = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            use std::io::Read as _;
            let mut text = String::new();
            let _ = stdout_pipe.read_to_string(&mut text);
            text
        });
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Agent {
            child: Some(child),
            stdout: Some(stdout),
            stderr: rx,
            stderr_log: Vec::new(),
        }
    }

    /// Wait until the agent says its probes are attached.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.stderr.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let ready = line.starts_with("periscope: tracing");
                    self.stderr_log.push(line);
                    if ready {
                        break;
                    }
                }
                Err(_) if Instant::now() > deadline => {
                    panic!("agent not ready in 30 s: {:?}", self.stderr_log)
                }
                Err(_) => {
                    if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                        panic!("agent exited early ({status}): {:?}", self.stderr_log);
                    }
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGINT, wait for a clean exit, and return (stdout, stderr).
    pub fn stop(self) -> (String, String) {
        self.stop_with(libc::SIGINT)
    }

    /// Send `signal`, wait for a clean exit, and return (stdout, stderr).
    pub fn stop_with(mut self, signal: libc::c_int) -> (String, String) {
        let mut child = self.child.take().unwrap();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "agent did not stop within 30 s of signal {signal}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let stdout = self
            .stdout
            .take()
            .map(|reader| reader.join().unwrap_or_default())
            .unwrap_or_default();
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(200)) {
            self.stderr_log.push(line);
        }
        let stderr = self.stderr_log.join("\n");
        assert!(
            status.success(),
            "agent exited with {status}; stderr:\n{stderr}"
        );
        (stdout, stderr)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A background program killed when dropped.
pub struct Program(Child);

impl Program {
    pub fn spawn(cmd: &mut Command) -> Program {
        Program(
            cmd.stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")),
        )
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start `python3 workloads/SCRIPT PORT ARGS…` on a free loopback port and wait until it
/// listens. Returns the running program and its port.
pub fn python_service<S: AsRef<std::ffi::OsStr>>(script: &str, args: &[S]) -> (Program, u16) {
    let port = free_port();
    let program = Program::spawn(
        Command::new("python3")
            .arg(workload(script))
            .arg(port.to_string())
            .args(args),
    );
    wait_for_port(port);
    (program, port)
}

pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on port {port} after 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Run curl with these arguments; returns its stdout.
pub fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl is installed (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `workloads/keepalive_client.py`: one HTTP/1.1 connection, a GET per [`KeepaliveClient::ask`].
pub struct KeepaliveClient {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: BufReader<std::process::ChildStdout>,
}

impl KeepaliveClient {
    pub fn connect(port: u16) -> KeepaliveClient {
        let mut child = Command::new("python3")
            .arg(workload("keepalive_client.py"))
            .args(["127.0.0.1", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 keepalive_client.py");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("client stdout"));
        KeepaliveClient {
            child,
            stdin,
            stdout,
        }
    }

    /// GET `path` on the connection and wait for the response.
    pub fn ask(&mut self, path: &str) {
        use std::io::Write as _;
        let stdin = self.stdin.as_mut().expect("client still open");
        writeln!(stdin, "{path}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert!(line.starts_with(path), "{line}");
    }

    /// Close the connection and wait for the client to exit.
    pub fn close(mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// A path for the agent's `--stats-file`, removed once read.
pub struct StatsFile(PathBuf);

impl StatsFile {
    pub fn new(tag: &str) -> StatsFile {
        StatsFile(std::env::temp_dir().join(format!("periscope-{tag}-{}.json", std::process::id())))
    }

    pub fn path(&self) -> &str {
        self.0.to_str().expect("temp paths are UTF-8")
    }

    /// What the agent wrote at exit.
    pub fn read(self) -> serde_json::Value {
        let text = std::fs::read_to_string(&self.0).expect("stats file");
        let _ = std::fs::remove_file(&self.0);
        serde_json::from_str(&text).expect("stats JSON")
    }
}
