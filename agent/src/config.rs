//! Command line and configuration file. Flags win over the file; the file wins over defaults.
//! Every bad value is refused with the flag, or the file line, that holds it.

use std::{path::PathBuf, time::Duration};

use agent_common::{DEFAULT_CAPTURE, MAX_CAPTURE};
use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Deserializer, de::Error as _};

use crate::{
    capture::{probes::SocketProbes, processes::Selection},
    cpu_priority::CpuPriority,
    export::otlp::OtlpOptions,
};

#[derive(Parser, Debug)]
#[command(
    name = "periscope",
    version,
    about = "eBPF zero-code tracing: OpenTelemetry spans from unmodified programs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log level for the agent's own messages (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "warn", env = "PERISCOPE_LOG")]
    pub log_level: String,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Trace processes and export their spans (OTLP if configured, else to the terminal).
    Run(Box<RunArgs>),
    /// Report what this kernel and these privileges allow; exits non-zero if capture is impossible.
    Check,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Each finished trace as an indented tree.
    Tree,
    /// One JSON object per span per line.
    Json,
}

#[derive(Args, Debug, Default)]
pub struct RunArgs {
    /// Trace only this process (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Trace only processes running this executable or script (name or path; repeatable).
    #[arg(long = "exe", value_name = "NAME")]
    pub exes: Vec<String>,
    /// Trace only processes listening on this TCP port (repeatable).
    #[arg(long = "port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub ports: Vec<u16>,
    /// OTLP endpoint (overrides OTEL_EXPORTER_OTLP_ENDPOINT).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// OTLP traces endpoint, used as is (overrides OTEL_EXPORTER_OTLP_TRACES_ENDPOINT).
    #[arg(long, value_name = "URL")]
    pub otlp_traces_endpoint: Option<String>,
    /// `grpc` or `http/protobuf` (overrides OTEL_EXPORTER_OTLP_PROTOCOL).
    #[arg(long, value_name = "PROTOCOL")]
    pub otlp_protocol: Option<String>,
    /// Extra headers, `key=value,key2=value2` (overrides OTEL_EXPORTER_OTLP_HEADERS).
    #[arg(long, value_name = "HEADERS")]
    pub otlp_headers: Option<String>,
    /// Terminal output format when no OTLP endpoint is configured.
    #[arg(long, value_enum)]
    pub output: Option<OutputFormat>,
    /// Payload bytes copied per syscall (1..=8192; default 2048).
    #[arg(long, value_name = "BYTES")]
    pub capture_bytes: Option<u32>,
    /// Kernel ring buffer size in MiB (1..=1024; default 16).
    #[arg(long, value_name = "MIB")]
    pub ring_buffer_mib: Option<u32>,
    /// Spans buffered for export before new ones are dropped (and counted; default 32768).
    #[arg(long, value_name = "SPANS")]
    pub queue_size: Option<usize>,
    /// Export query strings as sent instead of redacting their values.
    #[arg(long)]
    pub keep_query_strings: bool,
    /// How long finished spans wait before export, so that a guessed parent can still be
    /// corrected (0..=10000 ms; default 500).
    #[arg(long, value_name = "MS")]
    pub trace_wait_ms: Option<u64>,
    /// Do not attach the OpenSSL uprobes (TLS traffic is then not decoded).
    #[arg(long)]
    pub no_tls: bool,
    /// Export database statements with their literal values instead of `?`.
    #[arg(long)]
    pub keep_query_literals: bool,
    /// `yield`: the agent's busy threads run at normal priority and step aside for other
    /// programs every few records, except while falling behind (default); `idle`: they use
    /// idle CPU only, and compete at normal priority while falling behind; `normal`: always
    /// normal priority, never stepping aside.
    #[arg(long, value_enum, value_name = "MODE")]
    pub cpu_priority: Option<CpuPriority>,
    /// `auto`: the socket probes run as raw tracepoints when the kernel's BTF locates the
    /// socket fields they read, else on the tracepoints' records (default); `records`: always
    /// the records.
    #[arg(long, value_enum, value_name = "MODE")]
    pub socket_probes: Option<SocketProbes>,
    /// Write counters (events, losses, spans) as JSON to this file at exit.
    #[arg(long, value_name = "PATH")]
    pub stats_file: Option<PathBuf>,
    /// TOML configuration file; flags given on the command line win over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The configuration file. Keys mirror the long flags, with underscores.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub pid: Vec<u32>,
    #[serde(default)]
    pub exe: Vec<String>,
    #[serde(default)]
    pub port: Vec<Port>,
    pub otlp_endpoint: Option<String>,
    pub otlp_traces_endpoint: Option<String>,
    pub otlp_protocol: Option<Protocol>,
    pub otlp_headers: Option<String>,
    pub output: Option<OutputFormat>,
    pub capture_bytes: Option<CaptureBytes>,
    pub ring_buffer_mib: Option<RingBufferMib>,
    pub queue_size: Option<QueueSize>,
    pub trace_wait_ms: Option<TraceWaitMs>,
    pub keep_query_strings: Option<bool>,
    pub keep_query_literals: Option<bool>,
    /// Attach the OpenSSL uprobes (default true).
    pub tls: Option<bool>,
    pub cpu_priority: Option<CpuPriority>,
    pub socket_probes: Option<SocketProbes>,
    pub stats_file: Option<PathBuf>,
}

/// The settings `periscope run` works with, after flags, file and defaults are merged.
#[derive(Debug)]
pub struct RunConfig {
    pub selection: Selection,
    pub otlp: OtlpOptions,
    pub output: OutputFormat,
    pub capture_bytes: u32,
    pub ring_buffer_bytes: u32,
    pub queue_size: usize,
    pub trace_wait: Duration,
    pub keep_query_strings: bool,
    pub keep_query_literals: bool,
    pub tls: bool,
    pub cpu_priority: CpuPriority,
    pub socket_probes: SocketProbes,
    pub stats_file: Option<PathBuf>,
}

macro_rules! bounded_number {
    ($name:ident, $ty:ty, $min:expr, $max:expr, $what:literal) => {
        #[derive(Clone, Copy, Debug)]
        pub struct $name(pub $ty);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let v = <$ty>::deserialize(d)?;
                check_range(v as u64, $min as u64, $max as u64, $what)
                    .map(|_| Self(v))
                    .map_err(D::Error::custom)
            }
        }
    };
}

bounded_number!(Port, u16, 1, u16::MAX, "port");
bounded_number!(CaptureBytes, u32, 1, MAX_CAPTURE, "capture_bytes");
bounded_number!(RingBufferMib, u32, 1, 1024, "ring_buffer_mib");
bounded_number!(QueueSize, usize, 1, 1_000_000, "queue_size");
bounded_number!(TraceWaitMs, u64, 0, 10_000, "trace_wait_ms");

/// An OTLP protocol name, checked where it is read.
#[derive(Clone, Debug)]
pub struct Protocol(pub String);

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = String::deserialize(d)?;
        check_protocol(&v).map_err(D::Error::custom)?;
        Ok(Self(v))
    }
}

fn check_protocol(v: &str) -> Result<(), String> {
    match v {
        "grpc" | "http/protobuf" => Ok(()),
        other => Err(format!(
            "otlp_protocol `{other}` is not supported: use `grpc` or `http/protobuf`"
        )),
    }
}

/// A list given on the command line replaces the file's list.
fn pick<T>(flag: Vec<T>, file: Vec<T>) -> Vec<T> {
    if flag.is_empty() { file } else { flag }
}

fn check_range(v: u64, min: u64, max: u64, what: &str) -> Result<(), String> {
    if v < min || v > max {
        Err(format!("{what} must be between {min} and {max}, got {v}"))
    } else {
        Ok(())
    }
}

impl FileConfig {
    pub fn parse(text: &str, path: &std::path::Path) -> anyhow::Result<Self> {
        // toml's error names the line and column at fault and quotes it.
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }
}

impl RunArgs {
    /// Merge flags over the configuration file over defaults, validating every value.
    pub fn resolve(self) -> anyhow::Result<RunConfig> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading configuration file {}", path.display()))?;
                FileConfig::parse(&text, path)?
            }
            None => FileConfig::default(),
        };
        let flag_err = |flag: &str, msg: String| anyhow::anyhow!("--{flag}: {msg}");
        if let Some(v) = self.capture_bytes {
            check_range(v as u64, 1, MAX_CAPTURE as u64, "value")
                .map_err(|m| flag_err("capture-bytes", m))?;
        }
        if let Some(v) = self.ring_buffer_mib {
            check_range(v as u64, 1, 1024, "value").map_err(|m| flag_err("ring-buffer-mib", m))?;
        }
        if let Some(v) = self.queue_size {
            check_range(v as u64, 1, 1_000_000, "value").map_err(|m| flag_err("queue-size", m))?;
        }
        if let Some(v) = self.trace_wait_ms {
            check_range(v, 0, 10_000, "value").map_err(|m| flag_err("trace-wait-ms", m))?;
        }
        if let Some(p) = &self.otlp_protocol {
            check_protocol(p).map_err(|m| flag_err("otlp-protocol", m))?;
        }
        Ok(RunConfig {
            selection: Selection {
                pids: pick(self.pids, file.pid),
                exes: pick(self.exes, file.exe),
                ports: pick(self.ports, file.port.into_iter().map(|p| p.0).collect()),
            },
            otlp: OtlpOptions {
                endpoint: self.otlp_endpoint.or(file.otlp_endpoint),
                traces_endpoint: self.otlp_traces_endpoint.or(file.otlp_traces_endpoint),
                protocol: self.otlp_protocol.or(file.otlp_protocol.map(|p| p.0)),
                headers: self.otlp_headers.or(file.otlp_headers),
                timeout: None,
            },
            output: self.output.or(file.output).unwrap_or(OutputFormat::Tree),
            capture_bytes: self
                .capture_bytes
                .or(file.capture_bytes.map(|v| v.0))
                .unwrap_or(DEFAULT_CAPTURE),
            ring_buffer_bytes: self
                .ring_buffer_mib
                .or(file.ring_buffer_mib.map(|v| v.0))
                .unwrap_or(16)
                * 1024
                * 1024,
            queue_size: self
                .queue_size
                .or(file.queue_size.map(|v| v.0))
                .unwrap_or(32768),
            trace_wait: Duration::from_millis(
                self.trace_wait_ms
                    .or(file.trace_wait_ms.map(|v| v.0))
                    .unwrap_or(500),
            ),
            keep_query_strings: self.keep_query_strings || file.keep_query_strings.unwrap_or(false),
            keep_query_literals: self.keep_query_literals
                || file.keep_query_literals.unwrap_or(false),
            tls: !self.no_tls && file.tls.unwrap_or(true),
            cpu_priority: self.cpu_priority.or(file.cpu_priority).unwrap_or_default(),
            socket_probes: self
                .socket_probes
                .or(file.socket_probes)
                .unwrap_or_default(),
            stats_file: self.stats_file.or(file.stats_file),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn socket_probes_from_file_or_flag() {
        let file = FileConfig::parse("socket_probes = \"records\"\n", Path::new("p.toml")).unwrap();
        assert_eq!(file.socket_probes, Some(SocketProbes::Records));
        let err = FileConfig::parse(
            "exe = []\nsocket_probes = \"rawest\"\n",
            Path::new("p.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 2") && err.contains("records"), "{err}");
        assert_eq!(
            RunArgs::default().resolve().unwrap().socket_probes,
            SocketProbes::Auto
        );
    }

    #[test]
    fn cpu_priority_from_file_or_flag() {
        let file = FileConfig::parse("cpu_priority = \"normal\"\n", Path::new("p.toml")).unwrap();
        assert_eq!(file.cpu_priority, Some(CpuPriority::Normal));
        let file = FileConfig::parse("cpu_priority = \"idle\"\n", Path::new("p.toml")).unwrap();
        assert_eq!(file.cpu_priority, Some(CpuPriority::Idle));
        let err = FileConfig::parse("exe = []\ncpu_priority = \"low\"\n", Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("yield"), "{err}");
        assert_eq!(
            RunArgs::default().resolve().unwrap().cpu_priority,
            CpuPriority::Yield
        );
    }

    #[test]
    fn file_errors_name_the_line() {
        let text = "exe = [\"nginx\"]\ncapture_bytes = 999999\n";
        let err = FileConfig::parse(text, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("capture_bytes must be between"), "{err}");

        let err = FileConfig::parse("exe = [\"a\"]\nbogus = 1\n", Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("bogus"), "{err}");

        let err = FileConfig::parse("otlp_protocol = \"http/json\"\n", Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 1") && err.contains("not supported"),
            "{err}"
        );
    }

    #[test]
    fn flags_win_over_file() {
        let dir = std::env::temp_dir().join(format!("periscope-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "exe = [\"nginx\"]\ncapture_bytes = 512\noutput = \"json\"\n",
        )
        .unwrap();
        let args = RunArgs {
            capture_bytes: Some(4096),
            config: Some(path),
            ..Default::default()
        };
        let cfg = args.resolve().unwrap();
        assert_eq!(cfg.capture_bytes, 4096);
        assert_eq!(cfg.selection.exes, vec!["nginx".to_string()]);
        assert_eq!(cfg.output, OutputFormat::Json);
        let bad = RunArgs {
            capture_bytes: Some(0),
            ..Default::default()
        };
        assert!(
            bad.resolve()
                .unwrap_err()
                .to_string()
                .contains("--capture-bytes")
        );
    }
}
