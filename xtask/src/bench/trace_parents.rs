//! Scenario `trace-parents`: how often the agent gives a downstream span the right parent when
//! several requests run through a chain of services at once.
//!
//! The chain is the one of `tests/tests/traces.rs`, started from `tests/workloads/`, in two
//! variants measured one after the other, each with its own agent and OTLP receiver:
//!
//! - `thread-per-request`: gateway (sequential) → auth, user; user (sequential) → pricing. Every
//!   call leaves from the thread that serves the request, so the agent's answer is exact.
//! - `thread-pool`: gateway (fan-out through a thread pool) → auth, user; user → inventory
//!   (Node.js event loop) → pricing. Calls leave from another thread than the one that serves
//!   the request (or from one thread serving many), where the agent uses a heuristic.
//!
//! Clients run in this process (which the agent does not select): `CLIENTS` threads, each with one
//! keep-alive connection, each sending its requests one after another to `/checkout/<c>-<n>`.
//!
//! Scoring. Every span except the gateway's server spans is a downstream span, and what its
//! parent must be follows from the topology: a client span of X calling Y must be the child of a
//! server span of X; a server span of Y must be the child of a client span, in Y's caller, whose
//! peer is Y's port. On top of that, the parent must be in the same trace, must contain the child
//! in time (children lie within their parents), and must have no other child in the same
//! position (a request of X calls Y once): when a parent has several, one is credited and the
//! others count as wrong, since at most one of them belongs to that request. A request's tree
//! (walked down from the gateway span of its `/checkout/<id>` path) is right when it holds
//! exactly the topology's spans, every one with a right parent.
//!
//! What this cannot see: the spans carry no thread, and a client span no local port, so two
//! requests of the same service whose calls swapped parents, each call still inside the other's
//! time window, look right. The share is therefore an upper bound of the exact one; every other
//! kind of mistake (a lost link, a second trace, a call given to a request that had already made
//! it, or to one not in flight) is counted.

// Without the `bench` feature (no OTLP receiver), only `run` is reachable and it declines.
#![cfg_attr(not(feature = "bench"), allow(dead_code))]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::agent::{self, Agent, Stats};
use super::receiver::Receiver;
use super::{BenchArgs, TempDir, free_port, results_dir, signal, write_json};
use crate::util;

const NAME: &str = "trace-parents";
/// Concurrent clients, one keep-alive connection each.
pub const CLIENTS: usize = 8;
/// A child may start or end this much outside its parent (timestamps come from different
/// syscalls of different processes).
const TIME_SLACK_NS: u64 = 1_000_000;
/// Bound on the whole load of one variant.
const LOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// Bound on one request (connect, or read of the response).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// After the load, how long to wait for the expected spans before stopping the agent anyway.
const SPANS_TIMEOUT: Duration = Duration::from_secs(60);
const PORT_TIMEOUT: Duration = Duration::from_secs(30);
/// The aims: share of downstream spans with the right parent, in percent.
const AIM_THREAD_PER_REQUEST: f64 = 100.0;
const AIM_THREAD_POOL: f64 = 95.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    ThreadPerRequest,
    ThreadPool,
}

const VARIANTS: [Variant; 2] = [Variant::ThreadPerRequest, Variant::ThreadPool];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Runtime {
    /// `chain.py --mode sequential`: calls leave from the serving thread.
    PythonSequential,
    /// `chain.py --mode pool`: calls leave from a shared thread pool.
    PythonPool,
    /// `inventory.js`: one event loop.
    Node,
}

/// One service: its name (also `OTEL_SERVICE_NAME`), how it runs, and whom it calls, in order
/// (service, path).
struct ServiceSpec {
    name: &'static str,
    runtime: Runtime,
    calls: &'static [(&'static str, &'static str)],
}

/// Gateway first; started in reverse order (callees before callers).
const THREAD_PER_REQUEST: &[ServiceSpec] = &[
    ServiceSpec {
        name: "gateway",
        runtime: Runtime::PythonSequential,
        calls: &[("auth", "/check"), ("user", "/user/42")],
    },
    ServiceSpec {
        name: "auth",
        runtime: Runtime::PythonSequential,
        calls: &[],
    },
    ServiceSpec {
        name: "user",
        runtime: Runtime::PythonSequential,
        calls: &[("pricing", "/price/42")],
    },
    ServiceSpec {
        name: "pricing",
        runtime: Runtime::PythonSequential,
        calls: &[],
    },
];

const THREAD_POOL: &[ServiceSpec] = &[
    ServiceSpec {
        name: "gateway",
        runtime: Runtime::PythonPool,
        calls: &[("auth", "/check"), ("user", "/user/42")],
    },
    ServiceSpec {
        name: "auth",
        runtime: Runtime::PythonSequential,
        calls: &[],
    },
    ServiceSpec {
        name: "user",
        runtime: Runtime::PythonSequential,
        calls: &[("inventory", "/stock/42")],
    },
    ServiceSpec {
        name: "inventory",
        runtime: Runtime::Node,
        calls: &[("pricing", "/price/42")],
    },
    ServiceSpec {
        name: "pricing",
        runtime: Runtime::PythonSequential,
        calls: &[],
    },
];

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::ThreadPerRequest => "thread-per-request",
            Variant::ThreadPool => "thread-pool",
        }
    }

    fn services(self) -> &'static [ServiceSpec] {
        match self {
            Variant::ThreadPerRequest => THREAD_PER_REQUEST,
            Variant::ThreadPool => THREAD_POOL,
        }
    }

    fn aim_percent(self) -> f64 {
        match self {
            Variant::ThreadPerRequest => AIM_THREAD_PER_REQUEST,
            Variant::ThreadPool => AIM_THREAD_POOL,
        }
    }

    fn topology(self) -> Topology {
        let services = self.services();
        Topology {
            root: services[0].name,
            edges: services
                .iter()
                .flat_map(|s| s.calls.iter().map(move |(callee, _)| (s.name, *callee)))
                .collect(),
        }
    }

    fn describe(self) -> String {
        self.services()
            .iter()
            .filter(|s| !s.calls.is_empty())
            .map(|s| {
                let how = match s.runtime {
                    Runtime::PythonSequential => "python, sequential",
                    Runtime::PythonPool => "python, thread pool",
                    Runtime::Node => "node",
                };
                let callees: Vec<&str> = s.calls.iter().map(|(c, _)| *c).collect();
                format!("{} ({how}) → {}", s.name, callees.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Who calls whom; every request enters at `root`.
#[derive(Debug, Clone)]
struct Topology {
    root: &'static str,
    /// (caller, callee); every callee has exactly one caller.
    edges: Vec<(&'static str, &'static str)>,
}

impl Topology {
    /// The root server span, then a client and a server span per call.
    fn spans_per_request(&self) -> usize {
        1 + 2 * self.edges.len()
    }

    fn caller_of(&self, callee: &str) -> Option<&'static str> {
        self.edges
            .iter()
            .find(|(_, c)| *c == callee)
            .map(|(a, _)| *a)
    }

    fn has_edge(&self, caller: &str, callee: &str) -> bool {
        self.edges.iter().any(|(a, c)| *a == caller && *c == callee)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Server,
    Client,
    Other,
}

/// What scoring needs of a received span.
#[derive(Clone, Debug)]
struct Sp {
    service: String,
    kind: Kind,
    trace: String,
    id: String,
    /// Empty for a root.
    parent: String,
    start: u64,
    end: u64,
    /// `url.path`.
    path: String,
    /// Server spans: the port served; client spans: the peer's port.
    port: Option<u16>,
}

/// Where a span sits in the topology, hence what its parent must be.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Position {
    /// A server span of the entry service.
    Root,
    /// A server span of `service`: child of a client span of `caller` to `service`.
    Server {
        service: String,
        caller: &'static str,
    },
    /// A client span of `service` calling `callee`: child of a server span of `service`.
    Client { service: String, callee: String },
    /// Fits nowhere in the topology.
    Unexpected,
}

impl Position {
    fn label(&self, sp: &Sp) -> String {
        match self {
            Position::Root => format!("{} server (root)", sp.service),
            Position::Server { service, .. } => format!("{service} server"),
            Position::Client { service, callee } => format!("{service}→{callee} client"),
            Position::Unexpected => format!("unexpected {} {:?}", sp.service, sp.kind),
        }
    }
}

/// The outcome of scoring one variant.
#[derive(Debug, Default, Clone, PartialEq)]
struct Score {
    /// Spans scored (those of this run's services).
    spans: usize,
    /// Every span but the entry service's server spans.
    downstream: usize,
    downstream_correct: usize,
    /// Requests the clients completed, and of those, how many have their tree exactly right.
    requests: usize,
    requests_with_root: usize,
    trees_right: usize,
    /// Distinct trace ids among the spans.
    traces: usize,
    /// Downstream spans whose parent was wrong, by position and by reason.
    wrong_by_position: BTreeMap<String, usize>,
    wrong_by_reason: BTreeMap<String, usize>,
}

impl Score {
    fn correct_percent(&self) -> f64 {
        percent(self.downstream_correct, self.downstream)
    }

    fn trees_percent(&self) -> f64 {
        percent(self.trees_right, self.requests)
    }

    fn to_json(&self) -> Value {
        json!({
            "spans_scored": self.spans,
            "downstream_spans": self.downstream,
            "downstream_correct_parent": self.downstream_correct,
            "downstream_correct_percent": self.correct_percent(),
            "requests": self.requests,
            "requests_with_root_span": self.requests_with_root,
            "requests_tree_right": self.trees_right,
            "requests_tree_right_percent": self.trees_percent(),
            "traces": self.traces,
            "wrong_by_position": self.wrong_by_position,
            "wrong_by_reason": self.wrong_by_reason,
        })
    }
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64 * 100.0
    }
}

fn is_no_parent(id: &str) -> bool {
    id.bytes().all(|b| b == b'0')
}

fn position(sp: &Sp, topo: &Topology, service_at_port: &HashMap<u16, &str>) -> Position {
    match sp.kind {
        Kind::Server if sp.service == topo.root => Position::Root,
        Kind::Server => match topo.caller_of(&sp.service) {
            Some(caller) => Position::Server {
                service: sp.service.clone(),
                caller,
            },
            None => Position::Unexpected,
        },
        Kind::Client => {
            let callee = sp.port.and_then(|p| service_at_port.get(&p).copied());
            match callee {
                Some(callee) if topo.has_edge(&sp.service, callee) => Position::Client {
                    service: sp.service.clone(),
                    callee: callee.to_string(),
                },
                _ => Position::Unexpected,
            }
        }
        Kind::Other => Position::Unexpected,
    }
}

fn contains(parent: &Sp, child: &Sp) -> bool {
    parent.start <= child.start.saturating_add(TIME_SLACK_NS)
        && child.end <= parent.end.saturating_add(TIME_SLACK_NS)
}

/// Scores the spans of one run. `ports` maps each service to the port it serves on;
/// `request_paths` are the paths of the requests the clients completed.
fn score(
    spans: &[Sp],
    topo: &Topology,
    ports: &BTreeMap<&'static str, u16>,
    request_paths: &[String],
) -> Score {
    let service_at_port: HashMap<u16, &str> = ports.iter().map(|(s, p)| (*p, *s)).collect();
    let by_id: HashMap<&str, usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let parent_of = |i: usize| -> Option<usize> {
        let p = &spans[i].parent;
        if is_no_parent(p) {
            None
        } else {
            by_id.get(p.as_str()).copied()
        }
    };
    let positions: Vec<Position> = spans
        .iter()
        .map(|s| position(s, topo, &service_at_port))
        .collect();

    let mut sc = Score {
        spans: spans.len(),
        requests: request_paths.len(),
        traces: spans
            .iter()
            .map(|s| s.trace.as_str())
            .collect::<BTreeSet<_>>()
            .len(),
        ..Score::default()
    };
    let mut ok = vec![false; spans.len()];
    let wrong = |sc: &mut Score, i: usize, reason: &str| {
        *sc.wrong_by_position
            .entry(positions[i].label(&spans[i]))
            .or_default() += 1;
        *sc.wrong_by_reason.entry(reason.to_string()).or_default() += 1;
    };
    // Spans whose parent has the right kind, trace and time, grouped by (parent, position).
    let mut fitting: BTreeMap<(usize, String), Vec<usize>> = BTreeMap::new();
    for (i, sp) in spans.iter().enumerate() {
        let pos = &positions[i];
        if *pos == Position::Root {
            continue;
        }
        sc.downstream += 1;
        if *pos == Position::Unexpected {
            wrong(&mut sc, i, "span not in the topology");
            continue;
        }
        if is_no_parent(&sp.parent) {
            wrong(&mut sc, i, "no parent (root of a trace of its own)");
            continue;
        }
        let Some(p) = parent_of(i) else {
            wrong(&mut sc, i, "parent not among the received spans");
            continue;
        };
        let parent = &spans[p];
        let kind_fits = match pos {
            Position::Server { service, caller } => {
                parent.kind == Kind::Client
                    && parent.service == *caller
                    && parent.port.is_some()
                    && parent.port == ports.get(service.as_str()).copied()
            }
            Position::Client { service, .. } => {
                parent.kind == Kind::Server && parent.service == *service
            }
            Position::Root | Position::Unexpected => false,
        };
        if !kind_fits {
            wrong(&mut sc, i, "parent of the wrong service or kind");
        } else if parent.trace != sp.trace {
            wrong(&mut sc, i, "parent in another trace");
        } else if !contains(parent, sp) {
            wrong(&mut sc, i, "parent does not contain it in time");
        } else {
            fitting.entry((p, pos.label(sp))).or_default().push(i);
        }
    }
    for children in fitting.values_mut() {
        children.sort_by_key(|&i| (spans[i].start, i));
        ok[children[0]] = true;
        sc.downstream_correct += 1;
        for &i in &children[1..] {
            wrong(&mut sc, i, "parent has another child in the same place");
        }
    }

    // Whole trees, walked down from each request's root.
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    for i in 0..spans.len() {
        if let Some(p) = parent_of(i) {
            children.entry(p).or_default().push(i);
        }
    }
    let mut roots_by_path: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, sp) in spans.iter().enumerate() {
        if positions[i] == Position::Root {
            roots_by_path.entry(sp.path.as_str()).or_default().push(i);
        }
    }
    for path in request_paths {
        let Some(roots) = roots_by_path.get(path.as_str()) else {
            continue;
        };
        sc.requests_with_root += 1;
        let &[root] = roots.as_slice() else {
            continue;
        };
        if !is_no_parent(&spans[root].parent) {
            continue;
        }
        let mut tree = Vec::new();
        let mut queue = vec![root];
        // Bounded: each span has one parent, so each is visited once.
        while let Some(i) = queue.pop() {
            if tree.len() > spans.len() {
                break;
            }
            tree.push(i);
            queue.extend(children.get(&i).into_iter().flatten().copied());
        }
        let right = tree.len() == topo.spans_per_request()
            && tree[1..].iter().all(|&i| ok[i])
            && tree.iter().all(|&i| spans[i].trace == spans[root].trace);
        if right {
            sc.trees_right += 1;
        }
    }
    sc
}

// ---------------------------------------------------------------------------------------------
// Running it

/// A service of the chain; stopped (SIGTERM, then SIGKILL) when dropped.
struct Service {
    name: &'static str,
    port: u16,
    child: Child,
    log: PathBuf,
}

impl Service {
    fn start(
        spec: &ServiceSpec,
        ports: &BTreeMap<&'static str, u16>,
        python: &Path,
        node: &Path,
        log_dir: &Path,
    ) -> Result<Self> {
        let workloads = util::workspace_root().join("tests/workloads");
        let port = ports[spec.name];
        let urls = spec
            .calls
            .iter()
            .map(|(callee, path)| format!("http://127.0.0.1:{}{path}", ports[callee]));
        let mut cmd = match spec.runtime {
            Runtime::PythonSequential | Runtime::PythonPool => {
                let mode = if spec.runtime == Runtime::PythonPool {
                    "pool"
                } else {
                    "sequential"
                };
                let mut cmd = Command::new(python);
                cmd.arg(workloads.join("chain.py"))
                    .arg(port.to_string())
                    .args(["--mode", mode]);
                cmd
            }
            Runtime::Node => {
                let mut cmd = Command::new(node);
                cmd.arg(workloads.join("inventory.js"))
                    .arg(port.to_string());
                cmd
            }
        };
        cmd.args(urls);
        let log = log_dir.join(format!("{}.log", spec.name));
        let err =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .env("OTEL_SERVICE_NAME", spec.name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", spec.name))?;
        Ok(Service {
            name: spec.name,
            port,
            child,
            log,
        })
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + PORT_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited at start ({status}): {}",
                    self.name,
                    agent::tail(&self.log, 10)
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not listen on port {} within {} s",
                    self.name,
                    self.port,
                    PORT_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = signal(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// What the clients did.
#[derive(Debug, Default)]
struct Load {
    /// Paths answered 200.
    ok_paths: Vec<String>,
    errors: usize,
    first_error: Option<String>,
    elapsed: Duration,
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(port: u16) -> Result<Self> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT)?;
        stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
        stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            reader: BufReader::new(stream),
        })
    }

    /// GET; returns the status and whether the server will close the connection.
    fn get(&mut self, port: u16, path: &str) -> Result<(u16, bool)> {
        write!(
            self.reader.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: periscope-bench\r\n\r\n"
        )?;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            bail!("connection closed before the response");
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let mut length: Option<u64> = None;
        let mut close = line.starts_with("HTTP/1.0");
        for _ in 0..100 {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("connection closed in the response headers");
            }
            let header = line.trim_end();
            if header.is_empty() {
                let length = length.context("response without Content-Length")?;
                if length > 1 << 20 {
                    bail!("response body of {length} bytes");
                }
                let mut body = Vec::new();
                (&mut self.reader).take(length).read_to_end(&mut body)?;
                if body.len() as u64 != length {
                    bail!("connection closed in the response body");
                }
                return Ok((status, close));
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = Some(value.parse().context("bad Content-Length")?);
                } else if name.eq_ignore_ascii_case("connection") {
                    close = value.eq_ignore_ascii_case("close");
                }
            }
        }
        bail!("more than 100 response headers")
    }
}

/// `CLIENTS` threads, each sending `per_client` requests in turn over a keep-alive connection.
fn drive(port: u16, per_client: usize) -> Load {
    let started = Instant::now();
    let deadline = started + LOAD_TIMEOUT;
    let threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            std::thread::spawn(move || {
                let mut load = Load::default();
                let mut conn: Option<Conn> = None;
                for n in 0..per_client {
                    if Instant::now() > deadline {
                        load.errors += per_client - n;
                        load.first_error
                            .get_or_insert_with(|| "load deadline passed".into());
                        break;
                    }
                    let path = format!("/checkout/{c}-{n}");
                    let result = match conn.as_mut() {
                        Some(c) => Ok(c),
                        None => Conn::open(port).map(|c| conn.insert(c)),
                    }
                    .and_then(|c| c.get(port, &path));
                    match result {
                        Ok((200, close)) => {
                            load.ok_paths.push(path);
                            if close {
                                conn = None;
                            }
                        }
                        Ok((status, _)) => {
                            load.errors += 1;
                            load.first_error
                                .get_or_insert_with(|| format!("GET {path}: status {status}"));
                            conn = None;
                        }
                        Err(e) => {
                            load.errors += 1;
                            load.first_error
                                .get_or_insert_with(|| format!("GET {path}: {e:#}"));
                            conn = None;
                        }
                    }
                }
                load
            })
        })
        .collect();
    let mut total = Load::default();
    for t in threads {
        match t.join() {
            Ok(load) => {
                total.ok_paths.extend(load.ok_paths);
                total.errors += load.errors;
                if total.first_error.is_none() {
                    total.first_error = load.first_error;
                }
            }
            Err(_) => {
                total.errors += per_client;
                total
                    .first_error
                    .get_or_insert_with(|| "a client thread panicked".into());
            }
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// The measurement of one variant.
struct VariantResult {
    variant: Variant,
    spans_per_request: usize,
    load: Load,
    spans_received: usize,
    score: Score,
    assembly: Value,
    stats: Stats,
    exit: String,
    log: PathBuf,
}

impl VariantResult {
    fn spans_expected(&self) -> usize {
        self.load.ok_paths.len() * self.spans_per_request
    }

    fn aim_met(&self) -> bool {
        self.score.downstream > 0 && self.score.correct_percent() >= self.variant.aim_percent()
    }

    fn to_json(&self) -> Value {
        json!({
            "variant": self.variant.name(),
            "topology": self.variant.describe(),
            "requests_ok": self.load.ok_paths.len(),
            "request_errors": self.load.errors,
            "first_error": self.load.first_error,
            "load_seconds": self.load.elapsed.as_secs_f64(),
            "spans_per_request": self.spans_per_request,
            "spans_expected": self.spans_expected(),
            "spans_received": self.spans_received,
            "score": self.score.to_json(),
            "aim_correct_percent": self.variant.aim_percent(),
            "aim_met": self.aim_met(),
            "agent": {
                "exit": self.exit,
                "log": self.log.display().to_string(),
                "counted_losses": self.stats.counted_losses(),
                "spans_created": self.stats.spans_created,
                "exported": self.stats.export_exported,
                "assembly": self.assembly,
            },
        })
    }
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if args.baseline_only {
        println!("\nbench {NAME}: skipped (--baseline-only; this scenario measures the agent)");
        return Ok(());
    }
    if !cfg!(feature = "bench") {
        bail!("bench {NAME} needs xtask's `bench` feature (the OTLP receiver)");
    }
    let python = util::which("python3").context("python3 not found")?;
    let node = util::which("node").context("node not found (`cargo xtask setup` installs it)")?;
    let bin = match &args.agent_bin {
        Some(bin) => std::path::absolute(bin)?,
        None => {
            util::run(util::cargo().args(["build", "--release", "-p", "periscope"]))?;
            util::target_dir().join("release/periscope")
        }
    };
    let per_client = usize::try_from(args.requests_per_client)?;
    println!(
        "\nbench {NAME}: {CLIENTS} clients × {per_client} requests per variant, \
         agent {} run --exe chain.py --exe inventory.js (OTLP gRPC)",
        bin.display()
    );
    let mut results = Vec::new();
    for variant in VARIANTS {
        let result = run_variant(variant, &bin, &python, &node, per_client)
            .with_context(|| format!("variant {}", variant.name()))?;
        print_variant(&result);
        results.push(result);
    }
    let summary = summarize(per_client, &results);
    let path = write_json(NAME, &summary)?;
    println!("results: {}", path.display());
    Ok(())
}

fn run_variant(
    variant: Variant,
    bin: &Path,
    python: &Path,
    node: &Path,
    per_client: usize,
) -> Result<VariantResult> {
    println!("\nvariant {}: {}", variant.name(), variant.describe());
    let receiver = Receiver::start_grpc(true).context("starting the OTLP receiver")?;
    let tmp = TempDir::new("periscope-bench-trace-parents")?;
    let mut ports: BTreeMap<&'static str, u16> = BTreeMap::new();
    for spec in variant.services() {
        ports.insert(spec.name, free_port()?);
    }
    let mut services: Vec<Service> = Vec::new();
    for spec in variant.services().iter().rev() {
        services.push(Service::start(spec, &ports, python, node, tmp.path())?);
    }
    for s in &mut services {
        s.wait_ready()?;
    }
    let pids: BTreeSet<u32> = services.iter().map(|s| s.child.id()).collect();

    let stats_file = tmp.path().join("stats.json");
    let log = results_dir()?.join(format!("{NAME}-{}-agent.log", variant.name()));
    let agent_args: Vec<String> = vec![
        "run".into(),
        "--exe".into(),
        "chain.py".into(),
        "--exe".into(),
        "inventory.js".into(),
        "--otlp-endpoint".into(),
        receiver.endpoint(),
        "--otlp-protocol".into(),
        "grpc".into(),
        "--stats-file".into(),
        stats_file.display().to_string(),
    ];
    let agent = Agent::start(bin, &agent_args, &log)?;

    let load = drive(ports[variant.topology().root], per_client);
    println!(
        "  load: {} requests answered, {} errors in {:.1} s{}",
        load.ok_paths.len(),
        load.errors,
        load.elapsed.as_secs_f64(),
        load.first_error
            .as_ref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    let topo = variant.topology();
    let expected = load.ok_paths.len() * topo.spans_per_request();
    let deadline = Instant::now() + SPANS_TIMEOUT;
    while receiver.span_count() < expected as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let exit = agent.stop()?;
    receiver.settle();
    drop(services);

    let (stats, raw) = match Stats::read(&stats_file) {
        Ok(s) => s,
        Err(e) => {
            println!("  warning: no agent stats ({e:#})");
            (Stats::default(), Value::Null)
        }
    };
    let spans = run_spans(&receiver, &pids, &ports);
    let score = score(&spans, &topo, &ports, &load.ok_paths);
    Ok(VariantResult {
        variant,
        spans_per_request: topo.spans_per_request(),
        load,
        spans_received: spans.len(),
        score,
        assembly: raw["assembly"].clone(),
        stats,
        exit: exit.to_string(),
        log,
    })
}

fn print_variant(r: &VariantResult) {
    let s = &r.score;
    println!(
        "  spans: {} expected ({} per request), {} received",
        r.spans_expected(),
        r.spans_per_request,
        r.spans_received
    );
    println!(
        "  downstream spans with the correct parent: {}/{} ({:.2}%)",
        s.downstream_correct,
        s.downstream,
        s.correct_percent()
    );
    println!(
        "  requests whose whole tree is right: {}/{} ({:.2}%); root span found for {}",
        s.trees_right,
        s.requests,
        s.trees_percent(),
        s.requests_with_root
    );
    println!("  traces: {} for {} requests", s.traces, s.requests);
    if !s.wrong_by_position.is_empty() {
        let fmt = |m: &BTreeMap<String, usize>| {
            m.iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!("  wrong, by position: {}", fmt(&s.wrong_by_position));
        println!("  wrong, by reason: {}", fmt(&s.wrong_by_reason));
    }
    let assembly = match &r.assembly {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "-".into(),
    };
    println!("  agent assembly: {assembly}");
    println!(
        "  agent: {}; created {}, exported {}; lost (counted): {}; log {}",
        r.exit,
        r.stats.spans_created,
        r.stats.export_exported,
        r.stats.loss_breakdown(),
        r.log.display()
    );
}

fn summarize(per_client: usize, results: &[VariantResult]) -> Value {
    println!("\nsummary {NAME} ({CLIENTS} clients × {per_client} requests)");
    let verdict = |ok: bool| if ok { "MET" } else { "MISSED" };
    for r in results {
        let aim = r.variant.aim_percent();
        let op = if aim >= 100.0 { "=" } else { "≥" };
        println!(
            "  {:<19} correct parents {:>7.2}% (aim {op} {aim:.0}%): {:<6}  whole trees {:.2}%, \
             traces {} / requests {}, spans {}/{}",
            r.variant.name(),
            r.score.correct_percent(),
            verdict(r.aim_met()),
            r.score.trees_percent(),
            r.score.traces,
            r.score.requests,
            r.spans_received,
            r.spans_expected()
        );
    }
    let met = results.iter().all(VariantResult::aim_met);
    println!("bench {NAME}: aims {}", verdict(met));
    json!({
        "scenario": NAME,
        "clients": CLIENTS,
        "requests_per_client": per_client,
        "time_slack_ns": TIME_SLACK_NS,
        "variants": results.iter().map(VariantResult::to_json).collect::<Vec<_>>(),
        "goals": {
            "measured": true,
            "aim_thread_per_request_percent": AIM_THREAD_PER_REQUEST,
            "aim_thread_pool_percent": AIM_THREAD_POOL,
            "met": met,
        },
    })
}

/// The spans of this run's services: those of our processes (`process.pid`), or, for a span
/// without one, of our services' names.
#[cfg(feature = "bench")]
fn run_spans(
    receiver: &Receiver,
    pids: &BTreeSet<u32>,
    ports: &BTreeMap<&'static str, u16>,
) -> Vec<Sp> {
    receiver
        .spans()
        .iter()
        .filter(|s| match s.resource.get("process.pid") {
            Some(pid) => pid.parse().is_ok_and(|pid: u32| pids.contains(&pid)),
            None => ports.contains_key(s.service_name.as_str()),
        })
        .map(|s| {
            let kind = match s.kind_name() {
                "server" => Kind::Server,
                "client" => Kind::Client,
                _ => Kind::Other,
            };
            let port_key = if kind == Kind::Client {
                "network.peer.port"
            } else {
                "server.port"
            };
            Sp {
                service: s.service_name.clone(),
                kind,
                trace: s.trace_id_hex(),
                id: s.span_id_hex(),
                parent: s.parent_span_id_hex(),
                start: s.span.start_time_unix_nano,
                end: s.span.end_time_unix_nano,
                path: s.attr("url.path").unwrap_or_default(),
                port: s.int_attr(port_key).and_then(|p| u16::try_from(p).ok()),
            }
        })
        .collect()
}

#[cfg(not(feature = "bench"))]
fn run_spans(_: &Receiver, _: &BTreeSet<u32>, _: &BTreeMap<&'static str, u16>) -> Vec<Sp> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn ports() -> BTreeMap<&'static str, u16> {
        [
            ("gateway", 1000),
            ("auth", 1001),
            ("user", 1002),
            ("pricing", 1003),
        ]
        .into_iter()
        .collect()
    }

    /// One request of the thread-per-request chain, ids prefixed with `r`, starting at `t` ms.
    fn request(r: &str, t: u64) -> Vec<Sp> {
        // (service, kind, id, parent, start, end, port, path)
        type Row = (
            &'static str,
            Kind,
            &'static str,
            &'static str,
            u64,
            u64,
            u16,
            &'static str,
        );
        let rows: [Row; 7] = [
            ("gateway", Kind::Server, "g", "", 0, 10, 1000, "/checkout/"),
            ("gateway", Kind::Client, "ga", "g", 1, 3, 1001, "/check"),
            ("auth", Kind::Server, "a", "ga", 1, 2, 1001, "/check"),
            ("gateway", Kind::Client, "gu", "g", 4, 9, 1002, "/user/42"),
            ("user", Kind::Server, "u", "gu", 5, 8, 1002, "/user/42"),
            ("user", Kind::Client, "up", "u", 6, 7, 1003, "/price/42"),
            ("pricing", Kind::Server, "p", "up", 6, 7, 1003, "/price/42"),
        ];
        rows.iter()
            .map(|&(service, kind, id, parent, start, end, port, path)| Sp {
                service: service.into(),
                kind,
                trace: format!("{r}trace"),
                id: format!("{r}{id}"),
                parent: if parent.is_empty() {
                    String::new()
                } else {
                    format!("{r}{parent}")
                },
                start: (t + start) * MS,
                end: (t + end) * MS,
                path: if kind == Kind::Server && service == "gateway" {
                    format!("{path}{r}")
                } else {
                    path.into()
                },
                port: Some(port),
            })
            .collect()
    }

    #[test]
    fn a_right_chain_scores_everything() {
        let topo = Variant::ThreadPerRequest.topology();
        assert_eq!(topo.spans_per_request(), 7);
        assert_eq!(Variant::ThreadPool.topology().spans_per_request(), 9);
        let mut spans = request("a", 0);
        spans.extend(request("b", 2));
        let paths = vec!["/checkout/a".to_string(), "/checkout/b".to_string()];
        let sc = score(&spans, &topo, &ports(), &paths);
        assert_eq!(sc.downstream, 12);
        assert_eq!(sc.downstream_correct, 12);
        assert_eq!(sc.trees_right, 2);
        assert_eq!(sc.traces, 2);
        assert!(sc.wrong_by_reason.is_empty());
    }

    #[test]
    fn a_call_given_to_a_sibling_request_is_found() {
        let topo = Variant::ThreadPerRequest.topology();
        let mut spans = request("a", 0);
        spans.extend(request("b", 2));
        // b's call to auth attributed to request a (which was in flight).
        let ga = spans.iter().position(|s| s.id == "bga").unwrap();
        spans[ga].parent = "ag".into();
        spans[ga].trace = "atrace".into();
        let a = spans.iter().position(|s| s.id == "ba").unwrap();
        spans[a].trace = "atrace".into();
        let paths = vec!["/checkout/a".to_string(), "/checkout/b".to_string()];
        let sc = score(&spans, &topo, &ports(), &paths);
        // a now has two calls to auth: one is credited, the other is wrong.
        assert_eq!(sc.downstream_correct, 11);
        assert_eq!(sc.wrong_by_position.get("gateway→auth client"), Some(&1));
        assert_eq!(sc.trees_right, 0);
        assert_eq!(sc.traces, 2);
    }

    #[test]
    fn lost_links_and_stray_spans_are_wrong() {
        let topo = Variant::ThreadPerRequest.topology();
        let mut spans = request("a", 0);
        // The pricing server span started a trace of its own; the user client span points at
        // a span that never arrived.
        spans[6].parent = String::new();
        spans[6].trace = "other".into();
        spans[5].parent = "missing".into();
        // A call to a port outside the topology.
        let mut stray = spans[1].clone();
        stray.service = "auth".into();
        stray.id = "x".into();
        stray.parent = "aa".into();
        stray.port = Some(9);
        spans.push(stray);
        let sc = score(&spans, &topo, &ports(), &["/checkout/a".to_string()]);
        assert_eq!(sc.downstream, 7);
        assert_eq!(sc.downstream_correct, 4);
        assert_eq!(sc.trees_right, 0);
        assert_eq!(sc.traces, 2);
        assert_eq!(sc.wrong_by_reason.len(), 3);
    }

    #[test]
    fn a_parent_that_ended_before_its_child_is_wrong() {
        let topo = Variant::ThreadPerRequest.topology();
        let mut spans = request("a", 0);
        spans[1].end = 20 * MS;
        let sc = score(&spans, &topo, &ports(), &["/checkout/a".to_string()]);
        assert_eq!(sc.downstream_correct, 5);
        assert_eq!(
            sc.wrong_by_reason.get("parent does not contain it in time"),
            Some(&1)
        );
    }
}
