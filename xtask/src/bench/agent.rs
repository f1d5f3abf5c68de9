//! The agent under measurement: started, waited for, sampled through /proc, stopped.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::signal;

/// The line the agent prints on stderr once its probes are attached.
const READY_LINE: &str = "periscope: tracing";
const READY_TIMEOUT: Duration = Duration::from_secs(90);
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Agent {
    child: Child,
    log: PathBuf,
    stderr_thread: Option<std::thread::JoinHandle<()>>,
}

impl Agent {
    /// Starts the agent with stderr copied to `log`, and waits for its ready line.
    pub fn start(bin: &Path, args: &[String], log: &Path) -> Result<Self> {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let mut file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr_thread = std::thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(file, "{line}");
                if line.contains(READY_LINE)
                    && let Some(tx) = ready_tx.take()
                {
                    let _ = tx.send(());
                }
            }
        });
        let mut agent = Agent {
            child,
            log: log.to_path_buf(),
            stderr_thread: Some(stderr_thread),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match ready_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(()) => return Ok(agent),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stderr closed: the agent is exiting.
                }
            }
            if let Some(status) = agent.child.try_wait()? {
                agent.join_stderr();
                bail!(
                    "the agent exited before `{READY_LINE}` ({status}); its stderr, {}:\n{}",
                    agent.log.display(),
                    tail(&agent.log, 20)
                );
            }
            if Instant::now() > deadline {
                let _ = agent.child.kill();
                let _ = agent.child.wait();
                agent.join_stderr();
                bail!(
                    "the agent did not print `{READY_LINE}` within {} s; its stderr, {}:\n{}",
                    READY_TIMEOUT.as_secs(),
                    agent.log.display(),
                    tail(&agent.log, 20)
                );
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT, then waits for the agent to flush and exit (SIGKILL after a minute).
    pub fn stop(mut self) -> Result<ExitStatus> {
        signal(self.child.id(), libc::SIGINT)?;
        let deadline = Instant::now() + EXIT_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.join_stderr();
                bail!(
                    "the agent did not exit within {} s of SIGINT; killed",
                    EXIT_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.join_stderr();
        Ok(status)
    }

    fn join_stderr(&mut self) {
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// CPU time (user + system) a process has used so far.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let ticks = parse_stat_cpu_ticks(&stat).context("parsing /proc/PID/stat")?;
    Ok(ticks_to_duration(ticks))
}

/// The agent's CPU time so far, split between its export threads (the exporter pipeline and
/// its OTLP runtime) and everything else (capture, parsing, span building). The split is what
/// a change to one side should move, whatever the load generator's noise does to throughput.
#[derive(Clone, Copy, Debug, Default)]
pub struct AgentCpu {
    pub capture: Duration,
    pub export: Duration,
}

impl AgentCpu {
    pub fn read(pid: u32) -> Result<Self> {
        let dir = format!("/proc/{pid}/task");
        let mut split = AgentCpu::default();
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
            // A thread may end between the listing and the read: it no longer counts.
            let Ok(stat) = std::fs::read_to_string(entry?.path().join("stat")) else {
                continue;
            };
            let Some(ticks) = parse_stat_cpu_ticks(&stat) else {
                continue;
            };
            let time = ticks_to_duration(ticks);
            if is_export_thread(&stat) {
                split.export += time;
            } else {
                split.capture += time;
            }
        }
        Ok(split)
    }

    pub fn since(self, before: AgentCpu) -> AgentCpu {
        AgentCpu {
            capture: self.capture.saturating_sub(before.capture),
            export: self.export.saturating_sub(before.export),
        }
    }
}

/// Whether a /proc/PID/task/TID/stat line is one of the agent's export threads
/// (`periscope-export` and `periscope-otlp`, cut to 15 bytes by the kernel).
fn is_export_thread(stat: &str) -> bool {
    let comm = stat
        .find('(')
        .zip(stat.rfind(')'))
        .map_or("", |(open, close)| &stat[open + 1..close]);
    comm.starts_with("periscope-expor") || comm.starts_with("periscope-otlp")
}

fn ticks_to_duration(ticks: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Duration::from_secs_f64(ticks as f64 / hz)
}

/// utime + stime (fields 14 and 15) from a /proc/PID/stat line. The command name (field 2) may
/// contain spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // after_comm starts at field 3 (state): field N is at index N - 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The parent pid (field 4) from a /proc/PID/stat line.
pub fn parse_stat_ppid(stat: &str) -> Option<u32> {
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Peak resident set size (VmHWM) in bytes.
pub fn peak_rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_vm_hwm(&status).context("no VmHWM in /proc/PID/status")
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Counters from the agent's `--stats-file`. Missing keys read as 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub data_events: u64,
    pub ring_buffer_full: u64,
    pub payload_truncated: u64,
    /// Payloads copied only as far as their decoder said it needs (by design).
    pub payload_capped: u64,
    pub iovecs_truncated: u64,
    pub copy_failed: u64,
    pub unwatched_socket_io: u64,
    pub control_events_lost: u64,
    pub spans_created: u64,
    pub export_submitted: u64,
    pub export_exported: u64,
    pub dropped_queue_full: u64,
    pub dropped_export_failed: u64,
    /// Times the agent was raised to catch up (stopped stepping aside, or left idle priority), and
    /// for how long (ms).
    pub raised: u64,
    pub raised_ms: u64,
    /// Stretches of traffic a protocol decoder skipped after losing the framing: requests in them
    /// got no span, and how many there were is unknown.
    pub resync_skips: u64,
}

impl Stats {
    pub fn read(path: &Path) -> Result<(Self, Value)> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let value: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok((Self::from_value(&value), value))
    }

    pub fn from_value(v: &Value) -> Self {
        let n = |section: &str, key: &str| v[section][key].as_u64().unwrap_or(0);
        Stats {
            data_events: n("kernel", "data_events"),
            ring_buffer_full: n("kernel", "ring_buffer_full"),
            payload_truncated: n("kernel", "payload_truncated"),
            payload_capped: n("kernel", "payload_capped"),
            iovecs_truncated: n("kernel", "iovecs_truncated"),
            copy_failed: n("kernel", "copy_failed"),
            unwatched_socket_io: n("kernel", "unwatched_socket_io"),
            control_events_lost: n("kernel", "control_events_lost"),
            spans_created: n("spans", "created"),
            export_submitted: n("export", "submitted"),
            export_exported: n("export", "exported"),
            dropped_queue_full: n("export", "dropped_queue_full"),
            dropped_export_failed: n("export", "dropped_export_failed"),
            raised: n("cpu_priority", "raised"),
            raised_ms: n("cpu_priority", "raised_ms"),
            resync_skips: n("streams", "resync_skips"),
        }
    }

    /// Events or spans the agent lost and counted (truncations are not losses).
    pub fn counted_losses(&self) -> u64 {
        self.ring_buffer_full
            + self.copy_failed
            + self.unwatched_socket_io
            + self.control_events_lost
            + self.dropped_queue_full
            + self.dropped_export_failed
    }

    /// Non-zero loss counters, for display.
    pub fn loss_breakdown(&self) -> String {
        let parts: Vec<String> = [
            ("ring_buffer_full", self.ring_buffer_full),
            ("copy_failed", self.copy_failed),
            ("unwatched_socket_io", self.unwatched_socket_io),
            ("control_events_lost", self.control_events_lost),
            ("dropped_queue_full", self.dropped_queue_full),
            ("dropped_export_failed", self.dropped_export_failed),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_ticks_skip_a_command_name_with_spaces() {
        let stat = "4242 (periscope (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    123 45 0 0 20 0 3 0 1000 100000000 2000 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(168));
        assert_eq!(parse_stat_ppid(stat), Some(1));
    }

    #[test]
    fn export_threads_are_told_apart_by_name() {
        let line = |comm: &str| format!("4243 ({comm}) S 1 4242 4242 0 -1 4194560 0 0 0 0 7 3");
        assert!(is_export_thread(&line("periscope-expor")));
        assert!(is_export_thread(&line("periscope-otlp")));
        assert!(!is_export_thread(&line("periscope")));
        assert!(!is_export_thread(&line("tokio-runtime-w")));
        assert_eq!(parse_stat_cpu_ticks(&line("periscope-expor")), Some(10));
    }

    #[test]
    fn vm_hwm_in_bytes() {
        let status = "Name:\tperiscope\nVmPeak:\t  200 kB\nVmHWM:\t   5120 kB\nVmRSS:\t 4000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(5 * 1024 * 1024));
    }

    #[test]
    fn stats_tolerate_missing_keys() {
        let v: Value = serde_json::from_str(
            r#"{"kernel": {"ring_buffer_full": 3, "copy_failed": 1},
                "spans": {"created": 10},
                "streams": {"resync_skips": 4},
                "export": {"dropped_queue_full": 2}}"#,
        )
        .unwrap();
        let s = Stats::from_value(&v);
        assert_eq!(s.spans_created, 10);
        assert_eq!(
            s.counted_losses(),
            6,
            "skips are shown, not counted as losses"
        );
        assert_eq!(s.resync_skips, 4);
        assert_eq!(s.data_events, 0);
        assert_eq!(
            s.loss_breakdown(),
            "ring_buffer_full 3, copy_failed 1, dropped_queue_full 2"
        );
        assert_eq!(Stats::from_value(&Value::Null), Stats::default());
    }
}
