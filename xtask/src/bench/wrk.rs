//! Running wrk and reading its report.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

/// Load shape used by every HTTP/1 bench.
pub const THREADS: u32 = 2;
pub const CONNECTIONS: u32 = 32;

/// What one wrk run reported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WrkResult {
    /// Completed requests (`N requests in ...`).
    pub requests: u64,
    /// Seconds wrk measured over.
    pub seconds: f64,
    pub requests_per_sec: f64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// `Non-2xx or 3xx responses: N`.
    pub non_2xx: u64,
    /// Sum of `Socket errors: connect A, read B, write C, timeout D`.
    pub socket_errors: u64,
}

impl WrkResult {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.requests,
            "seconds": self.seconds,
            "requests_per_sec": self.requests_per_sec,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "non_2xx": self.non_2xx,
            "socket_errors": self.socket_errors,
        })
    }
}

/// Runs `wrk -t2 -c32 -dSECS --latency URL` and parses its report.
pub fn run(url: &str, duration: Duration) -> Result<WrkResult> {
    let out = Command::new("wrk")
        .arg(format!("-t{THREADS}"))
        .arg(format!("-c{CONNECTIONS}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg("--latency")
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .context("could not run wrk (is it installed? `cargo xtask setup`)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&stdout).with_context(|| format!("could not read wrk's report:\n{stdout}"))
}

/// Parses wrk's text report.
pub fn parse(report: &str) -> Result<WrkResult> {
    let mut r = WrkResult::default();
    let mut have_requests = false;
    let mut have_rate = false;
    let mut in_distribution = false;
    for line in report.lines() {
        let line = line.trim();
        if line.starts_with("Latency Distribution") {
            in_distribution = true;
            continue;
        }
        if in_distribution {
            if let Some((pct, value)) = line.split_once('%') {
                let value = parse_duration_us(value.trim());
                match pct.trim() {
                    "50" => r.p50_us = value,
                    "99" => r.p99_us = value,
                    _ => {}
                }
                continue;
            }
            in_distribution = false;
        }
        if let Some((count, rest)) = line.split_once(" requests in ") {
            r.requests = count.trim().parse().context("request count")?;
            let secs = rest.split(',').next().unwrap_or_default().trim();
            r.seconds = parse_duration_us(secs).map_or(0.0, |us| us / 1e6);
            have_requests = true;
        } else if let Some(rate) = line.strip_prefix("Requests/sec:") {
            r.requests_per_sec = rate.trim().parse().context("Requests/sec")?;
            have_rate = true;
        } else if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = n.trim().parse().unwrap_or(0);
        } else if let Some(errors) = line.strip_prefix("Socket errors:") {
            r.socket_errors = errors
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum();
        }
    }
    if !have_requests || !have_rate {
        bail!("no `requests in` or `Requests/sec:` line");
    }
    Ok(r)
}

/// `512.00us`, `1.23ms`, `2.00s`, `1.50m`, `1.00h` → microseconds.
fn parse_duration_us(text: &str) -> Option<f64> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(number * scale)
}

/// Microseconds for display: `850us`, `1.23ms`, `2.50s`.
pub fn fmt_us(us: Option<f64>) -> String {
    match us {
        None => "-".into(),
        Some(us) if us < 1e3 => format!("{us:.0}us"),
        Some(us) if us < 1e6 => format!("{:.2}ms", us / 1e3),
        Some(us) => format!("{:.2}s", us / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "\
Running 10s test @ http://127.0.0.1:40123/ok
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   410.12us  200.50us   9.87ms   90.00%
    Req/Sec    38.12k     2.01k   42.00k    70.00%
  Latency Distribution
     50%  380.00us
     75%  450.00us
     90%  600.00us
     99%    1.21ms
  758432 requests in 10.00s, 120.50MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:  75843.20
Transfer/sec:     12.05MB
";

    #[test]
    fn parses_a_latency_report() {
        let r = parse(REPORT).unwrap();
        assert_eq!(r.requests, 758_432);
        assert_eq!(r.seconds, 10.0);
        assert_eq!(r.requests_per_sec, 75_843.2);
        assert_eq!(r.p50_us, Some(380.0));
        assert_eq!(r.p99_us, Some(1210.0));
        assert_eq!(r.non_2xx, 5);
        assert_eq!(r.socket_errors, 3);
    }

    #[test]
    fn rejects_a_report_without_totals() {
        assert!(parse("Running 10s test @ http://x/\n").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_us("2.00s"), Some(2e6));
        assert_eq!(parse_duration_us("1.5m"), Some(90e6));
        assert_eq!(parse_duration_us("abc"), None);
        assert_eq!(fmt_us(Some(1234.0)), "1.23ms");
    }
}
