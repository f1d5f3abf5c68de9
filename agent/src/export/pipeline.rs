//! The export pipeline: a bounded queue in front of one exporter thread.
//!
//! [`ExportPipeline::submit`] never blocks. Spans are handed to the thread in runs (at
//! `max_batch`, or when the producer calls [`ExportPipeline::hand_over`] at the end of its
//! round), not one by one: a channel send and a wake-up per span cost more than the rest of
//! the queueing. When the queue is full the spans are dropped and counted. The thread sends a
//! batch when `max_batch` spans are waiting or every `batch_interval` (an idle tick exports an
//! empty batch, so time-based exporters get to act). A dead backend therefore costs bounded
//! memory and shows up as counted drops.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::SpanExporter;
use crate::cpu_priority::ExportStepAside;
use crate::spans::model::SpanRecord;

/// Largest batch while the export thread steps aside: some 0.15 ms of encoding.
const STEPPING_ASIDE_BATCH: usize = 512;

/// How often, at most, a failing exporter is reported in the log after the first failure.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
pub struct PipelineOptions {
    /// Spans that may wait in the queue; more are dropped.
    pub queue_capacity: usize,
    /// Export as soon as this many spans are waiting.
    pub max_batch: usize,
    /// Export whatever is waiting at least this often.
    pub batch_interval: Duration,
    /// Given to the exporter's `flush` and `shutdown`.
    pub export_timeout: Duration,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            queue_capacity: 8192,
            max_batch: 512,
            batch_interval: Duration::from_secs(1),
            export_timeout: Duration::from_secs(10),
        }
    }
}

/// Live counters, shared with whoever wants to report them.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans offered to `submit`, dropped or not.
    pub submitted: AtomicU64,
    /// Spans the exporter accepted.
    pub exported: AtomicU64,
    /// Spans dropped because the queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Spans lost because their export failed (or shutdown ran out of time).
    pub dropped_export_failed: AtomicU64,
    /// Failed export calls.
    pub export_errors: AtomicU64,
}

/// A point-in-time copy of [`ExportStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExportStatsSnapshot {
    pub submitted: u64,
    pub exported: u64,
    pub dropped_queue_full: u64,
    pub dropped_export_failed: u64,
    pub export_errors: u64,
}

impl ExportStats {
    pub fn snapshot(&self) -> ExportStatsSnapshot {
        ExportStatsSnapshot {
            submitted: self.submitted.load(Ordering::Relaxed),
            exported: self.exported.load(Ordering::Relaxed),
            dropped_queue_full: self.dropped_queue_full.load(Ordering::Relaxed),
            dropped_export_failed: self.dropped_export_failed.load(Ordering::Relaxed),
            export_errors: self.export_errors.load(Ordering::Relaxed),
        }
    }
}

pub struct ExportPipeline {
    tx: Option<Sender<Vec<SpanRecord>>>,
    /// Spans submitted but not yet handed over.
    pending: Vec<SpanRecord>,
    /// Spans handed over that the thread has not taken yet: the queue the capacity bounds.
    queued: Arc<AtomicUsize>,
    queue_capacity: usize,
    max_batch: usize,
    stats: Arc<ExportStats>,
    /// Set by `shutdown`: past it the thread stops exporting and counts what is left as lost.
    deadline: Arc<Mutex<Option<Instant>>>,
    done_rx: Receiver<()>,
    thread: Option<JoinHandle<()>>,
    /// The export thread's id, and a counter it advances each time round its loop.
    thread_id: i32,
    heartbeat: Arc<AtomicU64>,
}

impl ExportPipeline {
    pub fn start(exporter: Box<dyn SpanExporter>, opts: PipelineOptions) -> ExportPipeline {
        Self::start_stepping_aside(exporter, opts, None)
    }

    /// As `start`, with the export thread offering its core before each batch while
    /// `step_aside` says so (see `cpu_priority`).
    pub fn start_stepping_aside(
        exporter: Box<dyn SpanExporter>,
        opts: PipelineOptions,
        step_aside: Option<ExportStepAside>,
    ) -> ExportPipeline {
        let opts = PipelineOptions {
            queue_capacity: opts.queue_capacity.max(1),
            max_batch: opts.max_batch.max(1),
            batch_interval: opts.batch_interval.max(Duration::from_millis(1)),
            export_timeout: opts.export_timeout,
        };
        let (tx, rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let stats = Arc::new(ExportStats::default());
        let deadline = Arc::new(Mutex::new(None));
        let queued = Arc::new(AtomicUsize::new(0));
        let heartbeat = Arc::new(AtomicU64::new(0));
        let (tid_tx, tid_rx) = mpsc::sync_channel(1);
        let worker = Worker {
            exporter,
            opts,
            queued: queued.clone(),
            stats: stats.clone(),
            deadline: deadline.clone(),
            errors: ErrorLog::default(),
            heartbeat: heartbeat.clone(),
            step_aside,
        };
        let thread = std::thread::Builder::new()
            .name("periscope-export".into())
            .spawn(move || {
                worker.run(rx, tid_tx);
                let _ = done_tx.send(());
            })
            .expect("spawning the export thread");
        let thread_id = tid_rx.recv().unwrap_or(0);
        ExportPipeline {
            tx: Some(tx),
            pending: Vec::new(),
            queued,
            queue_capacity: opts.queue_capacity,
            max_batch: opts.max_batch,
            stats,
            deadline,
            done_rx,
            thread: Some(thread),
            thread_id,
            heartbeat,
        }
    }

    /// The export thread's id and its loop counter (see `cpu_priority`).
    pub fn worker(&self) -> (i32, Arc<AtomicU64>) {
        (self.thread_id, self.heartbeat.clone())
    }

    /// How full the queue is, as a share of its capacity (0 to 1), readable from any thread.
    pub fn backlog_gauge(&self) -> impl Fn() -> f64 + Send + 'static {
        let queued = self.queued.clone();
        let capacity = self.queue_capacity as f64;
        move || queued.load(Ordering::Relaxed) as f64 / capacity
    }

    /// Queue one span; never blocks. It reaches the thread with the next hand-over.
    pub fn submit(&mut self, span: SpanRecord) {
        self.stats.submitted.fetch_add(1, Ordering::Relaxed);
        self.pending.push(span);
        if self.pending.len() >= self.max_batch {
            self.hand_over();
        }
    }

    /// Give the thread every span submitted so far; never blocks. What does not fit in the
    /// queue is dropped and counted.
    pub fn hand_over(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let room = self
            .queue_capacity
            .saturating_sub(self.queued.load(Ordering::Acquire));
        if self.pending.len() > room {
            let dropped = self.pending.len() - room;
            self.pending.truncate(room);
            self.stats
                .dropped_queue_full
                .fetch_add(dropped as u64, Ordering::Relaxed);
        }
        let n = self.pending.len();
        if n == 0 {
            return;
        }
        // The next run is sized like this one: under steady load it never regrows, and a queue
        // of short runs does not hold a full batch's worth of memory each.
        let next = Vec::with_capacity(n.next_power_of_two().min(self.max_batch));
        let run = std::mem::replace(&mut self.pending, next);
        self.queued.fetch_add(n, Ordering::AcqRel);
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(run).is_ok());
        if !sent {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            self.stats
                .dropped_queue_full
                .fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    pub fn stats(&self) -> Arc<ExportStats> {
        self.stats.clone()
    }

    /// Export what is queued, shut the exporter down and stop the thread, all within `timeout`.
    /// Spans that could not be exported in time are counted as `dropped_export_failed`. If the
    /// exporter is stuck past the timeout the thread is left behind (it holds no locks anyone
    /// waits for).
    pub fn shutdown(mut self, timeout: Duration) {
        self.hand_over();
        let start = Instant::now();
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = Some(start + timeout);
        // Closing the channel tells the thread to drain and finish.
        drop(self.tx.take());
        match self.done_rx.recv_timeout(timeout) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                log::warn!(
                    "export pipeline: shutdown did not finish within {timeout:?}; abandoning the exporter"
                );
            }
        }
    }
}

impl Drop for ExportPipeline {
    fn drop(&mut self) {
        // Without an explicit shutdown the thread still drains and stops on its own; don't wait.
        drop(self.tx.take());
    }
}

#[derive(Default)]
struct ErrorLog {
    logged_any: bool,
    last_logged: Option<Instant>,
    since_last: u64,
}

impl ErrorLog {
    fn record(&mut self, err: &anyhow::Error, total: u64, dropped_total: u64) {
        self.since_last += 1;
        let now = Instant::now();
        let due = match self.last_logged {
            None => true,
            Some(t) => now.duration_since(t) >= ERROR_LOG_INTERVAL,
        };
        if !due {
            return;
        }
        if self.logged_any {
            log::warn!(
                "export still failing: {} failures in the last {:?} ({total} in all, {dropped_total} spans lost); latest: {err:#}",
                self.since_last,
                ERROR_LOG_INTERVAL
            );
        } else {
            log::warn!(
                "export failed: {err:#} (further failures are reported at most every {ERROR_LOG_INTERVAL:?})"
            );
        }
        self.logged_any = true;
        self.last_logged = Some(now);
        self.since_last = 0;
    }
}

struct Worker {
    exporter: Box<dyn SpanExporter>,
    opts: PipelineOptions,
    queued: Arc<AtomicUsize>,
    stats: Arc<ExportStats>,
    deadline: Arc<Mutex<Option<Instant>>>,
    errors: ErrorLog,
    heartbeat: Arc<AtomicU64>,
    step_aside: Option<ExportStepAside>,
}

impl Worker {
    fn run(mut self, rx: Receiver<Vec<SpanRecord>>, tid: SyncSender<i32>) {
        let _ = tid.send(crate::cpu_priority::current_tid());
        // No room reserved: the first run handed over becomes the batch (see `take`).
        let mut batch: Vec<SpanRecord> = Vec::new();
        let mut next_tick = Instant::now() + self.opts.batch_interval;
        loop {
            self.heartbeat.fetch_add(1, Ordering::Relaxed);
            let wait = next_tick.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(run) => {
                    self.take(&mut batch, run);
                    // Take what else is already queued before looking at the clock again.
                    let limit = self.batch_limit();
                    while batch.len() < limit
                        && let Ok(run) = rx.try_recv()
                    {
                        self.take(&mut batch, run);
                    }
                    if batch.len() >= limit {
                        self.export(&mut batch);
                    }
                    if Instant::now() >= next_tick {
                        if !batch.is_empty() {
                            self.export(&mut batch);
                        }
                        next_tick = Instant::now() + self.opts.batch_interval;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    // Idle or not, the exporter hears from us every interval.
                    self.export(&mut batch);
                    next_tick = Instant::now() + self.opts.batch_interval;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // The queue is drained (the channel reports Disconnected only once empty).
        if !batch.is_empty() {
            self.export(&mut batch);
        }
        let remaining = self.remaining().unwrap_or(self.opts.export_timeout);
        let budget = remaining.min(self.opts.export_timeout);
        if let Err(e) = self.exporter.flush(budget) {
            log::warn!("export pipeline: flush at shutdown failed: {e:#}");
        }
        let budget = self
            .remaining()
            .unwrap_or(self.opts.export_timeout)
            .min(self.opts.export_timeout);
        if let Err(e) = self.exporter.shutdown(budget) {
            log::warn!("export pipeline: exporter shutdown failed: {e:#}");
        }
    }

    /// The batch size that triggers an export. Stepping aside, batches stay small, since the
    /// thread offers its core only between them; catching up, they grow to `max_batch`, since
    /// each waits for the backend's answer.
    fn batch_limit(&self) -> usize {
        match &self.step_aside {
            Some(step_aside) if step_aside.is_active() => {
                STEPPING_ASIDE_BATCH.min(self.opts.max_batch)
            }
            _ => self.opts.max_batch,
        }
    }

    /// Move a handed-over run into the batch, freeing its room in the queue.
    fn take(&self, batch: &mut Vec<SpanRecord>, mut run: Vec<SpanRecord>) {
        self.queued.fetch_sub(run.len(), Ordering::AcqRel);
        if batch.is_empty() {
            *batch = run;
        } else {
            batch.append(&mut run);
        }
    }

    /// Time left before the shutdown deadline; `None` while not shutting down.
    fn remaining(&self) -> Option<Duration> {
        let deadline = *self.deadline.lock().unwrap_or_else(|e| e.into_inner());
        deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    fn export(&mut self, batch: &mut Vec<SpanRecord>) {
        let n = batch.len() as u64;
        if self.remaining().is_some_and(|r| r.is_zero()) {
            // Shutting down and out of time: count the rest as lost instead of trying.
            self.stats
                .dropped_export_failed
                .fetch_add(n, Ordering::Relaxed);
            batch.clear();
            return;
        }
        let spans = std::mem::take(batch);
        if let Some(step_aside) = &self.step_aside {
            step_aside.offer();
        }
        // A panicking exporter costs this batch, not the pipeline.
        let exporter = &mut self.exporter;
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| exporter.export(spans)))
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the exporter panicked")));
        match result {
            Ok(()) => {
                self.stats.exported.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                let errors = self.stats.export_errors.fetch_add(1, Ordering::Relaxed) + 1;
                let lost = self
                    .stats
                    .dropped_export_failed
                    .fetch_add(n, Ordering::Relaxed)
                    + n;
                self.errors.record(&e, errors, lost);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::cpu_priority::StepAside;
    use crate::spans::model::{ProcessResource, SpanKind, SpanStatus};

    /// What the test exporter saw.
    #[derive(Default)]
    struct Seen {
        batches: Mutex<Vec<Vec<u64>>>,
        flushed: AtomicBool,
        shut_down: AtomicBool,
    }

    struct TestExporter {
        seen: Arc<Seen>,
        fail: bool,
        delay: Duration,
    }

    impl SpanExporter for TestExporter {
        fn export(&mut self, batch: Vec<SpanRecord>) -> anyhow::Result<()> {
            std::thread::sleep(self.delay);
            let ids = batch
                .iter()
                .map(|s| u64::from_be_bytes(s.span_id))
                .collect();
            self.seen.batches.lock().unwrap().push(ids);
            if self.fail {
                anyhow::bail!("backend down");
            }
            Ok(())
        }
        fn flush(&mut self, _timeout: Duration) -> anyhow::Result<()> {
            self.seen.flushed.store(true, Ordering::SeqCst);
            Ok(())
        }
        fn shutdown(&mut self, _timeout: Duration) -> anyhow::Result<()> {
            self.seen.shut_down.store(true, Ordering::SeqCst);
            Ok(())
        }
    }

    fn exporter(fail: bool, delay: Duration) -> (Box<dyn SpanExporter>, Arc<Seen>) {
        let seen = Arc::new(Seen::default());
        (
            Box::new(TestExporter {
                seen: seen.clone(),
                fail,
                delay,
            }),
            seen,
        )
    }

    fn span(id: u64) -> SpanRecord {
        SpanRecord {
            trace_id: [1; 16],
            span_id: id.to_be_bytes(),
            parent_span_id: [0; 8],
            parent_is_remote: false,
            trace_flags: 1,
            trace_state: None,
            name: "GET /".into(),
            kind: SpanKind::Server,
            start: UNIX_EPOCH,
            end: UNIX_EPOCH,
            attributes: vec![],
            status: SpanStatus::Unset,
            resource: Arc::new(ProcessResource {
                service_name: "s".into(),
                pid: 1,
                attributes: vec![],
            }),
        }
    }

    fn opts(cap: usize, max_batch: usize, interval_ms: u64) -> PipelineOptions {
        PipelineOptions {
            queue_capacity: cap,
            max_batch,
            batch_interval: Duration::from_millis(interval_ms),
            export_timeout: Duration::from_secs(1),
        }
    }

    fn non_empty(seen: &Seen) -> Vec<Vec<u64>> {
        seen.batches
            .lock()
            .unwrap()
            .iter()
            .filter(|b| !b.is_empty())
            .cloned()
            .collect()
    }

    /// Wait (up to 5 s) until the pipeline has exported `n` spans.
    fn wait_exported(p: &ExportPipeline, n: u64) {
        let t0 = Instant::now();
        while p.stats().snapshot().exported < n && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn batches_by_size_and_exports_everything_in_order() {
        let (exp, seen) = exporter(false, Duration::ZERO);
        // A long interval: only size triggers batches until shutdown.
        let mut p = ExportPipeline::start(exp, opts(100, 4, 60_000));
        for i in 0..10 {
            p.submit(span(i));
        }
        let stats = p.stats();
        wait_exported(&p, 8);
        assert_eq!(non_empty(&seen), vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
        p.shutdown(Duration::from_secs(5));
        assert_eq!(
            non_empty(&seen),
            vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]
        );
        assert!(seen.flushed.load(Ordering::SeqCst));
        assert!(seen.shut_down.load(Ordering::SeqCst));
        let s = stats.snapshot();
        assert_eq!(s.submitted, 10);
        assert_eq!(s.exported, 10);
        assert_eq!(s.dropped_queue_full + s.dropped_export_failed, 0);
    }

    #[test]
    fn batches_stay_small_while_stepping_aside_and_grow_while_catching_up() {
        let (exp, seen) = exporter(false, Duration::ZERO);
        let shared = ExportStepAside::new();
        let behind = Arc::new(AtomicBool::new(false));
        let gauge = behind.clone();
        let mut step_aside = StepAside::new(
            1,
            shared.clone(),
            Box::new(move || {
                if gauge.load(Ordering::Relaxed) {
                    1.0
                } else {
                    0.0
                }
            }),
        );
        let max_batch = STEPPING_ASIDE_BATCH * 2;
        let mut p = ExportPipeline::start_stepping_aside(
            exp,
            opts(10_000, max_batch, 60_000),
            Some(shared),
        );
        for i in 0..STEPPING_ASIDE_BATCH as u64 {
            p.submit(span(i));
        }
        p.hand_over();
        wait_exported(&p, STEPPING_ASIDE_BATCH as u64);
        behind.store(true, Ordering::Relaxed);
        assert!(!step_aside.review(), "catching up");
        for i in 0..max_batch as u64 {
            p.submit(span(1000 + i));
        }
        p.hand_over();
        wait_exported(&p, (STEPPING_ASIDE_BATCH + max_batch) as u64);
        let sizes: Vec<usize> = non_empty(&seen).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![STEPPING_ASIDE_BATCH, max_batch]);
        p.shutdown(Duration::from_secs(5));
    }

    #[test]
    fn interval_sends_partial_batches_and_idle_ticks() {
        let (exp, seen) = exporter(false, Duration::ZERO);
        let mut p = ExportPipeline::start(exp, opts(100, 1000, 20));
        p.submit(span(1));
        p.submit(span(2));
        p.hand_over();
        wait_exported(&p, 2);
        assert_eq!(p.stats().snapshot().exported, 2);
        // Idle ticks keep calling export with empty batches.
        std::thread::sleep(Duration::from_millis(100));
        let empties = seen
            .batches
            .lock()
            .unwrap()
            .iter()
            .filter(|b| b.is_empty())
            .count();
        assert!(empties >= 2, "only {empties} idle ticks");
        p.shutdown(Duration::from_secs(5));
    }

    #[test]
    fn full_queue_drops_without_blocking() {
        // A slow exporter and a tiny queue.
        let (exp, _seen) = exporter(false, Duration::from_millis(200));
        let mut p = ExportPipeline::start(exp, opts(4, 2, 60_000));
        let stats = p.stats();
        let t0 = Instant::now();
        for i in 0..1000 {
            p.submit(span(i));
        }
        assert!(t0.elapsed() < Duration::from_millis(150), "submit blocked");
        let s = stats.snapshot();
        assert_eq!(s.submitted, 1000);
        // At most the queue plus one batch in the thread's hands got through.
        assert!(s.dropped_queue_full >= 1000 - 4 - 2, "{s:?}");
        p.shutdown(Duration::from_secs(5));
        let s = stats.snapshot();
        assert_eq!(
            s.exported + s.dropped_queue_full + s.dropped_export_failed,
            1000,
            "{s:?}"
        );
    }

    #[test]
    fn failed_exports_are_counted() {
        let (exp, seen) = exporter(true, Duration::ZERO);
        let mut p = ExportPipeline::start(exp, opts(100, 3, 60_000));
        let stats = p.stats();
        for i in 0..7 {
            p.submit(span(i));
        }
        p.shutdown(Duration::from_secs(5));
        let s = stats.snapshot();
        assert_eq!(s.exported, 0);
        assert_eq!(s.dropped_export_failed, 7);
        assert_eq!(s.export_errors, 3);
        assert_eq!(non_empty(&seen).len(), 3);
    }

    #[test]
    fn shutdown_is_bounded_by_its_timeout() {
        // Every export takes 300 ms; 20 batches would take 6 s.
        let (exp, _seen) = exporter(false, Duration::from_millis(300));
        let mut p = ExportPipeline::start(exp, opts(100, 1, 60_000));
        let stats = p.stats();
        for i in 0..20 {
            p.submit(span(i));
        }
        let t0 = Instant::now();
        p.shutdown(Duration::from_millis(500));
        assert!(
            t0.elapsed() < Duration::from_millis(900),
            "{:?}",
            t0.elapsed()
        );
        // The thread finishes soon after, counting what it could not send.
        let t1 = Instant::now();
        loop {
            let s = stats.snapshot();
            if s.exported + s.dropped_export_failed == 20 || t1.elapsed() > Duration::from_secs(3) {
                assert_eq!(s.exported + s.dropped_export_failed, 20, "{s:?}");
                assert!(s.dropped_export_failed > 0, "{s:?}");
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    struct PanickingExporter;
    impl SpanExporter for PanickingExporter {
        fn export(&mut self, batch: Vec<SpanRecord>) -> anyhow::Result<()> {
            if batch.len() == 2 {
                panic!("exporter bug");
            }
            Ok(())
        }
        fn flush(&mut self, _timeout: Duration) -> anyhow::Result<()> {
            Ok(())
        }
        fn shutdown(&mut self, _timeout: Duration) -> anyhow::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_panicking_exporter_loses_a_batch_not_the_pipeline() {
        let mut p = ExportPipeline::start(Box::new(PanickingExporter), opts(100, 2, 60_000));
        let stats = p.stats();
        for i in 0..3 {
            p.submit(span(i));
        }
        p.shutdown(Duration::from_secs(5));
        let s = stats.snapshot();
        assert_eq!(s.dropped_export_failed, 2, "{s:?}");
        assert_eq!(s.export_errors, 1, "{s:?}");
        assert_eq!(s.exported, 1, "{s:?}");
    }

    #[test]
    fn snapshot_serializes() {
        let s = ExportStats::default();
        s.submitted.store(3, Ordering::Relaxed);
        let json = serde_json::to_value(s.snapshot()).unwrap();
        assert_eq!(json["submitted"], 3);
        assert_eq!(json["dropped_queue_full"], 0);
    }
}
