//! Types shared by the kernel programs (`agent-ebpf`) and the userspace agent.
//!
//! Every type is `#[repr(C)]` with explicit padding fields so that both sides agree on the
//! layout byte for byte, and so that no uninitialised padding ever reaches the ring buffer.
#![no_std]

/// Largest payload prefix the kernel copies per syscall. A power of two: the kernel side masks
/// offsets with `MAX_CAPTURE - 1` so the verifier can bound every copy.
pub const MAX_CAPTURE: usize = 8192;
/// Default payload prefix copied per syscall; `--capture-bytes` changes it.
pub const DEFAULT_CAPTURE: u32 = 2048;
/// How many iovec entries of a readv/writev/recvmsg/sendmsg are copied; the rest is counted.
pub const MAX_IOVECS: usize = 64;

/// First byte of every ring-buffer record: tells userspace which struct follows.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Data = 1,
    Close = 2,
    Exec = 3,
    Exit = 4,
    Wake = 5,
}

impl EventKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Data),
            2 => Some(Self::Close),
            3 => Some(Self::Exec),
            4 => Some(Self::Exit),
            5 => Some(Self::Wake),
            _ => None,
        }
    }
}

/// Which way the bytes went, seen from the traced process.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// read/recv: bytes the process received.
    Ingress = 1,
    /// write/send: bytes the process sent.
    Egress = 2,
}

/// Which end of the TCP connection the traced process is.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Unknown = 0,
    /// The process called connect().
    Client = 1,
    /// The process accepted the connection.
    Server = 2,
}

impl Role {
    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Client,
            2 => Self::Server,
            _ => Self::Unknown,
        }
    }
}

/// The syscall that produced a data event (diagnostics and iovec handling).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoSyscall {
    Read = 1,
    Write = 2,
    RecvFrom = 3,
    SendTo = 4,
    Readv = 5,
    Writev = 6,
    RecvMsg = 7,
    SendMsg = 8,
    SendFile = 9,
}

/// `DataEventHeader::flags`: plaintext captured inside OpenSSL, before encryption / after
/// decryption.
pub const DATA_FLAG_TLS: u8 = 1;
/// `DataEventHeader::syscall` for TLS plaintext records.
pub const TLS_SYSCALL: u8 = 100;

/// Address family values as the kernel reports them.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;

/// A TCP connection as seen from the traced process: local end first.
/// Addresses are in network byte order (IPv4 in the first four bytes); ports in host order.
///
/// Aligned to 8 so that the kernel programs copy it (into every data record) in words: at the
/// byte alignment of its address arrays, the BPF target copies it a byte at a time.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnTuple {
    /// `AF_INET`, `AF_INET6`, or 0 when the kernel side never saw the handshake.
    pub family: u16,
    pub local_port: u16,
    pub remote_port: u16,
    /// A [`Role`].
    pub role: u8,
    pub _pad: u8,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
}

impl ConnTuple {
    pub const UNKNOWN: Self = Self {
        family: 0,
        local_port: 0,
        remote_port: 0,
        role: Role::Unknown as u8,
        _pad: 0,
        local_addr: [0; 16],
        remote_addr: [0; 16],
    };
}

/// What the kernel knows of a TCP socket (the `SOCKS` map's value, by `struct sock` address):
/// its tuple and role, from the handshake (`ConnTuple::UNKNOWN` when the handshake came before
/// the agent), the process whose traced data last went through it (0 until some did), and how
/// much of the data going one way its decoder needs.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SockInfo {
    pub tuple: ConnTuple,
    pub owner_tgid: u32,
    /// When not 0: copy at most this many bytes of each syscall moving data in
    /// `capped_direction` (set by userspace once the decoder knows it needs no more).
    pub capped_bytes: u16,
    /// A [`Direction`], or 0 for none.
    pub capped_direction: u8,
    pub _pad: u8,
    /// With a cap, in a vectored syscall: no further buffer is begun once this many bytes are
    /// copied (0: no such stop).
    pub capped_whole_buffers: u16,
    pub _pad2: [u8; 6],
}

/// A socket's cap for one direction (see [`SockInfo::cap_for`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap {
    pub bytes: u32,
    /// Begin no further iovec buffer once this many bytes are in.
    pub whole_buffers: u32,
}

impl SockInfo {
    /// A socket as the kernel first records it: nothing capped.
    pub const fn new(tuple: ConnTuple, owner_tgid: u32) -> Self {
        Self {
            tuple,
            owner_tgid,
            capped_bytes: 0,
            capped_direction: 0,
            _pad: 0,
            capped_whole_buffers: 0,
            _pad2: [0; 6],
        }
    }

    /// How a syscall moving `direction` (a [`Direction`] value) is capped, if it is.
    pub const fn cap_for(&self, direction: u8) -> Option<Cap> {
        if self.capped_bytes == 0 || self.capped_direction != direction {
            return None;
        }
        Some(Cap {
            bytes: self.capped_bytes as u32,
            whole_buffers: if self.capped_whole_buffers == 0 {
                u32::MAX
            } else {
                self.capped_whole_buffers as u32
            },
        })
    }
}

/// Header of a [`EventKind::Data`] record; `captured_len` payload bytes follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DataEventHeader {
    /// Always [`EventKind::Data`].
    pub kind: u8,
    /// A [`Direction`].
    pub direction: u8,
    /// An [`IoSyscall`], or [`TLS_SYSCALL`] for plaintext seen in an OpenSSL call.
    pub syscall: u8,
    /// [`DATA_FLAG_TLS`]: the payload is TLS plaintext from SSL_read/SSL_write, not socket bytes.
    pub flags: u8,
    pub fd: i32,
    /// `bpf_get_current_pid_tgid()`: tgid in the high half, thread id in the low half.
    pub pid_tgid: u64,
    /// Address of the kernel `struct sock`: identifies the connection while it lives.
    pub sock: u64,
    /// Monotonic (CLOCK_MONOTONIC / ktime) nanoseconds when the bytes started and finished
    /// moving. A socket syscall is seen once, as the socket layer returns, so both are that
    /// moment; TLS records span the SSL call.
    pub enter_ns: u64,
    pub exit_ns: u64,
    /// Bytes the syscall moved.
    pub total_len: u32,
    /// Bytes copied after this header (a prefix of `total_len`).
    pub captured_len: u32,
    pub tuple: ConnTuple,
}

/// The per-CPU scratch record the kernel fills before handing `header + payload` to the ring.
/// Twice `MAX_CAPTURE` so that a copy at any masked offset below `MAX_CAPTURE` stays in bounds.
#[repr(C)]
pub struct DataEvent {
    pub header: DataEventHeader,
    pub payload: [u8; MAX_CAPTURE * 2],
}

/// [`EventKind::Close`]: a socket that carried traced data reached `TCP_CLOSE`. The socket, not
/// a descriptor, is what ended; `tgid` is the process whose traced data last went through it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CloseEvent {
    pub kind: u8,
    pub _pad: [u8; 3],
    pub tgid: u32,
    pub sock: u64,
    pub timestamp_ns: u64,
}

/// [`EventKind::Exec`] and [`EventKind::Exit`]: process life cycle, for process selection and
/// for dropping per-process state.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcessEvent {
    pub kind: u8,
    pub _pad: [u8; 3],
    pub tgid: u32,
    pub timestamp_ns: u64,
    /// The command name (`comm`, NUL-padded) the process runs under: after an exec, the new
    /// program's. Its name when the process is gone before userspace reads /proc.
    pub comm: [u8; 16],
}

/// [`EventKind::Wake`]: right after reading a response on a client connection, a thread woke
/// another thread of its process — typically a worker handing a finished call back to the thread
/// serving the request that asked for it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WakeEvent {
    pub kind: u8,
    pub _pad: [u8; 3],
    pub tgid: u32,
    pub waker_tid: u32,
    pub wakee_tid: u32,
    pub timestamp_ns: u64,
}

/// Indexes into the per-CPU `COUNTERS` array: everything the kernel side could not deliver.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Data records handed to the ring buffer.
    DataEvents = 0,
    /// Records lost because the ring buffer was full.
    RingBufferFull = 1,
    /// Syscalls whose payload was longer than the capture limit (the rest is counted, not copied).
    PayloadTruncated = 2,
    /// iovec arrays longer than `MAX_IOVECS`.
    IovecsTruncated = 3,
    /// Payload copies that faulted (unmapped user memory).
    CopyFailed = 4,
    /// Bytes moved on a traced TCP socket by a syscall the kernel programs do not decode
    /// (recvmmsg, splice, io_uring, a 32-bit caller): seen, not captured.
    UnwatchedSocketIo = 5,
    /// Control records (close, exec, exit) lost because the ring buffer was full.
    ControlEventsLost = 6,
    /// TLS plaintext whose socket could not be told (no socket syscall seen for that SSL yet).
    TlsUnattributed = 7,
    /// Syscalls copied only as far as the socket's decoder said it needs (`SockInfo`): by
    /// design, not a loss.
    PayloadCapped = 8,
    /// TCP sockets entered in the socket table at their handshake: with a selection, client
    /// sockets only of selected processes (see the kernel's `sockets` module).
    SocketsEntered = 9,
}

pub const COUNTER_COUNT: u32 = 10;

/// Byte offsets of tracepoint fields, read by userspace from tracefs `format` files and handed
/// to the kernel programs, so the programs never guess a layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TracepointOffsets {
    /// task:task_newtask: the new task's id, and its clone flags (a thread or a process).
    pub newtask_pid: u16,
    pub newtask_clone_flags: u16,
    /// sched:sched_wakeup
    pub wakeup_pid: u16,
    pub _pad: u16,
}

/// `SYSCALL_KINDS` value of a syscall number the data path does not decode. Data syscalls map to
/// their [`IoSyscall`] value.
pub const SYSCALL_NOT_DATA: u8 = 0;

/// Entries of `SYSCALL_KINDS`: syscall numbers at or above it are never ours.
pub const SYSCALL_KINDS_LEN: u32 = 512;

/// Words of the `TRACED_PIDS_GENERATION` array: the kernel programs bump the first after each
/// change they make to `TRACED_PIDS`, userspace the second ([`TRACED_PIDS_USER_GENERATION`]).
pub const TRACED_PIDS_GENERATION_WORDS: u32 = 2;
pub const TRACED_PIDS_USER_GENERATION: u32 = 1;

/// Fields of a `sock:sock_send_length` / `sock:sock_recv_length` record. The data path runs on
/// every socket send and receive of the host, so it loads them at fixed offsets, directly
/// (a load at an offset known only at run time would need a helper call each); userspace
/// checks them against this kernel's tracefs format before loading anything.
pub mod sock_length_record {
    pub const SK: usize = 8;
    pub const FAMILY: usize = 16;
    pub const PROTOCOL: usize = 18;
    pub const RET: usize = 20;
    pub const FLAGS: usize = 24;
}

/// Fields of a `sock:inet_sock_set_state` record, loaded directly for the same reason: the
/// program runs on every TCP state change of the host (six times for a short connection), and
/// reading its fields through helper calls was most of its cost. The layout has not changed
/// since the tracepoint appeared (4.16); userspace checks it like the one above.
pub mod sock_state_record {
    pub const SKADDR: usize = 8;
    pub const OLDSTATE: usize = 16;
    pub const NEWSTATE: usize = 20;
    pub const SPORT: usize = 24;
    pub const DPORT: usize = 26;
    pub const FAMILY: usize = 28;
    pub const PROTOCOL: usize = 30;
    pub const SADDR: usize = 32;
    pub const DADDR: usize = 36;
    pub const SADDR_V6: usize = 40;
    pub const DADDR_V6: usize = 56;
}

/// Settings the userspace agent writes into the kernel programs' global `CONFIG` before load.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CaptureConfig {
    /// Never trace this process (the agent itself).
    pub agent_tgid: u32,
    /// 1: only processes in the `TRACED_PIDS` map; 0: every process but the agent.
    pub filter_pids: u32,
    /// Payload prefix copied per syscall, at most `MAX_CAPTURE`.
    pub capture_bytes: u32,
    /// Userspace is woken when the ring buffer's backlog reaches this many bytes.
    pub wakeup_bytes: u32,
    pub offsets: TracepointOffsets,
    /// Where `struct sock` keeps what the raw `sock` tracepoints need (from the kernel's BTF).
    pub sock: SockOffsets,
}

/// Byte offsets of two `u16` fields of the kernel's `struct sock`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SockOffsets {
    /// `__sk_common.skc_family`
    pub family: u16,
    /// `sk_protocol`
    pub protocol: u16,
}

impl CaptureConfig {
    pub const fn zeroed() -> Self {
        Self {
            agent_tgid: 0,
            filter_pids: 0,
            capture_bytes: DEFAULT_CAPTURE,
            wakeup_bytes: 1024 * 1024,
            offsets: TracepointOffsets {
                newtask_pid: 0,
                newtask_clone_flags: 0,
                wakeup_pid: 0,
                _pad: 0,
            },
            sock: SockOffsets {
                family: 0,
                protocol: 0,
            },
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are `#[repr(C)]`, built only of integers and byte arrays, with every
    // padding byte spelled out as a field, so any bit pattern is a valid value.
    unsafe impl aya::Pod for super::ConnTuple {}
    unsafe impl aya::Pod for super::SockInfo {}
    unsafe impl aya::Pod for super::CaptureConfig {}
    unsafe impl aya::Pod for super::TracepointOffsets {}
    unsafe impl aya::Pod for super::SockOffsets {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<ConnTuple>(), 2 + 2 + 2 + 1 + 1 + 16 + 16);
        assert_eq!(size_of::<SockInfo>(), 40 + 4 + 2 + 1 + 1 + 2 + 6);
        assert_eq!(size_of::<DataEventHeader>(), 4 + 4 + 8 * 4 + 4 + 4 + 40);
        assert_eq!(size_of::<CloseEvent>(), 4 + 4 + 8 * 2);
        assert_eq!(size_of::<ProcessEvent>(), 4 + 4 + 8 + 16);
        assert_eq!(size_of::<WakeEvent>(), 4 + 4 * 3 + 8);
        assert_eq!(size_of::<TracepointOffsets>(), 4 * 2);
        assert_eq!(size_of::<SockOffsets>(), 2 * 2);
        assert_eq!(size_of::<CaptureConfig>(), 4 * 4 + 4 * 2 + 2 * 2);
    }
}
