//! How the agent shares the CPU with the programs it traces.
//!
//! Measured on nginx, the agent's time slices cost the traced server far more throughput than
//! their share of CPU suggests, in two ways. A burst of span building at normal priority
//! displaces the server from a core. Under `SCHED_IDLE` the agent is preempted by every wake-up
//! of a traced program on its core instead, and each such wake-up costs the waker a reschedule
//! interrupt (on a 2-vCPU VM, four times as many as without the agent, and about a microsecond
//! of the server's time per request).
//!
//! So by default (`yield`) the capture and export threads run at normal priority, where a
//! wake-up need not preempt them, and step aside (`sched_yield`) every few records, which
//! costs nothing when no one is waiting and otherwise hands the core over within tens of
//! microseconds. While the agent falls behind (the kernel ring or the export queue half full)
//! they stop stepping aside until caught up, so a saturated host costs latency of spans, not
//! spans.
//!
//! Both threads also ask for the shortest time slice (0.1 ms; EEVDF's custom slices, Linux 6.12).
//! The scheduler's deadlines follow the slice, so a thread with a short one is rarely the task a
//! waking program preempts: with the default slice, one request in twelve of an nginx flood cost
//! a reschedule interrupt, with the short one one in forty, and the capture thread's kernel time
//! per request fell from about 0.5 to 0.15 µs. Older kernels accept the request and ignore it.
//!
//! `idle` keeps the threads under `SCHED_IDLE`, with a governor thread raising them to normal
//! priority while they fall behind or are starved; `normal` leaves them alone.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

/// How often the governor looks.
const TICK: Duration = Duration::from_millis(5);
/// Backlog share (of the ring or the export queue) at which the threads are raised (or stop
/// stepping aside). Half leaves the default 16 MiB ring about 90 ms of a 4 KiB-page nginx flood
/// to catch up in; a quarter raised them twice as often and cost nginx 3 to 4% of its
/// throughput.
const RAISE_AT: f64 = 0.5;
/// ...and below which they yield again.
const YIELD_BELOW: f64 = 0.1;

/// Ring records the capture thread handles between two offers of its core: 64 requests of an
/// nginx flood, some 45 µs of work. Interleaved on nginx's static page (traced share of
/// untraced throughput, runs of four pairs): every 16 records 0.81 and 0.80, every 128 0.83
/// and 0.85, every 256 0.83, every 512 0.80 (one run each). More often, the switches cost more
/// than nginx's shorter waits gain; less often, nginx waits too long.
pub const RECORDS_BETWEEN_YIELDS: u32 = 128;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuPriority {
    /// Normal priority by short time slices, stepping aside every few records; not while falling
    /// behind.
    #[default]
    Yield,
    /// Run on idle CPU; compete at normal priority only while falling behind.
    Idle,
    /// Always normal priority, never stepping aside.
    Normal,
}

/// The capture thread's side of stepping aside: it offers its core every few records, and
/// before each offer looks at the backlog, which decides for the export thread too.
pub struct StepAside {
    shared: ExportStepAside,
    backlog: Box<dyn Fn() -> f64 + Send>,
    every: u32,
    since_last: u32,
    /// Raised: not stepping aside while catching up.
    raising: Raising,
}

impl StepAside {
    /// `shared` is the export thread's side; `backlog` reports the fuller share of the agent's
    /// buffers (0 to 1).
    pub fn new(
        every: u32,
        shared: ExportStepAside,
        backlog: Box<dyn Fn() -> f64 + Send>,
    ) -> StepAside {
        shared.active.store(true, Ordering::Relaxed);
        StepAside {
            shared,
            backlog,
            every: every.max(1),
            since_last: 0,
            raising: Raising::default(),
        }
    }

    /// One record handled: every `every` records, offer the core.
    #[inline]
    pub fn tick(&mut self) {
        self.since_last += 1;
        if self.since_last >= self.every {
            self.since_last = 0;
            if self.review() {
                std::thread::yield_now();
            }
        }
    }

    /// Look at the backlog; true when the threads are to step aside.
    pub fn review(&mut self) -> bool {
        if self.raising.update((self.backlog)(), false) {
            self.shared
                .active
                .store(!self.raising.is_raised(), Ordering::Relaxed);
        }
        !self.raising.is_raised()
    }

    /// Stop stepping aside for good (the final flush must not wait) and report.
    pub fn stop(self) -> GovernorStats {
        self.shared.stop();
        self.raising.finish()
    }
}

/// The export thread's side of stepping aside: an offer of its core before each batch, while
/// the capture thread's `StepAside` says so.
#[derive(Clone, Debug, Default)]
pub struct ExportStepAside {
    active: Arc<AtomicBool>,
}

impl ExportStepAside {
    /// Inactive until a `StepAside` takes it.
    pub fn new() -> ExportStepAside {
        ExportStepAside::default()
    }

    pub fn offer(&self) {
        if self.is_active() {
            std::thread::yield_now();
        }
    }

    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// No more offers.
    pub fn stop(&self) {
        self.active.store(false, Ordering::Relaxed);
    }
}

/// A thread the governor manages.
pub struct Managed {
    pub tid: i32,
    /// Advances each time the thread goes round its loop.
    pub heartbeat: Arc<AtomicU64>,
    /// No heartbeat for this long means the thread is not getting the CPU.
    pub stall_after: Duration,
}

/// How often the agent had to compete for the CPU at full strength.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GovernorStats {
    /// Times the threads were raised: to normal priority (`idle`), or stopped stepping aside
    /// (`yield`)...
    pub raised: u64,
    /// ...of which because a thread had not run its loop for too long (`idle` only).
    pub raised_starved: u64,
    /// Time spent raised, in milliseconds.
    pub raised_ms: u64,
}

/// Whether the threads should be raised next (`idle`: to normal priority; `yield`: no longer
/// stepping aside), given whether they are now, the backlog share and whether one of them is
/// starved. The gap between the two thresholds keeps the policy from flapping.
pub fn should_raise(raised: bool, backlog: f64, starved: bool) -> bool {
    if starved || backlog >= RAISE_AT {
        true
    } else if raised {
        backlog > YIELD_BELOW
    } else {
        false
    }
}

pub struct Governor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<GovernorStats>>,
}

impl Governor {
    /// Put `threads` under `SCHED_IDLE` and start watching them; `backlog` reports the fuller
    /// share of the agent's buffers (0 to 1).
    pub fn start(
        threads: Vec<Managed>,
        backlog: Box<dyn Fn() -> f64 + Send>,
    ) -> io::Result<Governor> {
        // Leaving SCHED_IDLE needs privilege (or a nice limit); find out on a scratch thread
        // rather than strand the agent at idle priority.
        std::thread::spawn(|| {
            let tid = current_tid();
            set_idle(tid, true).and_then(|()| set_idle(tid, false))
        })
        .join()
        .map_err(|_| io::Error::other("the priority probe thread panicked"))??;
        let tids: Vec<i32> = threads.iter().map(|t| t.tid).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        // Spawned first: a thread inherits its creator's policy.
        let thread = std::thread::Builder::new()
            .name("periscope-sched".into())
            .spawn(move || govern(threads, backlog, &thread_stop))?;
        let governor = Governor {
            stop,
            thread: Some(thread),
        };
        for tid in tids {
            if let Err(e) = set_idle(tid, true) {
                governor.stop();
                return Err(e);
            }
        }
        Ok(governor)
    }

    /// Raise the threads for good (the final flush must not wait for idle CPU) and report.
    pub fn stop(mut self) -> GovernorStats {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Governor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn govern(
    threads: Vec<Managed>,
    backlog: Box<dyn Fn() -> f64 + Send>,
    stop: &AtomicBool,
) -> GovernorStats {
    let mut raising = Raising::default();
    // (last heartbeat value, when it last changed) per thread.
    let mut beats: Vec<(u64, Instant)> = threads
        .iter()
        .map(|t| (t.heartbeat.load(Ordering::Relaxed), Instant::now()))
        .collect();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(TICK);
        let now = Instant::now();
        let mut starved = false;
        for (t, (last, since)) in threads.iter().zip(beats.iter_mut()) {
            let beat = t.heartbeat.load(Ordering::Relaxed);
            if beat != *last {
                *last = beat;
                *since = now;
            } else if now.duration_since(*since) >= t.stall_after {
                starved = true;
            }
        }
        if !raising.update(backlog(), starved) {
            continue;
        }
        for t in &threads {
            if let Err(e) = set_idle(t.tid, !raising.is_raised()) {
                log::warn!("changing the scheduling policy of thread {}: {e}", t.tid);
            }
        }
    }
    for t in &threads {
        let _ = set_idle(t.tid, false);
    }
    raising.finish()
}

/// Whether the threads are raised now (see `should_raise`), and the counts of it.
#[derive(Default)]
struct Raising {
    since: Option<Instant>,
    stats: GovernorStats,
}

impl Raising {
    fn is_raised(&self) -> bool {
        self.since.is_some()
    }

    /// Decide again from the backlog share and starvation; true when the decision changed.
    fn update(&mut self, backlog: f64, starved: bool) -> bool {
        let raise = should_raise(self.is_raised(), backlog, starved);
        if raise == self.is_raised() {
            return false;
        }
        if raise {
            self.stats.raised += 1;
            self.stats.raised_starved += u64::from(starved);
            self.since = Some(Instant::now());
        } else if let Some(since) = self.since.take() {
            self.stats.raised_ms += since.elapsed().as_millis() as u64;
        }
        true
    }

    /// The counts, with a raise still in progress counted up to now.
    fn finish(mut self) -> GovernorStats {
        if let Some(since) = self.since.take() {
            self.stats.raised_ms += since.elapsed().as_millis() as u64;
        }
        self.stats
    }
}

/// `SCHED_IDLE` or back to `SCHED_OTHER` for one thread.
fn set_idle(tid: i32, idle: bool) -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    let policy = if idle {
        libc::SCHED_IDLE
    } else {
        libc::SCHED_OTHER
    };
    // SAFETY: plain syscall wrapper; `param` outlives the call.
    if unsafe { libc::sched_setscheduler(tid, policy, &param) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The slice asked for by stepping-aside threads: the shortest the kernel grants.
pub const SHORT_SLICE: Duration = Duration::from_micros(100);

/// `struct sched_attr` (`sched_setattr(2)`), as far as `SCHED_OTHER` uses it.
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    /// For `SCHED_OTHER`, the custom slice in nanoseconds (0: the default).
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

/// Ask for a `slice`-long time slice for thread `tid`, keeping `SCHED_OTHER` and its nice value.
/// Returns whether the kernel now reports that slice: kernels without custom slices accept the
/// request and ignore it.
pub fn set_time_slice(tid: i32, slice: Duration) -> io::Result<bool> {
    // Read first: the nice value is kept as the thread has it.
    let mut attr = sched_attr(tid)?;
    if attr.policy != libc::SCHED_OTHER as u32 {
        return Err(io::Error::other(format!(
            "thread {tid} runs under scheduling policy {}, not SCHED_OTHER",
            attr.policy
        )));
    }
    attr.flags = 0;
    attr.runtime = slice.as_nanos() as u64;
    // SAFETY: the kernel only reads `attr`.
    if unsafe { libc::syscall(libc::SYS_sched_setattr, tid, &raw const attr, 0u32) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(time_slice(tid)? == Some(slice))
}

/// The time slice of thread `tid` as the kernel reports it (`None`: a kernel that reports none).
pub fn time_slice(tid: i32) -> io::Result<Option<Duration>> {
    let runtime = sched_attr(tid)?.runtime;
    Ok((runtime != 0).then(|| Duration::from_nanos(runtime)))
}

fn sched_attr(tid: i32) -> io::Result<SchedAttr> {
    let mut attr = SchedAttr {
        size: size_of::<SchedAttr>() as u32,
        ..SchedAttr::default()
    };
    // SAFETY: the kernel writes at most `size` bytes into `attr`, which outlives the call.
    let got =
        unsafe { libc::syscall(libc::SYS_sched_getattr, tid, &raw mut attr, attr.size, 0u32) };
    if got != 0 {
        return Err(io::Error::last_os_error());
    }
    // The kernel writes back the size it knows; the next call passes ours again.
    attr.size = size_of::<SchedAttr>() as u32;
    Ok(attr)
}

/// The calling thread's id.
pub fn current_tid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raised_when_behind_or_starved_and_yields_only_once_caught_up() {
        assert!(!should_raise(false, 0.0, false));
        assert!(!should_raise(false, 0.4, false), "some backlog is normal");
        assert!(should_raise(false, 0.5, false));
        assert!(should_raise(false, 0.0, true), "a starved thread is raised");
        assert!(should_raise(true, 0.4, false), "raised until caught up");
        assert!(should_raise(true, 0.11, false));
        assert!(!should_raise(true, 0.1, false));
    }

    #[test]
    fn stepping_aside_stops_while_behind_and_resumes_once_caught_up() {
        let backlog = Arc::new(AtomicU64::new(0));
        let gauge = backlog.clone();
        let shared = ExportStepAside::new();
        assert!(!shared.is_active(), "inactive until a StepAside takes it");
        let mut step = StepAside::new(
            4,
            shared.clone(),
            Box::new(move || gauge.load(Ordering::Relaxed) as f64 / 100.0),
        );
        assert!(shared.is_active());
        for _ in 0..8 {
            step.tick();
        }
        assert!(shared.is_active(), "no backlog: stepping aside");
        backlog.store(60, Ordering::Relaxed);
        for _ in 0..3 {
            step.tick();
        }
        assert!(
            shared.is_active(),
            "the backlog is looked at every 4th record"
        );
        step.tick();
        assert!(!shared.is_active(), "half full: catching up");
        backlog.store(30, Ordering::Relaxed);
        assert!(!step.review(), "still catching up above a tenth");
        backlog.store(5, Ordering::Relaxed);
        assert!(step.review());
        assert!(shared.is_active(), "caught up: stepping aside again");
        let stats = step.stop();
        assert_eq!(stats.raised, 1);
        assert_eq!(stats.raised_starved, 0);
        assert!(!shared.is_active(), "the final flush does not step aside");
    }

    #[test]
    fn a_thread_gets_the_short_slice_it_asks_for() {
        let worker = ParkedThread::spawn();
        let tid = worker.tid;
        let default = time_slice(tid).unwrap();
        assert_ne!(default, Some(SHORT_SLICE), "a new thread has the default");
        let granted = set_time_slice(tid, SHORT_SLICE).unwrap();
        if default.is_none() {
            assert!(!granted);
            eprintln!("SKIP: this kernel reports no time slices (Linux 6.12 added custom ones)");
        } else {
            assert!(
                granted,
                "asked for {SHORT_SLICE:?}, have {:?}",
                time_slice(tid)
            );
            assert_eq!(time_slice(tid).unwrap(), Some(SHORT_SLICE));
            assert_eq!(policy_of(tid), libc::SCHED_OTHER, "the policy is kept");
        }
        worker.stop();
    }

    /// A thread that waits, doing nothing, until stopped.
    struct ParkedThread {
        tid: i32,
        quit: std::sync::mpsc::Sender<()>,
        handle: JoinHandle<()>,
    }

    impl ParkedThread {
        fn spawn() -> ParkedThread {
            let (tid_tx, tid_rx) = std::sync::mpsc::channel();
            let (quit, quit_rx) = std::sync::mpsc::channel::<()>();
            let handle = std::thread::spawn(move || {
                tid_tx.send(current_tid()).unwrap();
                let _ = quit_rx.recv();
            });
            let tid = tid_rx.recv().unwrap();
            ParkedThread { tid, quit, handle }
        }

        fn stop(self) {
            self.quit.send(()).unwrap();
            self.handle.join().unwrap();
        }
    }

    /// The policy a thread runs under, from `/proc` (field 41 of its stat line).
    fn policy_of(tid: i32) -> i32 {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
        // Fields from the third on; the policy is the 41st field.
        after_comm.split(' ').nth(38).unwrap().parse().unwrap()
    }

    #[test]
    fn a_thread_that_never_gets_round_its_loop_is_raised() {
        let worker = ParkedThread::spawn();
        let tid = worker.tid;
        let governor = Governor::start(
            vec![Managed {
                tid,
                heartbeat: Arc::new(AtomicU64::new(0)),
                stall_after: Duration::from_millis(50),
            }],
            Box::new(|| 0.0),
        )
        .unwrap();
        assert_eq!(policy_of(tid), libc::SCHED_IDLE);
        let t0 = Instant::now();
        while policy_of(tid) != libc::SCHED_OTHER {
            assert!(t0.elapsed() < Duration::from_secs(5), "never raised");
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(governor.stop().raised >= 1);
        worker.stop();
    }

    #[test]
    fn a_lagging_thread_is_raised_and_yields_again_once_caught_up() {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let quit = Arc::new(AtomicBool::new(false));
        let heartbeat = Arc::new(AtomicU64::new(0));
        let (worker_quit, worker_beat) = (quit.clone(), heartbeat.clone());
        let worker = std::thread::spawn(move || {
            tid_tx.send(current_tid()).unwrap();
            while !worker_quit.load(Ordering::Relaxed) {
                worker_beat.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let tid = tid_rx.recv().unwrap();
        let backlog = Arc::new(AtomicU64::new(0));
        let gauge = backlog.clone();
        let governor = Governor::start(
            vec![Managed {
                tid,
                heartbeat: heartbeat.clone(),
                stall_after: Duration::from_secs(10),
            }],
            Box::new(move || gauge.load(Ordering::Relaxed) as f64 / 100.0),
        )
        .unwrap();
        let wait_for = |policy: i32| {
            let t0 = Instant::now();
            while policy_of(tid) != policy {
                assert!(
                    t0.elapsed() < Duration::from_secs(5),
                    "policy {policy} never set"
                );
                std::thread::sleep(Duration::from_millis(2));
            }
        };
        wait_for(libc::SCHED_IDLE);
        backlog.store(50, Ordering::Relaxed);
        wait_for(libc::SCHED_OTHER);
        backlog.store(1, Ordering::Relaxed);
        wait_for(libc::SCHED_IDLE);
        let stats = governor.stop();
        assert_eq!(
            policy_of(tid),
            libc::SCHED_OTHER,
            "stopping raises the threads for good"
        );
        assert_eq!(stats.raised, 1);
        quit.store(true, Ordering::Relaxed);
        worker.join().unwrap();
    }
}
