//! Scenario `http1-nginx`: nginx saturated by wrk over loopback, untraced and traced by the
//! agent exporting to a real OTLP (gRPC) receiver; each path's two measurements in a pair run
//! back to back.
//!
//! The rounds and the summary are shared with `tls-nginx` (the same site over HTTPS), which
//! differs only in what [`Variant`] says.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::agent::{self, Agent, AgentCpu, Stats};
use super::nginx::{self, Nginx};
use super::receiver::Receiver;
use super::wrk::{self, WrkResult, fmt_us};
use super::{BenchArgs, TempDir, median, results_dir, write_json};
use crate::util;

const PATHS: [&str; 2] = [nginx::RETURN_PATH, nginx::STATIC_PATH];

/// What differs between the nginx scenarios that share these rounds and this summary.
pub struct Variant {
    pub name: &'static str,
    /// nginx serves HTTPS through the system OpenSSL (the agent captures it with uprobes).
    pub tls: bool,
    /// The traced throughput must stay at or above this share of the untraced one; `None`:
    /// the ratio is reported without a goal.
    pub min_throughput_ratio: Option<f64>,
}

const HTTP1: Variant = Variant {
    name: "http1-nginx",
    tls: false,
    min_throughput_ratio: Some(0.85),
};

struct Round {
    pair: u32,
    wrk: Vec<(&'static str, WrkResult)>,
    /// nginx CPU per request served, per path, in µs (probes included when traced). Less at
    /// the mercy of other load on the host than throughput, and it is what tracing adds to the
    /// traced program.
    nginx_us_per_request: Vec<(&'static str, f64)>,
    /// nginx (master and worker) CPU over the load, % of one core: with the agent, this includes
    /// the time the kernel spends in its probes on nginx's behalf.
    nginx_cpu_percent: f64,
    /// wrk CPU over the load, % of one core: part of the CPU per request summed for every path,
    /// and shown per round for TLS, where the uprobes on the shared libssl also trap in wrk's
    /// calls (filtered out in the kernel but still paid for).
    wrk_cpu_percent: f64,
    /// How long the load ran, over which the CPU shares above were taken.
    elapsed: Duration,
    mode: Mode,
    /// Present for traced rounds.
    agent: Option<AgentRound>,
}

struct AgentRound {
    cpu_percent: f64,
    /// The agent's CPU over the load, capture side and export side.
    split: AgentCpu,
    /// This process (the OTLP receiver; wrk is not counted) over the load, % of one core.
    receiver_cpu_percent: f64,
    peak_rss: u64,
    spans: u64,
    stats: Stats,
    /// `kernel.tls_unattributed`: TLS plaintext dropped because its socket was not known.
    tls_unattributed: u64,
    stats_raw: Value,
    exit: String,
    log: PathBuf,
}

impl AgentRound {
    /// Agent CPU per span received, in µs: (capture and span building, export).
    fn us_per_span(&self) -> (f64, f64) {
        let per = |t: Duration| t.as_secs_f64() * 1e6 / self.spans.max(1) as f64;
        (per(self.split.capture), per(self.split.export))
    }

    /// Events or spans lost and counted, TLS plaintext without a socket included.
    fn losses(&self) -> u64 {
        self.stats.counted_losses() + self.tls_unattributed
    }

    fn loss_breakdown(&self) -> String {
        match (self.stats.loss_breakdown(), self.tls_unattributed) {
            (b, 0) => b,
            (b, n) if b == "none" => format!("tls_unattributed {n}"),
            (b, n) => format!("{b}, tls_unattributed {n}"),
        }
    }
}

impl Round {
    fn requests(&self) -> u64 {
        self.wrk.iter().map(|(_, w)| w.requests).sum()
    }

    /// Every request became a span or its loss was counted.
    fn accounted(&self) -> Option<bool> {
        let a = self.agent.as_ref()?;
        Some(a.spans + a.losses() >= self.requests())
    }

    fn nginx_us(&self, path: &str) -> Option<f64> {
        self.nginx_us_per_request
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, us)| *us)
    }

    /// A share of one core over the load as CPU per request served, in µs.
    fn us_per_request(&self, cpu_percent: f64) -> f64 {
        cpu_percent / 100.0 * self.elapsed.as_secs_f64() * 1e6 / self.requests().max(1) as f64
    }

    /// CPU per request of everything measured on the host, in µs: nginx, wrk, and (traced) the
    /// agent and the receiver. On a saturated host the throughput ratio follows their sum.
    fn cpu_per_request(&self, path: &str) -> Option<CpuPerRequest> {
        let agent = self.agent.as_ref();
        Some(CpuPerRequest {
            nginx: self.nginx_us(path)?,
            wrk: self.us_per_request(self.wrk_cpu_percent),
            agent: agent.map_or(0.0, |a| self.us_per_request(a.cpu_percent)),
            receiver: agent.map_or(0.0, |a| self.us_per_request(a.receiver_cpu_percent)),
        })
    }

    fn rps(&self, path: &str) -> Option<f64> {
        self.wrk
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, w)| w.requests_per_sec)
    }
}

#[derive(Clone, Copy)]
struct CpuPerRequest {
    nginx: f64,
    wrk: f64,
    agent: f64,
    receiver: f64,
}

impl CpuPerRequest {
    fn total(&self) -> f64 {
        self.nginx + self.wrk + self.agent + self.receiver
    }

    /// The median of each part over rounds.
    fn median_of(all: &[CpuPerRequest]) -> Option<CpuPerRequest> {
        let part = |f: fn(&CpuPerRequest) -> f64| median(&all.iter().map(f).collect::<Vec<_>>());
        Some(CpuPerRequest {
            nginx: part(|c| c.nginx)?,
            wrk: part(|c| c.wrk)?,
            agent: part(|c| c.agent)?,
            receiver: part(|c| c.receiver)?,
        })
    }
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let summary = measure(args, &HTTP1)?;
    let path = write_json(HTTP1.name, &summary)?;
    println!("results: {}", path.display());
    Ok(())
}

/// Runs the interleaved rounds of a variant, prints them and the summary, and returns the
/// summary as JSON (the caller writes it).
pub fn measure(args: &BenchArgs, v: &Variant) -> Result<Value> {
    let name = v.name;
    let traced = !args.baseline_only;
    let duration = Duration::from_secs(args.duration);
    let out_dir = results_dir()?;

    let (bin, receiver) = if traced {
        let bin = match &args.agent_bin {
            Some(bin) => std::path::absolute(bin)?,
            None => {
                util::run(util::cargo().args(["build", "--release", "-p", "periscope"]))?;
                util::target_dir().join("release/periscope")
            }
        };
        let receiver = Receiver::start_grpc(false).context("starting the OTLP receiver")?;
        (Some(bin), Some(receiver))
    } else {
        (None, None)
    };
    let stats_dir = TempDir::new("periscope-bench-stats")?;

    println!(
        "\nbench {name}: {} pair(s) of rounds, wrk -t{} -c{} -d{}s --latency on {}{}",
        args.rounds,
        wrk::THREADS,
        wrk::CONNECTIONS,
        args.duration,
        PATHS.join(" and "),
        if v.tls { " over HTTPS" } else { "" }
    );
    if let (Some(bin), Some(rx)) = (&bin, &receiver) {
        println!(
            "traced rounds: {} run --exe nginx --otlp-endpoint {} --otlp-protocol grpc",
            bin.display(),
            rx.endpoint()
        );
    } else {
        println!("traced rounds: skipped (--baseline-only)");
    }

    let mut rounds: Vec<Round> = Vec::new();
    for pair in 1..=args.rounds {
        // Each path's untraced and traced measurements run back to back on one nginx, so that
        // the host's load, which swings by a fifth within tens of seconds here, is as alike as
        // possible for the two. Odd pairs go untraced first and `/ok` first, even pairs the
        // other way round, so neither order nor warm-up favours one side.
        let mut paths = PATHS;
        if pair % 2 == 0 {
            paths.reverse();
        }
        for path in paths {
            let mut nginx = start_nginx(v)?;
            let traced_first = pair % 2 == 0;
            let mut order = vec![Mode::Untraced];
            if traced {
                order.push(Mode::Traced);
                if args.unselected {
                    // At the far end, so that the untraced and traced measurements stay
                    // adjacent.
                    order.push(Mode::Unselected);
                }
            }
            if traced_first {
                order.reverse();
            }
            for mode in order {
                let at = Measurement {
                    nginx: &nginx,
                    pair,
                    path,
                    duration,
                };
                let round = match (mode, &bin, &receiver) {
                    (Mode::Untraced, ..) => untraced_round(&at)?,
                    (Mode::Unselected, Some(bin), Some(rx)) => {
                        let log = out_dir.join(format!("{}.log", at.tag(name, "unselected")));
                        unselected_round(&at, bin, rx, &log)?
                    }
                    (Mode::Traced, Some(bin), Some(rx)) => {
                        let tag = at.tag(name, "agent");
                        let log = out_dir.join(format!("{tag}.log"));
                        let stats_file = stats_dir.path().join(format!("{tag}.json"));
                        traced_round(&at, bin, rx, &stats_file, &log)?
                    }
                    // The agent's modes are in the order only with an agent and a receiver.
                    _ => continue,
                };
                print_round(v, &round);
                rounds.push(round);
            }
            nginx.stop();
        }
    }

    Ok(summarize(args, v, &rounds))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Untraced,
    Traced,
    /// The agent ran, selecting only a program that does not exist: nginx met its probes but
    /// was not traced.
    Unselected,
}

/// One path's load on one nginx, in one pair.
struct Measurement<'a> {
    nginx: &'a Nginx,
    pair: u32,
    path: &'static str,
    duration: Duration,
}

impl Measurement<'_> {
    /// A file name for what the agent leaves of this measurement.
    fn tag(&self, scenario: &str, kind: &str) -> String {
        format!(
            "{scenario}-{kind}-pair{}{}",
            self.pair,
            self.path.replace(['/', '.'], "-")
        )
    }
}

/// The agent runs with every probe attached but selects a program that does not exist.
fn unselected_round(
    at: &Measurement,
    bin: &Path,
    receiver: &Receiver,
    log: &Path,
) -> Result<Round> {
    let agent_args: Vec<String> = vec![
        "run".into(),
        "--exe".into(),
        "periscope-bench-selects-nothing".into(),
        "--otlp-endpoint".into(),
        receiver.endpoint(),
    ];
    let agent = Agent::start(bin, &agent_args, log)?;
    let round = untraced_round(at)?;
    agent.stop()?;
    Ok(Round {
        mode: Mode::Unselected,
        ..round
    })
}

fn start_nginx(v: &Variant) -> Result<Nginx> {
    if v.tls {
        Nginx::start_tls()
    } else {
        Nginx::start()
    }
}

fn untraced_round(at: &Measurement) -> Result<Round> {
    let Measurement {
        nginx,
        pair,
        path,
        duration,
    } = *at;
    let nginx_before = nginx.cpu_time();
    let wrk_before = children_cpu_time();
    let started = Instant::now();
    let (wrk, nginx_us_per_request) = load(nginx, path, duration)?;
    let elapsed = started.elapsed();
    let wrk_cpu_percent = cpu_percent(children_cpu_time().saturating_sub(wrk_before), elapsed);
    let nginx_cpu_percent = cpu_percent(nginx.cpu_time().saturating_sub(nginx_before), elapsed);
    Ok(Round {
        pair,
        wrk,
        nginx_us_per_request,
        nginx_cpu_percent,
        wrk_cpu_percent,
        elapsed,
        mode: Mode::Untraced,
        agent: None,
    })
}

fn traced_round(
    at: &Measurement,
    bin: &Path,
    receiver: &Receiver,
    stats_file: &Path,
    log: &Path,
) -> Result<Round> {
    let Measurement {
        nginx,
        pair,
        path,
        duration,
    } = *at;
    // nginx runs before the agent starts: the agent attaches to a running server.
    let _ = std::fs::remove_file(stats_file);
    let agent_args: Vec<String> = vec![
        "run".into(),
        "--exe".into(),
        "nginx".into(),
        "--otlp-endpoint".into(),
        receiver.endpoint(),
        "--otlp-protocol".into(),
        "grpc".into(),
        "--stats-file".into(),
        stats_file.display().to_string(),
    ];
    let agent = Agent::start(bin, &agent_args, log)?;
    let pid = agent.pid();
    let spans_before = receiver.span_count();

    let cpu_before = agent::cpu_time(pid)?;
    let split_before = AgentCpu::read(pid)?;
    let receiver_before = agent::cpu_time(std::process::id())?;
    let nginx_before = nginx.cpu_time();
    let wrk_before = children_cpu_time();
    let started = Instant::now();
    let (wrk, nginx_us_per_request) = load(nginx, path, duration)?;
    let elapsed = started.elapsed();
    let wrk_cpu_percent = cpu_percent(children_cpu_time().saturating_sub(wrk_before), elapsed);
    let cpu_after = agent::cpu_time(pid)?;
    let split = AgentCpu::read(pid)?.since(split_before);
    let receiver_after = agent::cpu_time(std::process::id())?;
    let nginx_cpu_percent = cpu_percent(nginx.cpu_time().saturating_sub(nginx_before), elapsed);
    let peak_rss = agent::peak_rss(pid)?;

    let exit = agent.stop()?;
    let spans = receiver.settle().saturating_sub(spans_before);
    let (stats, stats_raw) = match Stats::read(stats_file) {
        Ok(s) => s,
        Err(e) => {
            println!("  warning: no agent stats ({e:#}); loss counters read as 0");
            (Stats::default(), Value::Null)
        }
    };
    let tls_unattributed = stats_raw["kernel"]["tls_unattributed"]
        .as_u64()
        .unwrap_or(0);
    Ok(Round {
        pair,
        wrk,
        nginx_us_per_request,
        nginx_cpu_percent,
        wrk_cpu_percent,
        elapsed,
        agent: Some(AgentRound {
            cpu_percent: cpu_percent(cpu_after.saturating_sub(cpu_before), elapsed),
            receiver_cpu_percent: cpu_percent(
                receiver_after.saturating_sub(receiver_before),
                elapsed,
            ),
            split,
            peak_rss,
            spans,
            stats,
            tls_unattributed,
            stats_raw,
            exit: exit.to_string(),
            log: log.to_path_buf(),
        }),
        mode: Mode::Traced,
    })
}

/// What wrk measured on a path, and nginx's CPU per request on it.
type Load = (Vec<(&'static str, WrkResult)>, Vec<(&'static str, f64)>);

fn load(nginx: &Nginx, path: &'static str, duration: Duration) -> Result<Load> {
    let before = nginx.cpu_time();
    let result = wrk::run(&nginx.url(path), duration)?;
    let cpu = nginx.cpu_time().saturating_sub(before);
    let nginx_us = cpu.as_secs_f64() * 1e6 / result.requests.max(1) as f64;
    Ok((vec![(path, result)], vec![(path, nginx_us)]))
}

/// CPU time (user + system) of this process's children that have exited and been waited for.
/// Around a load, the difference is wrk's: nginx and the agent are still running then.
fn children_cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct we own; all-zero is a valid `rusage`.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn cpu_percent(cpu: Duration, wall: Duration) -> f64 {
    cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9) * 100.0
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64 * 100.0
    }
}

fn print_round(v: &Variant, round: &Round) {
    let mode = match round.mode {
        Mode::Untraced => "untraced",
        Mode::Traced => "traced",
        Mode::Unselected => "agent running, nginx not selected",
    };
    println!(
        "\npair {} {mode}: nginx CPU {:.1}% of one core{}",
        round.pair,
        round.nginx_cpu_percent,
        if v.tls {
            format!(", wrk CPU {:.1}%", round.wrk_cpu_percent)
        } else {
            String::new()
        }
    );
    println!(
        "  {:<14} {:>11} {:>11} {:>9} {:>9} {:>7}",
        "path", "req/s", "requests", "p50", "p99", "errors"
    );
    for (path, w) in &round.wrk {
        println!(
            "  {:<14} {:>11.0} {:>11} {:>9} {:>9} {:>7}",
            path,
            w.requests_per_sec,
            w.requests,
            fmt_us(w.p50_us),
            fmt_us(w.p99_us),
            w.non_2xx + w.socket_errors
        );
    }
    if let Some(a) = &round.agent {
        let requests = round.requests();
        let (capture_us, export_us) = a.us_per_span();
        println!(
            "  agent: CPU {:.1}% of one core (per span: capture {capture_us:.2} µs, export \
             {export_us:.2} µs), peak RSS {:.1} MiB, {}; receiver CPU {:.1}%",
            a.cpu_percent,
            mib(a.peak_rss),
            a.exit,
            a.receiver_cpu_percent
        );
        println!(
            "  spans: {} received for {} requests ({:.2}%); agent created {}, exported {}",
            a.spans,
            requests,
            percent(a.spans, requests),
            a.stats.spans_created,
            a.stats.export_exported
        );
        println!(
            "  agent raised to catch up (stopped stepping aside): {} time(s), {:.2} s in all",
            a.stats.raised,
            a.stats.raised_ms as f64 / 1000.0
        );
        println!(
            "  lost (counted): {}; truncated payloads {} (capped to the decoder's need {}), \
             iovecs {}; stretches skipped after framing was lost {}; log {}",
            a.loss_breakdown(),
            a.stats.payload_truncated,
            a.stats.payload_capped,
            a.stats.iovecs_truncated,
            a.stats.resync_skips,
            a.log.display()
        );
    }
}

fn round_json(variant: &Variant, round: &Round) -> Value {
    let wrk: Vec<Value> = round
        .wrk
        .iter()
        .map(|(path, w)| {
            let mut v = w.to_json();
            v["path"] = json!(path);
            v["nginx_us_per_request"] = json!(round.nginx_us(path));
            v
        })
        .collect();
    let mut v = json!({
        "pair": round.pair,
        "traced": round.mode == Mode::Traced,
        "unselected": round.mode == Mode::Unselected,
        "requests": round.requests(),
        "nginx_cpu_percent_of_one_core": round.nginx_cpu_percent,
        "wrk": wrk,
    });
    if variant.tls {
        v["wrk_cpu_percent_of_one_core"] = json!(round.wrk_cpu_percent);
    }
    if let Some(a) = &round.agent {
        v["agent"] = json!({
            "cpu_percent_of_one_core": a.cpu_percent,
            "receiver_cpu_percent_of_one_core": a.receiver_cpu_percent,
            "peak_rss_bytes": a.peak_rss,
            "spans_received": a.spans,
            "span_coverage_percent": percent(a.spans, round.requests()),
            "counted_losses": a.losses(),
            "accounted": round.accounted(),
            "exit": a.exit,
            "stats": a.stats_raw,
        });
        if variant.tls {
            v["agent"]["tls_unattributed"] = json!(a.tls_unattributed);
        }
    }
    v
}

/// Throughput per pair on `path`: each of `others` against the untraced measurement of its
/// pair.
fn pair_ratios(untraced: &[&Round], others: &[&Round], path: &str) -> Vec<f64> {
    others
        .iter()
        .filter_map(|o| {
            let with = o.rps(path)?;
            let base = untraced
                .iter()
                .filter(|u| u.pair == o.pair)
                .find_map(|u| u.rps(path))?;
            Some(with / base)
        })
        .collect()
}

fn fmt_ratios(ratios: &[f64]) -> String {
    ratios
        .iter()
        .map(|r| format!("{r:.3}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prints the summary, with the goals, and returns it as JSON.
fn summarize(args: &BenchArgs, v: &Variant, rounds: &[Round]) -> Value {
    let name = v.name;
    let of = |mode: Mode| {
        rounds
            .iter()
            .filter(|r| r.mode == mode)
            .collect::<Vec<&Round>>()
    };
    let (untraced, traced, unselected) =
        (of(Mode::Untraced), of(Mode::Traced), of(Mode::Unselected));

    println!(
        "\nsummary {name} ({} pair(s), {} s each, wrk -t{} -c{})",
        args.rounds,
        args.duration,
        wrk::THREADS,
        wrk::CONNECTIONS
    );
    let mut paths_json = Vec::new();
    let mut lowest_ratio: Option<f64> = None;
    for path in PATHS {
        let base: Vec<f64> = untraced.iter().filter_map(|r| r.rps(path)).collect();
        let with: Vec<f64> = traced.iter().filter_map(|r| r.rps(path)).collect();
        let ratios = pair_ratios(&untraced, &traced, path);
        let ratio = median(&ratios);
        if let Some(r) = ratio {
            lowest_ratio = Some(lowest_ratio.map_or(r, |l: f64| l.min(r)));
        }
        let lat = |rs: &[&Round], pick: fn(&WrkResult) -> Option<f64>| {
            let v: Vec<f64> = rs
                .iter()
                .filter_map(|r| r.wrk.iter().find(|(p, _)| *p == path))
                .filter_map(|(_, w)| pick(w))
                .collect();
            median(&v)
        };
        let (u50, u99) = (lat(&untraced, |w| w.p50_us), lat(&untraced, |w| w.p99_us));
        let (t50, t99) = (lat(&traced, |w| w.p50_us), lat(&traced, |w| w.p99_us));
        let fmt_rps = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
        println!(
            "  {path:<14} req/s untraced {} traced {}  ratio {}{}",
            fmt_rps(median(&base)),
            fmt_rps(median(&with)),
            ratio.map_or("-".into(), |r| format!("{r:.3}")),
            if ratios.len() > 1 {
                format!(" (pairs: {})", fmt_ratios(&ratios))
            } else {
                String::new()
            }
        );
        println!(
            "  {:<14} p50 {} -> {}, p99 {} -> {}",
            "",
            fmt_us(u50),
            fmt_us(t50),
            fmt_us(u99),
            fmt_us(t99)
        );
        let nginx_us = |rs: &[&Round]| {
            median(
                &rs.iter()
                    .filter_map(|r| r.nginx_us(path))
                    .collect::<Vec<_>>(),
            )
        };
        let (nginx_untraced, nginx_traced) = (nginx_us(&untraced), nginx_us(&traced));
        println!(
            "  {:<14} nginx CPU per request {} -> {}{}",
            "",
            nginx_untraced.map_or("-".into(), |u| format!("{u:.1} µs")),
            nginx_traced.map_or("-".into(), |u| format!("{u:.1} µs")),
            match (nginx_untraced, nginx_traced) {
                (Some(u), Some(t)) => format!(" ({:+.1} µs)", t - u),
                _ => String::new(),
            }
        );
        let cpu = |rs: &[&Round]| {
            CpuPerRequest::median_of(
                &rs.iter()
                    .filter_map(|r| r.cpu_per_request(path))
                    .collect::<Vec<_>>(),
            )
        };
        let (cpu_untraced, cpu_traced) = (cpu(&untraced), cpu(&traced));
        if let (Some(u), Some(t)) = (cpu_untraced, cpu_traced) {
            println!(
                "  {:<14} CPU per request, all measured: untraced {:.1} µs (nginx {:.1}, wrk \
                 {:.1}), traced {:.1} µs (nginx {:.1}, wrk {:.1}, agent {:.1}, receiver {:.1}); \
                 ratio of the two {:.3}",
                "",
                u.total(),
                u.nginx,
                u.wrk,
                t.total(),
                t.nginx,
                t.wrk,
                t.agent,
                t.receiver,
                u.total() / t.total()
            );
        }
        let cpu_json = |c: Option<CpuPerRequest>| {
            c.map(|c| {
                json!({"nginx": c.nginx, "wrk": c.wrk, "agent": c.agent,
                       "receiver": c.receiver, "total": c.total()})
            })
        };
        let unselected_ratios = pair_ratios(&untraced, &unselected, path);
        let unselected_ratio = median(&unselected_ratios);
        let nginx_unselected = nginx_us(&unselected);
        if let (Some(r), Some(u), Some(n)) = (unselected_ratio, nginx_untraced, nginx_unselected) {
            println!(
                "  {:<14} agent running, nginx not selected: ratio {r:.3} (pairs: {}), nginx CPU \
                 per request {n:.1} µs ({:+.1} µs)",
                "",
                fmt_ratios(&unselected_ratios),
                n - u
            );
        }
        paths_json.push(json!({
            "unselected_throughput_ratio_median": unselected_ratio,
            "unselected_throughput_ratios": unselected_ratios,
            "nginx_us_per_request_median_unselected": nginx_unselected,
            "nginx_us_per_request_median": {"untraced": nginx_untraced, "traced": nginx_traced},
            "cpu_us_per_request_median": {"untraced": cpu_json(cpu_untraced),
                                          "traced": cpu_json(cpu_traced)},
            "path": path,
            "untraced_rps_median": median(&base),
            "traced_rps_median": median(&with),
            "throughput_ratio_median": ratio,
            "throughput_ratios": ratios,
            "untraced_p50_us": u50, "untraced_p99_us": u99,
            "traced_p50_us": t50, "traced_p99_us": t99,
        }));
    }

    let mut summary = json!({
        "scenario": name,
        "pairs": args.rounds,
        "duration_s": args.duration,
        "wrk": {"threads": wrk::THREADS, "connections": wrk::CONNECTIONS},
        "baseline_only": args.baseline_only,
        "paths": paths_json,
        "rounds": rounds.iter().map(|r| round_json(v, r)).collect::<Vec<_>>(),
    });

    let nginx_cpu =
        |rs: &[&Round]| median(&rs.iter().map(|r| r.nginx_cpu_percent).collect::<Vec<_>>());
    let fmt_pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}%"));
    println!(
        "  nginx CPU (median, % of one core): untraced {}, traced {}",
        fmt_pct(nginx_cpu(&untraced)),
        fmt_pct(nginx_cpu(&traced))
    );
    summary["nginx_cpu_percent_median"] =
        json!({"untraced": nginx_cpu(&untraced), "traced": nginx_cpu(&traced)});
    if v.tls {
        let wrk_cpu =
            |rs: &[&Round]| median(&rs.iter().map(|r| r.wrk_cpu_percent).collect::<Vec<_>>());
        println!(
            "  wrk CPU (median, % of one core): untraced {}, traced {}",
            fmt_pct(wrk_cpu(&untraced)),
            fmt_pct(wrk_cpu(&traced))
        );
        summary["wrk_cpu_percent_median"] =
            json!({"untraced": wrk_cpu(&untraced), "traced": wrk_cpu(&traced)});
    }

    if traced.is_empty() {
        println!("  traced rounds not run: goals not measured");
        summary["goals"] = json!({"measured": false});
        return summary;
    }

    let requests: u64 = traced.iter().map(|r| r.requests()).sum();
    let agents: Vec<&AgentRound> = traced.iter().filter_map(|r| r.agent.as_ref()).collect();
    let spans: u64 = agents.iter().map(|a| a.spans).sum();
    let losses: u64 = agents.iter().map(|a| a.losses()).sum();
    let tls_unattributed: u64 = agents.iter().map(|a| a.tls_unattributed).sum();
    let truncated: u64 = agents.iter().map(|a| a.stats.payload_truncated).sum();
    let capped: u64 = agents.iter().map(|a| a.stats.payload_capped).sum();
    let cpu = median(&agents.iter().map(|a| a.cpu_percent).collect::<Vec<_>>());
    let capture_us = median(&agents.iter().map(|a| a.us_per_span().0).collect::<Vec<_>>());
    let export_us = median(&agents.iter().map(|a| a.us_per_span().1).collect::<Vec<_>>());
    let rss = agents.iter().map(|a| a.peak_rss).max().unwrap_or(0);
    let coverage = percent(spans, requests);
    println!(
        "  spans: {spans} for {requests} requests ({coverage:.2}%); counted losses {losses}{}; \
         truncated payloads {truncated}; copied only as far as the decoder needs {capped}",
        if v.tls {
            format!(" (tls_unattributed {tls_unattributed})")
        } else {
            String::new()
        }
    );
    let us = |v: Option<f64>| v.map_or("-".into(), |u| format!("{u:.2} µs"));
    println!(
        "  agent: CPU {} of one core (median), peak RSS {:.1} MiB (max); per span (median): \
         capture {}, export {}",
        cpu.map_or("-".into(), |c| format!("{c:.1}%")),
        mib(rss),
        us(capture_us),
        us(export_us)
    );

    let accounted_ok = traced.iter().all(|r| r.accounted() == Some(true));
    let verdict = |ok: bool| if ok { "MET" } else { "MISSED" };
    let lowest = lowest_ratio.map_or("-".into(), |r| format!("{r:.3}"));
    let throughput_ok = match v.min_throughput_ratio {
        Some(min) => {
            let ok = lowest_ratio.is_some_and(|r| r >= min);
            println!(
                "  goal: throughput ratio >= {min} on every path: {} (lowest {lowest})",
                verdict(ok)
            );
            ok
        }
        None => {
            println!("  throughput ratio, lowest path: {lowest} (reported; no goal set)");
            true
        }
    };
    println!(
        "  goal: every request spanned or its loss counted, every round: {}",
        verdict(accounted_ok)
    );
    let met = throughput_ok && accounted_ok;
    println!("bench {name}: goals {}", if met { "MET" } else { "MISSED" });

    summary["summary"] = json!({
        "throughput_ratio_lowest_path": lowest_ratio,
        "requests": requests,
        "spans_received": spans,
        "span_coverage_percent": coverage,
        "counted_losses": losses,
        "payload_truncated": truncated,
        "payload_capped": capped,
        "agent_cpu_percent_of_one_core_median": cpu,
        "agent_capture_us_per_span_median": capture_us,
        "agent_export_us_per_span_median": export_us,
        "agent_peak_rss_mib_max": mib(rss),
    });
    if v.tls {
        summary["summary"]["tls_unattributed"] = json!(tls_unattributed);
    }
    summary["goals"] = json!({
        "measured": true,
        "min_throughput_ratio": v.min_throughput_ratio,
        "throughput_ok": v.min_throughput_ratio.map(|_| throughput_ok),
        "accounted_ok": accounted_ok,
        "met": met,
    });
    summary
}
