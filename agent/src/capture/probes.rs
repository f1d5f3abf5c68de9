//! Loading the kernel programs, attaching them to tracepoints, and reading their counters.

use std::collections::BTreeMap;
use std::path::Path;

use agent_common::{
    COUNTER_COUNT, CaptureConfig, Counter, MAX_CAPTURE, SockInfo, SockOffsets,
    TRACED_PIDS_USER_GENERATION,
};
use anyhow::{Context as _, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::{RawTracePoint, TracePoint},
};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use super::{kernel_btf, streams::CaptureChange, syscalls, tracefs};
use crate::protocols::PrefixNeed;

/// The kernel object built by `agent/build.rs`.
static KERNEL_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf"));

/// The kernel's own type information; `bpf_get_current_task_btf` and the typed `pt_regs`
/// loads of the data path rest on it.
pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Which program serves which tracepoints. Required: without them nothing can be captured.
/// The bytes come from the two `sock` length tracepoints, connection set-up and end from the
/// TCP state changes. No syscall tracepoint is used (see the kernel's `syscalls` module).
const DATA_PATH: &[(&str, &str, &str)] = &[
    ("sock_send", "sock", "sock_send_length"),
    ("sock_recv", "sock", "sock_recv_length"),
    ("sock_state", "sock", "inet_sock_set_state"),
];

/// Programs that serve the socket tracepoints above as raw tracepoints, taking their place when
/// the kernel's BTF locates the socket fields they read.
const RAW_DATA_PATH: &[(&str, &str)] = &[
    ("sock_send", "sock_send_raw"),
    ("sock_recv", "sock_recv_raw"),
];

/// Useful but not essential: without them new processes are found by periodic rescans only,
/// and a thread pool's hand-offs are not seen.
const OPTIONAL: &[(&str, &str, &str)] = &[
    ("process_exec", "sched", "sched_process_exec"),
    ("process_exit", "sched", "sched_process_exit"),
    ("process_fork", "task", "task_newtask"),
    ("thread_wakeup", "sched", "sched_wakeup"),
];

/// Every tracepoint the agent wants, with whether it is required.
pub fn wanted_tracepoints() -> impl Iterator<Item = (&'static str, &'static str, bool)> {
    DATA_PATH
        .iter()
        .map(|(_, c, n)| (*c, *n, true))
        .chain(OPTIONAL.iter().map(|(_, c, n)| (*c, *n, false)))
}

pub struct ProbeOptions {
    pub agent_tgid: u32,
    pub filter_pids: bool,
    pub capture_bytes: u32,
    pub ring_buffer_bytes: u32,
    /// Executable names to select in the kernel as soon as they are exec'd.
    pub exe_names: Vec<String>,
    pub socket_probes: SocketProbes,
}

/// How the data path attaches to the two `sock` length tracepoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SocketProbes {
    /// As raw tracepoints when the kernel's BTF locates the socket fields they read, else on
    /// the tracepoints' records.
    #[default]
    Auto,
    /// Always on the tracepoints' records (a way round a kernel whose raw tracepoints or BTF
    /// misbehave).
    Records,
}

/// How the data path was attached, as `--stats-file` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachedSocketProbes {
    Raw,
    Records,
}

/// Loaded and attached kernel programs. Dropping it detaches everything.
pub struct Probes {
    ebpf: Ebpf,
    pub missing_optional: Vec<String>,
    pub socket_probes: AttachedSocketProbes,
}

impl Probes {
    pub fn load(opts: &ProbeOptions) -> anyhow::Result<Self> {
        if KERNEL_OBJECT.is_empty() {
            bail!("this binary was built without its kernel programs (AYA_BUILD_SKIP was set)");
        }
        if !Path::new(KERNEL_BTF).exists() {
            bail!(
                "{KERNEL_BTF} is missing: this kernel was built without BTF, which the data path needs to read a syscall's registers (CONFIG_DEBUG_INFO_BTF)"
            );
        }
        let root = tracefs::ensure_mounted()?;
        for (category, name, required) in wanted_tracepoints() {
            if required && !tracefs::has_tracepoint(root, category, name) {
                bail!("tracepoint {category}:{name} is missing on this kernel; capture needs it");
            }
        }
        // Raw tracepoints skip the record the kernel fills for every socket event on the host
        // (halving what an unselected process pays per socket syscall); they need the kernel's
        // layout of `struct sock`.
        let sock_offsets = match opts.socket_probes {
            SocketProbes::Records => None,
            SocketProbes::Auto => match kernel_btf::sock_offsets(Path::new(KERNEL_BTF)) {
                Ok(offsets) => Some(offsets),
                Err(err) => {
                    log::warn!(
                        "socket fields not found in BTF ({err:#}); using the sock tracepoints' records"
                    );
                    None
                }
            },
        };
        let ring = ring_capacity(opts.ring_buffer_bytes);
        let config = CaptureConfig {
            agent_tgid: opts.agent_tgid,
            filter_pids: opts.filter_pids as u32,
            capture_bytes: opts.capture_bytes.min(MAX_CAPTURE as u32),
            wakeup_bytes: wakeup_bytes(ring),
            offsets: tracefs::read_offsets(root)?,
            sock: sock_offsets.unwrap_or(SockOffsets {
                family: 0,
                protocol: 0,
            }),
        };
        let mut ebpf = EbpfLoader::new()
            .override_global("CONFIG", &config, true)
            .map_max_entries("EVENTS", ring)
            .load(KERNEL_OBJECT)
            .context("loading the kernel programs (is the agent running as root?)")?;

        // The data path reads this table from its first event: fill it before attaching.
        let mut kinds: Array<_, u8> = Array::try_from(
            ebpf.map_mut("SYSCALL_KINDS")
                .context("SYSCALL_KINDS map missing")?,
        )?;
        for &(nr, kind) in syscalls::table() {
            kinds.set(nr, kind, 0)?;
        }
        let mut missing_optional = Vec::new();
        for (program, category, name) in DATA_PATH {
            let raw = RAW_DATA_PATH
                .iter()
                .find(|(served, _)| served == program)
                .filter(|_| sock_offsets.is_some());
            match raw {
                Some((_, raw_program)) => attach_raw(&mut ebpf, raw_program, name)?,
                None => attach(&mut ebpf, program, category, name)?,
            }
        }
        for (program, category, name) in OPTIONAL {
            if !tracefs::has_tracepoint(root, category, name) {
                missing_optional.push(format!("{category}:{name}"));
                continue;
            }
            if let Err(err) = attach(&mut ebpf, program, category, name) {
                log::warn!("optional tracepoint {category}:{name} not attached: {err:#}");
                missing_optional.push(format!("{category}:{name}"));
            }
        }
        let mut comms: BpfHashMap<_, [u8; 16], u8> = BpfHashMap::try_from(
            ebpf.map_mut("SELECTED_COMMS")
                .context("SELECTED_COMMS map missing")?,
        )?;
        for name in &opts.exe_names {
            comms.insert(comm_key(name), 1, 0)?;
        }
        Ok(Self {
            ebpf,
            missing_optional,
            socket_probes: if sock_offsets.is_some() {
                AttachedSocketProbes::Raw
            } else {
                AttachedSocketProbes::Records
            },
        })
    }

    /// The loaded object, for attaching programs later (uprobes on libraries found at run time).
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// The ring buffer all kernel records arrive on. Can be taken once.
    pub fn take_events(&mut self) -> anyhow::Result<RingBuf<MapData>> {
        let map = self.ebpf.take_map("EVENTS").context("EVENTS map missing")?;
        Ok(RingBuf::try_from(map)?)
    }

    /// The selected-process table (used when filtering). Can be taken once.
    pub fn take_traced_pids(&mut self) -> anyhow::Result<TracedPids> {
        let map = self
            .ebpf
            .take_map("TRACED_PIDS")
            .context("TRACED_PIDS map missing")?;
        let generation = self
            .ebpf
            .take_map("TRACED_PIDS_GENERATION")
            .context("TRACED_PIDS_GENERATION map missing")?;
        Ok(TracedPids {
            pids: BpfHashMap::try_from(map)?,
            generation: Array::try_from(generation)?,
            user_generation: 0,
        })
    }

    /// The kernel's socket table, for setting capture prefixes. Can be taken once.
    pub fn take_socket_caps(&mut self) -> anyhow::Result<SocketCaps> {
        let map = self.ebpf.take_map("SOCKS").context("SOCKS map missing")?;
        Ok(SocketCaps {
            map: BpfHashMap::try_from(map)?,
        })
    }

    /// The counters map. Can be taken once.
    pub fn take_counters(&mut self) -> anyhow::Result<KernelCounters> {
        let map = self
            .ebpf
            .take_map("COUNTERS")
            .context("COUNTERS map missing")?;
        Ok(KernelCounters {
            map: PerCpuArray::try_from(map)?,
        })
    }
}

/// The ring's data size for a requested size: a power of two, at least 16 pages.
pub fn ring_capacity(requested: u32) -> u32 {
    requested.next_power_of_two().max(4096 * 16)
}

/// The ring-buffer backlog that wakes userspace: large enough that the agent works in a few
/// long batches rather than many short ones (each wake-up can preempt a traced program), small
/// enough that the ring never comes close to full between wake-ups.
fn wakeup_bytes(ring: u32) -> u32 {
    (ring / 8).min(1024 * 1024)
}

/// The kernel's `comm` for a program: its file name, cut to 15 bytes, NUL-padded.
fn comm_key(name: &str) -> [u8; 16] {
    let file = name.rsplit('/').next().unwrap_or(name).as_bytes();
    let mut key = [0u8; 16];
    let n = file.len().min(15);
    key[..n].copy_from_slice(&file[..n]);
    key
}

fn attach_raw(ebpf: &mut Ebpf, program: &str, name: &str) -> anyhow::Result<()> {
    let raw: &mut RawTracePoint = ebpf
        .program_mut(program)
        .with_context(|| format!("program {program} missing from the kernel object"))?
        .try_into()?;
    raw.load()
        .with_context(|| format!("the verifier refused program {program}"))?;
    raw.attach(name)
        .with_context(|| format!("attaching {program} to raw tracepoint {name}"))?;
    Ok(())
}

fn attach(ebpf: &mut Ebpf, program: &str, category: &str, name: &str) -> anyhow::Result<()> {
    let tp: &mut TracePoint = ebpf
        .program_mut(program)
        .with_context(|| format!("program {program} missing from the kernel object"))?
        .try_into()?;
    // A program attached to several tracepoints is loaded once.
    if tp.fd().is_err() {
        tp.load()
            .with_context(|| format!("the verifier refused program {program}"))?;
    }
    tp.attach(category, name)
        .with_context(|| format!("attaching {program} to {category}:{name}"))?;
    Ok(())
}

/// The kernel's table of selected processes, as userspace adds to it.
pub struct TracedPids {
    pids: BpfHashMap<MapData, u32, u8>,
    generation: Array<MapData, u64>,
    /// Userspace's own word of the generation, which only it writes.
    user_generation: u64,
}

impl TracedPids {
    /// Select a process, then tell the programs that their cached verdicts are stale.
    pub fn insert(&mut self, tgid: u32) -> anyhow::Result<()> {
        self.pids.insert(tgid, 1, 0)?;
        self.user_generation += 1;
        self.generation
            .set(TRACED_PIDS_USER_GENERATION, self.user_generation, 0)?;
        Ok(())
    }

    /// Entries in the table now.
    pub fn entries(&self) -> u64 {
        self.pids.keys().filter(Result::is_ok).count() as u64
    }
}

/// Where decoders' capture prefixes reach the kernel (see `Session::response_prefix_needed`).
pub struct SocketCaps {
    map: BpfHashMap<MapData, u64, SockInfo>,
}

impl SocketCaps {
    /// Apply a change to a socket the kernel knows. One the kernel has already forgotten (it
    /// closed) needs none.
    pub fn apply(&mut self, change: CaptureChange) {
        let Ok(mut info) = self.map.get(&change.sock, 0) else {
            return;
        };
        let need = change.need.unwrap_or(PrefixNeed {
            bytes: 0,
            whole_buffers: 0,
        });
        info.capped_bytes = need.bytes;
        info.capped_whole_buffers = need.whole_buffers;
        info.capped_direction = if need.bytes == 0 {
            0
        } else {
            change.direction as u8
        };
        // Only an existing entry: the socket may have closed since the lookup.
        let _ = self.map.insert(change.sock, info, BPF_EXIST);
    }
}

/// `bpf_map_update_elem` flag: update an existing element only.
const BPF_EXIST: u64 = 2;

pub struct KernelCounters {
    map: PerCpuArray<MapData, u64>,
}

/// What the kernel side delivered and what it could not, summed over CPUs.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct KernelCounts {
    pub data_events: u64,
    pub ring_buffer_full: u64,
    pub payload_truncated: u64,
    pub iovecs_truncated: u64,
    pub copy_failed: u64,
    pub unwatched_socket_io: u64,
    pub control_events_lost: u64,
    pub tls_unattributed: u64,
    /// Payloads copied only as far as their decoder needs: by design, not a loss.
    pub payload_capped: u64,
    /// TCP sockets the kernel entered in its socket table at their handshake.
    pub sockets_entered: u64,
}

impl KernelCounts {
    /// Records the kernel could not hand over.
    pub fn lost_events(&self) -> u64 {
        self.ring_buffer_full + self.unwatched_socket_io + self.control_events_lost
    }
}

impl KernelCounters {
    pub fn read(&self) -> KernelCounts {
        let mut sums = BTreeMap::new();
        for index in 0..COUNTER_COUNT {
            let total = self
                .map
                .get(&index, 0)
                .map(|per_cpu| per_cpu.iter().sum::<u64>())
                .unwrap_or(0);
            sums.insert(index, total);
        }
        let at = |c: Counter| sums.get(&(c as u32)).copied().unwrap_or(0);
        KernelCounts {
            data_events: at(Counter::DataEvents),
            ring_buffer_full: at(Counter::RingBufferFull),
            payload_truncated: at(Counter::PayloadTruncated),
            iovecs_truncated: at(Counter::IovecsTruncated),
            copy_failed: at(Counter::CopyFailed),
            unwatched_socket_io: at(Counter::UnwatchedSocketIo),
            control_events_lost: at(Counter::ControlEventsLost),
            tls_unattributed: at(Counter::TlsUnattributed),
            payload_capped: at(Counter::PayloadCapped),
            sockets_entered: at(Counter::SocketsEntered),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_syscall_tracepoint_is_wanted() {
        // One enabled syscall tracepoint, whatever its program does, slows every syscall of every
        // process on the host (the kernel takes its slow path for all of them).
        let syscall_points: Vec<_> = wanted_tracepoints()
            .filter(|(category, _, _)| *category == "syscalls" || *category == "raw_syscalls")
            .map(|(category, name, _)| format!("{category}:{name}"))
            .collect();
        assert!(syscall_points.is_empty(), "{syscall_points:?}");
    }

    #[test]
    fn connection_end_is_required() {
        // Connections end at `TCP_CLOSE`: without it, bodies framed by the close would wait for
        // the idle sweep.
        assert!(
            wanted_tracepoints().any(|t| t == ("sock", "inet_sock_set_state", true)),
            "inet_sock_set_state must be a required tracepoint"
        );
    }
}
