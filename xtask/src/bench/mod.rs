//! `cargo xtask bench`: performance measured as ratios against an untraced baseline taken in
//! the same run, with traced and untraced rounds interleaved.
//!
//! Each scenario is a module; `agent`, `nginx`, `wrk` and `receiver` are the pieces they share.

mod agent;
mod http1_nginx;
mod nginx;
mod receiver;
mod tls_nginx;
mod trace_parents;
mod wrk;

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::setup::{self, Scope};
use crate::util;

/// Set in the environment of the re-run that has the `bench` feature, so set-up runs once.
const SETUP_DONE_ENV: &str = "PERISCOPE_XTASK_SETUP_DONE";

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum, default_value_t = Scenario::Http1Nginx)]
    pub scenario: Scenario,
    /// Pairs of rounds (untraced, traced) to run.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// Seconds of load per measurement (wrk -d).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub duration: u64,
    /// Only the untraced rounds (checks the workload; needs no agent).
    #[arg(long)]
    pub baseline_only: bool,
    /// http1-nginx, tls-nginx: a third measurement per pair and path, with the agent running
    /// but nginx not selected: what processes the agent does not trace pay for its probes.
    #[arg(long)]
    pub unselected: bool,
    /// Measure this agent binary instead of building `target/release/periscope`.
    #[arg(long, value_name = "PATH")]
    pub agent_bin: Option<std::path::PathBuf>,
    /// trace-parents: requests each of the concurrent clients sends.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub requests_per_client: u64,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Plain HTTP/1.1: nginx (static file and `return 200`) saturated by wrk over loopback.
    Http1Nginx,
    /// The same over HTTPS: the cost of the OpenSSL uprobe capture (SSL_read/SSL_write).
    TlsNginx,
    /// Share of downstream spans given the right parent, 8 concurrent clients through a chain of
    /// services (thread per request, and thread pool + Node.js event loop).
    TraceParents,
    /// Every scenario in turn.
    All,
}

pub fn bench(args: BenchArgs) -> Result<()> {
    let invocation_start = std::time::SystemTime::now();
    if std::env::var_os(SETUP_DONE_ENV).is_none() {
        setup::setup(Scope::ALL)?;
    }
    if !util::is_root() {
        bail!("the benchmark runs the agent and must run as root");
    }
    // Traced rounds need the OTLP receiver from `periscope-tests`, compiled in only with the
    // `bench` feature (see xtask/Cargo.toml): re-run ourselves with it, optimized, since the
    // receiver shares the machine with the workload and a debug build would eat its cores.
    if !cfg!(feature = "bench") && !args.baseline_only {
        return rerun_with_bench_feature();
    }
    match args.scenario {
        Scenario::Http1Nginx => http1_nginx::run(&args),
        Scenario::TlsNginx => tls_nginx::run(&args, invocation_start),
        Scenario::TraceParents => trace_parents::run(&args),
        Scenario::All => {
            // Each runs even when an earlier one fails; the first error is returned.
            let nginx = http1_nginx::run(&args);
            let tls = tls_nginx::run(&args, invocation_start);
            let parents = trace_parents::run(&args);
            nginx.and(tls).and(parents)
        }
    }
}

fn rerun_with_bench_feature() -> Result<()> {
    let mut cmd = util::cargo();
    cmd.args([
        "run",
        "-q",
        "--release",
        "-p",
        "xtask",
        "--features",
        "bench",
        "--",
    ])
    .args(std::env::args_os().skip(1))
    .env(SETUP_DONE_ENV, "1");
    let status = util::run_status(&mut cmd)?;
    // Propagate the exit status unchanged: the inner run has already reported any error.
    std::process::exit(status.code().unwrap_or(1))
}

/// Where results go: `target/bench/`.
fn results_dir() -> Result<PathBuf> {
    let dir = util::target_dir().join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn write_json(name: &str, value: &serde_json::Value) -> Result<PathBuf> {
    let path = results_dir()?.join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// A free TCP port on loopback (the kernel picks it; there is a small race until it is used).
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("{prefix}-{}-{nanos:08x}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Median of the values (mean of the middle two for an even count); `None` when empty.
fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

/// Sends a signal to a process we started.
fn signal(pid: u32, sig: libc::c_int) -> Result<()> {
    let pid = libc::pid_t::try_from(pid).context("pid out of range")?;
    // SAFETY: kill has no memory-safety preconditions; the pid is one of our children.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(std::io::Error::last_os_error()).context("kill");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
