//! `periscope run`: wire capture → protocols → spans → export, until SIGINT or SIGTERM.

use std::{
    io::Write as _,
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::anyhow;
use serde::Serialize;

use crate::{
    capture::{
        events::{KernelEvent, decode},
        probes::{AttachedSocketProbes, KernelCounts, ProbeOptions, Probes, ring_capacity},
        processes::{ProcessSelector, SelectionStats},
        ring_backlog::RingBacklog,
        self_traffic::SelfTraffic,
        streams::{Connections, Finished, StreamOutput, StreamStats},
        tls::TlsProbes,
    },
    config::{OutputFormat, RunConfig},
    cpu_priority::{
        CpuPriority, ExportStepAside, Governor, GovernorStats, Managed, RECORDS_BETWEEN_YIELDS,
        SHORT_SLICE, StepAside, current_tid, set_time_slice,
    },
    export::{
        SpanExporter,
        otlp::{OtlpExporter, OtlpSettings},
        pipeline::{ExportPipeline, ExportStatsSnapshot, PipelineOptions},
        terminal::{TerminalExporter, TerminalFormat},
    },
    spans::{
        SpanFactory, SpanOptions,
        assembly::AssemblyStats,
        clock::monotonic_now_ns,
        db::DbOptions,
        hold::{HoldStats, SpanHold},
        http::HttpOptions,
    },
};

/// Bound on concurrently tracked connections (each holds a decoder).
const MAX_CONNECTIONS: usize = 65536;
/// How long a trace may stay quiet before the terminal view prints it.
const TREE_QUIET_PERIOD: Duration = Duration::from_millis(1500);
/// The kernel wakes the agent only when records pile up (see the kernel's `wakeup_flags`);
/// otherwise the agent looks this often.
const POLL_INTERVAL_MS: i32 = 20;
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(1);
/// How often traced processes' memory maps are searched for newly loaded libssl.
const TLS_RESCAN_EVERY: Duration = Duration::from_secs(10);
/// After an exec, how long to wait for the dynamic loader before looking.
const TLS_EXEC_DELAY: Duration = Duration::from_millis(100);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Serialize)]
struct SpanCounts {
    created: u64,
}

#[derive(Serialize)]
struct Stats {
    kernel: KernelCounts,
    streams: StreamStats,
    spans: SpanCounts,
    assembly: AssemblyStats,
    hold: HoldStats,
    export: ExportStatsSnapshot,
    /// How often the agent had to compete for the CPU (absent with `--cpu-priority normal`).
    cpu_priority: Option<GovernorStats>,
    /// The kernel's table of selected processes (absent when every process is traced).
    selection: Option<SelectionStats>,
    /// How the data path was attached.
    socket_probes: AttachedSocketProbes,
}

/// No trip round the capture loop for this long means its thread is not getting the CPU.
const CAPTURE_STALL: Duration = Duration::from_secs(1);
/// The export thread goes round at least every batch interval (500 ms).
const EXPORT_STALL: Duration = Duration::from_secs(2);

pub fn run(cfg: RunConfig) -> anyhow::Result<()> {
    // First of all: a stop asked for while the programs load is then a clean stop once they
    // are in, not a kill halfway (or, where the shell started us with SIGINT ignored, no stop).
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())?;
    }
    let agent_tgid = std::process::id();
    let otlp =
        OtlpSettings::resolve(&cfg.otlp, &|k| std::env::var(k).ok()).map_err(|e| anyhow!(e))?;
    let (exporter, export_timeout, target): (Box<dyn SpanExporter>, Duration, String) = match &otlp
    {
        Some(settings) => (
            Box::new(OtlpExporter::new(settings)?),
            settings.timeout,
            format!("OTLP {} {}", settings.protocol.as_str(), settings.url),
        ),
        None => {
            let format = match cfg.output {
                OutputFormat::Tree => TerminalFormat::Tree,
                OutputFormat::Json => TerminalFormat::Json,
            };
            let out = Box::new(std::io::stdout());
            (
                Box::new(TerminalExporter::new(format, out, TREE_QUIET_PERIOD)),
                Duration::from_secs(5),
                "the terminal (set OTEL_EXPORTER_OTLP_ENDPOINT to export)".to_owned(),
            )
        }
    };
    let export_step_aside = (cfg.cpu_priority == CpuPriority::Yield).then(ExportStepAside::new);
    let mut pipeline = ExportPipeline::start_stepping_aside(
        exporter,
        PipelineOptions {
            queue_capacity: cfg.queue_size,
            max_batch: 4096,
            batch_interval: Duration::from_millis(500),
            export_timeout,
        },
        export_step_aside.clone(),
    );

    let filtering = cfg.selection.is_filtering();
    let mut probes = Probes::load(&ProbeOptions {
        agent_tgid,
        filter_pids: filtering,
        capture_bytes: cfg.capture_bytes,
        ring_buffer_bytes: cfg.ring_buffer_bytes,
        exe_names: cfg.selection.exes.clone(),
        socket_probes: cfg.socket_probes,
    })?;
    for missing in &probes.missing_optional {
        log::warn!("tracepoint {missing} unavailable: degraded mode");
    }
    let mut ring = probes.take_events()?;
    let counters = probes.take_counters()?;
    let mut socket_caps = probes.take_socket_caps()?;
    let table = if filtering {
        Some(probes.take_traced_pids()?)
    } else {
        None
    };
    let mut selector = ProcessSelector::new(cfg.selection.clone(), agent_tgid, table);
    selector.rescan();
    let mut tls = TlsProbes::new(cfg.tls);
    tls.scan_system(probes.ebpf_mut());
    tls.scan(probes.ebpf_mut(), selector.traced_pids().into_iter());

    let ring_fd = ring.as_raw_fd();
    let capture_heartbeat = Arc::new(AtomicU64::new(0));
    let backlog = || {
        agent_backlog(
            &pipeline,
            RingBacklog::new(ring_fd, u64::from(ring_capacity(cfg.ring_buffer_bytes))),
        )
    };
    let governor = match cfg.cpu_priority {
        CpuPriority::Idle => start_governor(&pipeline, backlog(), capture_heartbeat.clone()),
        CpuPriority::Yield | CpuPriority::Normal => None,
    };
    let mut step_aside = export_step_aside
        .and_then(|shared| start_stepping_aside(shared, backlog(), pipeline.worker().0));

    let scope = if filtering {
        format!("{} selected process(es)", selector.traced_count())
    } else {
        "every process".to_owned()
    };
    eprintln!("periscope: tracing {scope}; spans go to {target}");

    let mut connections = Connections::new(MAX_CONNECTIONS, SelfTraffic::new());
    let mut factory = SpanFactory::new(SpanOptions {
        http: HttpOptions {
            keep_query_strings: cfg.keep_query_strings,
        },
        db: DbOptions {
            keep_literals: cfg.keep_query_literals,
        },
    });
    let mut finished: Vec<Finished> = Vec::new();
    let mut hold = SpanHold::new(cfg.trace_wait, cfg.queue_size);
    let mut last_housekeeping = Instant::now();
    let mut last_tls_scan = Instant::now();
    let mut tls_pending: Vec<(Instant, u32)> = Vec::new();
    // Once stopping, one last pass drains what the ring still holds. The kernel's counts are
    // read before it: every event they count is then in the ring, and becomes a span or a
    // counted loss. (Without it, the last responses of a load that ended just before the stop
    // were counted as delivered and never read.)
    let kernel_counts = loop {
        let stopping = stop.load(Ordering::Relaxed);
        let counts_at_stop = stopping.then(|| counters.read());
        if !stopping {
            capture_heartbeat.fetch_add(1, Ordering::Relaxed);
            wait_readable(ring_fd, POLL_INTERVAL_MS);
        }
        if let Some(step_aside) = &mut step_aside {
            step_aside.review();
        }
        while let Some(record) = ring.next() {
            if let Some(step_aside) = &mut step_aside {
                step_aside.tick();
            }
            match decode(&record) {
                Some(KernelEvent::Data(ev)) => {
                    // Read the process's identity while it is alive: a short-lived client may
                    // be gone by the time its span is built.
                    factory.note_process(ev.tgid);
                    connections.on_data(&ev, &mut finished);
                }
                Some(KernelEvent::Close { tgid, sock, at_ns }) => {
                    connections.on_close(tgid, sock, at_ns, &mut finished)
                }
                Some(KernelEvent::Exec { tgid, comm }) => {
                    factory.on_exec(tgid, comm);
                    selector.on_exec(tgid);
                    if selector.is_traced(tgid) {
                        // Identity now, while the new program surely runs.
                        factory.note_process(tgid);
                        // Its libraries are mapped right after exec: look for a private libssl
                        // soon. Untraced programs are not scanned: probing their libraries
                        // would only make them pay for traps the kernel filter discards.
                        if tls_pending.len() < 4096 {
                            tls_pending.push((Instant::now() + TLS_EXEC_DELAY, tgid));
                        }
                    }
                }
                Some(KernelEvent::Exit { tgid, at_ns }) => {
                    connections.on_process_exit(tgid, at_ns, &mut finished);
                    submit(&mut finished, &mut factory, &mut hold, &mut pipeline);
                    factory.forget_process(tgid);
                    selector.on_exit(tgid);
                }
                Some(KernelEvent::Wake { tgid, waker, wakee }) => {
                    // Spans finished so far must be in the hold before a wake-up can move them.
                    submit(&mut finished, &mut factory, &mut hold, &mut pipeline);
                    if let Some(parent) = factory.serving_on_thread(tgid, wakee) {
                        hold.on_wake(tgid, waker, &parent, Instant::now());
                    }
                }
                None => {}
            }
            if finished.len() >= 256 {
                submit(&mut finished, &mut factory, &mut hold, &mut pipeline);
            }
        }
        for change in connections.take_capture_changes() {
            socket_caps.apply(change);
        }
        submit(&mut finished, &mut factory, &mut hold, &mut pipeline);
        hold.release_due(Instant::now(), &mut |span| pipeline.submit(span));
        pipeline.hand_over();
        if last_housekeeping.elapsed() >= HOUSEKEEPING_EVERY {
            last_housekeeping = Instant::now();
            selector.rescan();
            connections.evict_idle(monotonic_now_ns(), &mut finished);
            factory.evict_stale(monotonic_now_ns());
            connections.refresh_own_sockets();
        }
        if tls_pending
            .first()
            .is_some_and(|(due, _)| *due <= Instant::now())
        {
            let now = Instant::now();
            let due: Vec<u32> = tls_pending
                .iter()
                .filter(|(at, _)| *at <= now)
                .map(|(_, pid)| *pid)
                .collect();
            tls_pending.retain(|(at, _)| *at > now);
            tls.scan(probes.ebpf_mut(), due.into_iter());
        }
        if last_tls_scan.elapsed() >= TLS_RESCAN_EVERY {
            // Libraries loaded later (dlopen) show up here.
            last_tls_scan = Instant::now();
            tls.scan(probes.ebpf_mut(), selector.traced_pids().into_iter());
        }
        if let Some(counts) = counts_at_stop {
            break counts;
        }
    };

    // The final flush runs at normal priority, without stepping aside.
    let cpu_priority = governor
        .map(Governor::stop)
        .or_else(|| step_aside.map(StepAside::stop));
    connections.close_all(monotonic_now_ns(), &mut finished);
    submit(&mut finished, &mut factory, &mut hold, &mut pipeline);
    hold.release_all(&mut |span| pipeline.submit(span));
    let export_stats = pipeline.stats();
    pipeline.shutdown(SHUTDOWN_TIMEOUT);
    let stats = Stats {
        kernel: kernel_counts,
        streams: connections.stats(),
        spans: SpanCounts {
            created: factory.created,
        },
        assembly: factory.assembly_stats(),
        hold: hold.stats.clone(),
        export: export_stats.snapshot(),
        cpu_priority,
        selection: selector
            .kernel_table_entries()
            .map(|entries| SelectionStats {
                kernel_table_entries: entries,
            }),
        socket_probes: probes.socket_probes,
    };
    // Detach every probe before reporting.
    drop(ring);
    drop(probes);
    let json = serde_json::to_string_pretty(&stats)?;
    if let Some(path) = &cfg.stats_file {
        std::fs::write(path, &json)?;
    }
    let lost = stats.kernel.lost_events()
        + stats.export.dropped_queue_full
        + stats.export.dropped_export_failed;
    let _ = writeln!(
        std::io::stderr(),
        "periscope: stopped; {} spans created, {} exported, {} events or spans lost",
        stats.spans.created,
        stats.export.exported,
        lost
    );
    Ok(())
}

/// How far behind the agent is: the fuller share (0 to 1) of the kernel ring and the export
/// queue, as both CPU-priority modes watch it.
type BacklogGauge = Box<dyn Fn() -> f64 + Send>;

fn agent_backlog(
    pipeline: &ExportPipeline,
    ring: std::io::Result<RingBacklog>,
) -> std::io::Result<BacklogGauge> {
    let ring = ring?;
    let queue = pipeline.backlog_gauge();
    Ok(Box::new(move || ring.fill().max(queue())))
}

/// Run on idle CPU (see `cpu_priority`): the capture thread (this one) and the export thread
/// under the governor. Without it (no ring gauge, or the policy cannot be set) the agent runs
/// at normal priority.
fn start_governor(
    pipeline: &ExportPipeline,
    backlog: std::io::Result<BacklogGauge>,
    capture_heartbeat: Arc<AtomicU64>,
) -> Option<Governor> {
    let backlog = match backlog {
        Ok(backlog) => backlog,
        Err(e) => {
            log::warn!("cannot watch the ring buffer's backlog ({e}); running at normal priority");
            return None;
        }
    };
    let (export_tid, export_heartbeat) = pipeline.worker();
    let threads = vec![
        Managed {
            tid: current_tid(),
            heartbeat: capture_heartbeat,
            stall_after: CAPTURE_STALL,
        },
        Managed {
            tid: export_tid,
            heartbeat: export_heartbeat,
            stall_after: EXPORT_STALL,
        },
    ];
    match Governor::start(threads, backlog) {
        Ok(governor) => Some(governor),
        Err(e) => {
            log::warn!("cannot lower the agent's CPU priority ({e}); running at normal priority");
            None
        }
    }
}

/// Step aside (see `cpu_priority`): the capture thread (this one) every few ring records, the
/// export thread before each batch, both watching the backlog and running by short slices.
/// Without a ring gauge they never step aside, since they could not tell when they fall behind.
fn start_stepping_aside(
    shared: ExportStepAside,
    backlog: std::io::Result<BacklogGauge>,
    export_tid: i32,
) -> Option<StepAside> {
    match backlog {
        Ok(backlog) => {
            for tid in [current_tid(), export_tid] {
                match set_time_slice(tid, SHORT_SLICE) {
                    Ok(true) => {}
                    Ok(false) => log::debug!("this kernel has no custom time slices"),
                    Err(e) => log::warn!("cannot shorten thread {tid}'s time slice: {e}"),
                }
            }
            Some(StepAside::new(RECORDS_BETWEEN_YIELDS, shared, backlog))
        }
        Err(e) => {
            shared.stop();
            log::warn!("cannot watch the ring buffer's backlog ({e}); never stepping aside");
            None
        }
    }
}

/// Turn finished exchanges into spans and queue them; never blocks.
fn submit(
    finished: &mut Vec<Finished>,
    factory: &mut SpanFactory,
    hold: &mut SpanHold,
    pipeline: &mut ExportPipeline,
) {
    let now = Instant::now();
    let mut release = |span| pipeline.submit(span);
    for output in finished.drain(..) {
        match output {
            StreamOutput::Started { meta, tid, started } => {
                factory.on_request_start(&meta, tid, &started);
            }
            StreamOutput::Finished {
                meta,
                tid,
                exchange,
            } => {
                if let Some((span, guessed)) = factory.build(&meta, tid, exchange) {
                    let guessed_on = guessed.then_some((meta.tgid, tid));
                    hold.push(span, guessed_on, now, &mut release);
                }
            }
        }
    }
}

/// Sleep until the ring buffer has data or `timeout_ms` passes.
fn wait_readable(fd: i32, timeout_ms: i32) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd we own; EINTR (a signal) simply returns early.
    unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
}
