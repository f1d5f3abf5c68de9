//! Maps shared by the kernel programs and read or written by userspace.

use agent_common::{CaptureConfig, DataEvent, SockInfo};
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};

/// Written by userspace before load (`EbpfLoader::set_global`).
#[unsafe(no_mangle)]
pub static CONFIG: CaptureConfig = CaptureConfig::zeroed();

/// One field of the configuration, read through a volatile load so the compiler cannot fold in
/// the compile-time zero value. One field, not the whole struct: every program reads a few of
/// them on every event.
macro_rules! config {
    ($($field:ident).+) => {
        // SAFETY: CONFIG is a plain static; the loader patches its bytes before the program runs.
        unsafe { core::ptr::read_volatile(&raw const $crate::maps::CONFIG.$($field).+) }
    };
}
pub(crate) use config;

/// Every record for userspace: data, close, exec, exit. Size set by userspace at load.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;

/// Bytes this CPU has written to the ring since it last looked at the backlog.
#[map]
static WRITTEN_SINCE_CHECK: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Flags for a ring-buffer output of `len` bytes. Userspace is woken when the backlog crosses a
/// band starting at `CONFIG.wakeup_bytes` (or by its own short poll timeout). A wake-up per
/// record would cost the traced programs an interrupt and a context switch each, and frequent
/// small batches keep the agent preempting the traced programs. Only records landing inside the
/// band wake it, so a backlog above it does not re-wake.
///
/// Reading the backlog cost 130 to 170 ns per record (more than copying a small one), so each
/// CPU looks only once per sixteenth of the threshold it wrote, which still lands every CPU in
/// the band.
#[inline(always)]
pub fn wakeup_flags(len: u32) -> u64 {
    let threshold = config!(wakeup_bytes);
    if let Some(written) = WRITTEN_SINCE_CHECK.get_ptr_mut(0) {
        // SAFETY: this CPU's own slot; the kernel does not nest these programs on one CPU.
        unsafe {
            let total = (*written).saturating_add(len);
            if total < threshold / 16 {
                *written = total;
                return BPF_RB_NO_WAKEUP;
            }
            *written = 0;
        }
    }
    let pending = EVENTS.query(BPF_RB_AVAIL_DATA);
    let threshold = threshold as u64;
    if (threshold..threshold + threshold / 4).contains(&pending) {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Syscall number -> its `IoSyscall` value, or `SYSCALL_NOT_DATA`; filled by userspace for this
/// architecture before the data path is attached.
#[map]
pub static SYSCALL_KINDS: Array<u8> = Array::with_max_entries(agent_common::SYSCALL_KINDS_LEN, 0);

/// Processes to trace when `CONFIG.filter_pids` is set: tgid -> 1.
#[map]
pub static TRACED_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(16384, 0);

/// Command names (`comm`, 15 bytes, NUL-padded) selected by `--exe`: a process exec'ing one of
/// them is selected in the kernel at once, before its first syscall, not after userspace reacts.
#[map]
pub static SELECTED_COMMS: HashMap<[u8; 16], u8> = HashMap::with_max_entries(256, 0);

/// TCP sockets by `struct sock` address: added at the handshake or at the first traced byte,
/// removed when the socket reaches `TCP_CLOSE`, which is reported to the owner process.
/// Userspace sets the capped direction and size.
#[map]
pub static SOCKS: LruHashMap<u64, SockInfo> = LruHashMap::with_max_entries(65536, 0);

/// Threads that just read a response on a client connection: their next wake-up of another
/// thread is reported (see `process::try_wakeup`).
#[map]
pub static WAKE_ARMED: LruHashMap<u32, u8> = LruHashMap::with_max_entries(65536, 0);

/// Set once any thread was armed in `WAKE_ARMED`. Until then (and for good on a host whose
/// traced programs only serve) a wake-up leaves after this array load, which the verifier
/// inlines, instead of a hash lookup through a helper call: 171 ns a wake-up on nginx before.
#[map]
static WAKE_EVER_ARMED: Array<u32> = Array::with_max_entries(1, 0);

/// Set once any traced thread entered an OpenSSL read or write. Until then the data path skips
/// looking its thread up among the SSL calls in flight.
#[map]
pub static TLS_EVER_ENTERED: Array<u32> = Array::with_max_entries(1, 0);

/// Raise a flag that stays up.
#[inline(always)]
pub fn raise(flag: &Array<u32>) {
    if let Some(word) = flag.get_ptr_mut(0) {
        // SAFETY: a plain word; racing writers all write 1.
        unsafe {
            if *word == 0 {
                *word = 1;
            }
        }
    }
}

/// Whether a flag was ever raised.
#[inline(always)]
pub fn is_raised(flag: &Array<u32>) -> bool {
    flag.get(0).is_some_and(|word| *word != 0)
}

/// Arm `tid`: its next wake-up of another thread is reported.
#[inline(always)]
pub fn arm_wakeup(tid: u32) {
    raise(&WAKE_EVER_ARMED);
    let _ = WAKE_ARMED.insert(tid, 1, 0);
}

/// Whether any thread may be armed.
#[inline(always)]
pub fn wakeups_armed() -> bool {
    is_raised(&WAKE_EVER_ARMED)
}

/// Scratch space for one data record per CPU: too large for the 512-byte BPF stack.
#[map]
pub static SCRATCH: PerCpuArray<DataEvent> = PerCpuArray::with_max_entries(1, 0);

/// Loss and volume counters, indexed by `agent_common::Counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(agent_common::COUNTER_COUNT, 0);

#[inline(always)]
pub fn count(counter: agent_common::Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while the program runs.
        unsafe { *slot += 1 };
    }
}

/// Bumped after every change to `TRACED_PIDS`: word 0 by the programs here (atomically), word 1
/// by userspace (its only writer). Their sum grows with every change, so a verdict cached under
/// an older sum is never used after one.
#[map]
pub static TRACED_PIDS_GENERATION: Array<u64> =
    Array::with_max_entries(agent_common::TRACED_PIDS_GENERATION_WORDS, 0);

/// This CPU's last answer from `TRACED_PIDS`. A CPU mostly runs the same few processes, and a
/// hash lookup cost about 40 ns of every socket event, traced or not.
#[map]
static LAST_VERDICT: PerCpuArray<TracedVerdict> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct TracedVerdict {
    generation: u64,
    tgid: u32,
    traced: u32,
}

/// Insert or remove in `TRACED_PIDS` done: cached verdicts are stale.
#[inline(always)]
pub fn traced_pids_changed() {
    if let Some(word) = TRACED_PIDS_GENERATION.get_ptr_mut(0) {
        // SAFETY: an array word; writers on other CPUs add atomically too. (The BPF target
        // offers no atomic types, only the instruction, through this intrinsic.)
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                word, 1,
            )
        };
    }
}

#[inline(always)]
fn traced_pids_generation() -> u64 {
    let word = |i| TRACED_PIDS_GENERATION.get(i).copied().unwrap_or(0);
    word(0).wrapping_add(word(1))
}

/// Whether this process is selected for tracing.
#[inline(always)]
pub fn is_traced(tgid: u32) -> bool {
    if tgid == config!(agent_tgid) {
        return false;
    }
    if config!(filter_pids) == 0 {
        return true;
    }
    // Read before the lookup: a change after it bumps the generation past what is cached.
    let generation = traced_pids_generation();
    let Some(last) = LAST_VERDICT.get_ptr_mut(0) else {
        // SAFETY: the value is only tested for presence.
        return unsafe { TRACED_PIDS.get(tgid).is_some() };
    };
    // SAFETY: this CPU's slot; tracing programs do not nest on a CPU.
    unsafe {
        if (*last).tgid == tgid && (*last).generation == generation {
            return (*last).traced != 0;
        }
        let traced = TRACED_PIDS.get(tgid).is_some();
        *last = TracedVerdict {
            generation,
            tgid,
            traced: traced as u32,
        };
        traced
    }
}
