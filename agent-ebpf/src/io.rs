//! The data path: socket reads and writes, as they return, to ring-buffer records.
//!
//! `sock:sock_{send,recv}_length` fire inside every socket send and receive, in the caller's
//! context, after the bytes moved, naming the `struct sock`, its family and protocol and the byte
//! count. For TCP in a traced process, the syscall and its buffers are read from the thread's
//! saved registers (see `syscalls`) and a bounded prefix of the bytes is copied. Files, pipes and
//! UDP never get here, and untraced processes leave after the protocol check and a cached verdict
//! (see `maps::is_traced`).

use core::mem::MaybeUninit;

use agent_common::{
    AF_INET, AF_INET6, ConnTuple, Counter, DataEventHeader, Direction, EventKind, IPPROTO_TCP,
    MAX_CAPTURE, MAX_IOVECS, Role, SockInfo, sock_length_record,
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        generated::{bpf_loop, bpf_probe_read_user},
    },
    programs::{RawTracePointContext, TracePointContext},
};

use crate::{
    maps::{EVENTS, SCRATCH, SOCKS, arm_wakeup, config, count, is_traced, wakeup_flags},
    record::field,
    syscalls::current_data_syscall,
    tls,
};

/// Where the syscall keeps its bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// (fd, buf, len): read, write, recvfrom, sendto.
    Buffer,
    /// (fd, iov, iovcnt): readv, writev.
    Iovec,
    /// (fd, msghdr, flags): recvmsg, sendmsg.
    MsgHdr,
    /// (out_fd, ...): sendfile; the bytes come from a file, only their count is reported.
    Counted,
}

/// `struct user_msghdr`: msg_iov at 16, msg_iovlen right after it at 24.
const MSGHDR_IOV: u64 = 16;

/// `MSG_PEEK`: the bytes stay queued and will be read again.
const MSG_PEEK: i32 = 2;

/// `sock:sock_send_length` (`Egress`) / `sock:sock_recv_length` (`Ingress`): report the bytes a
/// traced process just moved on a TCP socket. (The fallback: see `try_socket_io_raw`.)
pub fn try_socket_io(ctx: &TracePointContext, direction: Direction) -> Result<(), i64> {
    let protocol: u16 = field(ctx, sock_length_record::PROTOCOL);
    let family: u16 = field(ctx, sock_length_record::FAMILY);
    if !is_tcp_over_ip(family, protocol) {
        return Ok(());
    }
    let ret: i32 = field(ctx, sock_length_record::RET);
    let flags: i32 = field(ctx, sock_length_record::FLAGS);
    if !moved_bytes(ret, flags) {
        return Ok(());
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_traced((pid_tgid >> 32) as u32) {
        return Ok(());
    }
    let sock: u64 = field(ctx, sock_length_record::SK);
    socket_io(sock, SOCKS.get_ptr_mut(sock), ret, pid_tgid, direction)
}

/// The same as raw tracepoints, which hand over the tracepoint's arguments (`struct sock *`,
/// byte count, flags) instead of a record the kernel fills for every event: a process outside
/// the selection leaves before anything is read, and the socket's family and protocol are read
/// only for a traced process's socket not yet in `SOCKS`, at offsets userspace found in the
/// kernel's BTF. (Only TCP sockets over IP are entered there, and an entry goes when its socket
/// closes, so an entry answers both.)
pub fn try_socket_io_raw(ctx: &RawTracePointContext, direction: Direction) -> Result<(), i64> {
    let sock: u64 = ctx.arg(0);
    // `int` arguments, passed as 64-bit words.
    let ret = ctx.arg::<u64>(1) as i32;
    let flags = ctx.arg::<u64>(2) as i32;
    if !moved_bytes(ret, flags) {
        return Ok(());
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_traced((pid_tgid >> 32) as u32) {
        return Ok(());
    }
    let entry = SOCKS.get_ptr_mut(sock);
    if entry.is_none() {
        let family = read_sock_u16(sock, config!(sock.family))?;
        let protocol = read_sock_u16(sock, config!(sock.protocol))?;
        if !is_tcp_over_ip(family, protocol) {
            return Ok(());
        }
    }
    socket_io(sock, entry, ret, pid_tgid, direction)
}

/// TCP over IPv4 or IPv6: the only sockets decoded, and the only ones entered in `SOCKS`.
#[inline(always)]
pub fn is_tcp_over_ip(family: u16, protocol: u16) -> bool {
    protocol == IPPROTO_TCP && (family == AF_INET || family == AF_INET6)
}

/// Whether the call moved bytes that stay moved (a peek leaves them for the read that follows).
#[inline(always)]
fn moved_bytes(ret: i32, flags: i32) -> bool {
    ret > 0 && flags & MSG_PEEK == 0
}

#[inline(always)]
fn read_sock_u16(sock: u64, offset: u16) -> Result<u16, i64> {
    // SAFETY: a kernel read that faults safely; the tracepoint's socket is live while it runs.
    unsafe { bpf_probe_read_kernel((sock + u64::from(offset)) as *const u16) }.map_err(i64::from)
}

/// What both entry points share once the event is a traced process's TCP bytes; `entry` is
/// the socket's `SOCKS` entry, looked up by the caller.
#[inline(always)]
fn socket_io(
    sock: u64,
    entry: Option<*mut SockInfo>,
    ret: i32,
    pid_tgid: u64,
    direction: Direction,
) -> Result<(), i64> {
    let call = match current_data_syscall() {
        // A syscall moving bytes the other way (sendfile reading from a socket) is not one we
        // decode either.
        Some(call) if call.direction == direction => call,
        _ => {
            count(Counter::UnwatchedSocketIo);
            return Ok(());
        }
    };
    let [fd, arg1, arg2] = call.args;
    let (buf, iov, iovcnt) = match call.layout {
        Layout::Buffer => (arg1, 0, 0),
        Layout::Iovec => (0, arg1, arg2 as u32),
        Layout::MsgHdr => {
            // msg_iov and msg_iovlen sit side by side: one user read for both.
            let [iov, cnt] = read_user_pair(arg1 + MSGHDR_IOV)?;
            (0, iov, cnt as u32)
        }
        Layout::Counted => (0, 0, 0),
    };
    let fd = fd as i32;
    let now = unsafe { bpf_ktime_get_ns() };

    // Inside SSL_read/SSL_write these bytes are ciphertext: remember which socket the SSL
    // object uses, and let the uprobe report the plaintext instead.
    if tls::note_socket(pid_tgid, sock, fd) {
        return Ok(());
    }

    emit_payload(&Payload {
        pid_tgid,
        sock,
        entry,
        fd,
        direction: call.direction as u8,
        syscall: call.syscall as u8,
        flags: 0,
        enter_ns: now,
        exit_ns: now,
        total: ret as u32,
        buf,
        iov,
        iovcnt,
    });
    Ok(())
}

/// Where a data record's bytes are and what to say about them. (BPF functions take at most
/// five arguments, hence one struct.)
pub struct Payload {
    pub pid_tgid: u64,
    pub sock: u64,
    /// The socket's `SOCKS` entry as just looked up (`None`: not there yet).
    pub entry: Option<*mut SockInfo>,
    pub fd: i32,
    pub direction: u8,
    pub syscall: u8,
    pub flags: u8,
    pub enter_ns: u64,
    pub exit_ns: u64,
    /// Bytes moved.
    pub total: u32,
    /// One user buffer, or an iovec array (`iov`, `iovcnt`), or neither (count only).
    pub buf: u64,
    pub iov: u64,
    pub iovcnt: u32,
}

/// Fill the scratch record with a header and a bounded copy of the payload, and hand it over.
#[inline(always)]
pub fn emit_payload(p: &Payload) {
    let Payload {
        pid_tgid,
        sock,
        entry,
        fd,
        direction,
        syscall,
        flags,
        enter_ns,
        exit_ns,
        total,
        buf,
        iov,
        iovcnt,
    } = *p;
    let Some(event) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch, exclusively ours while this program runs.
    let event = unsafe { &mut *event };
    // What is needed of the socket's entry is taken at once: an LRU map may hand a deleted
    // entry to another socket while a pointer to it is still held.
    let (cap, role) = match claim_socket(sock, entry, (pid_tgid >> 32) as u32) {
        // SAFETY: a map value, just looked up.
        Some(info) => unsafe {
            copy_tuple(&mut event.header.tuple, &(*info).tuple);
            ((*info).cap_for(direction), (*info).tuple.role)
        },
        None => {
            event.header.tuple = ConnTuple::UNKNOWN;
            (None, Role::Unknown as u8)
        }
    };
    let configured = config!(capture_bytes);
    let cap = cap.filter(|cap| cap.bytes < configured);
    let limit = cap.map_or(configured, |cap| cap.bytes);
    let mut want = if total < limit { total } else { limit };
    if want > MAX_CAPTURE as u32 {
        want = MAX_CAPTURE as u32;
    }
    if want < total {
        count(if cap.is_some() {
            Counter::PayloadCapped
        } else {
            Counter::PayloadTruncated
        });
    }
    let captured = if buf != 0 {
        copy_buffer(&mut event.payload, buf, want)
    } else if iov != 0 {
        let whole_buffers = cap.map_or(u32::MAX, |cap| cap.whole_buffers);
        copy_iovecs(&mut event.payload, iov, iovcnt, want, whole_buffers)
    } else {
        0
    };
    let header = &mut event.header;
    header.kind = EventKind::Data as u8;
    header.direction = direction;
    header.syscall = syscall;
    header.flags = flags;
    header.fd = fd;
    header.pid_tgid = pid_tgid;
    header.sock = sock;
    header.enter_ns = enter_ns;
    header.exit_ns = exit_ns;
    header.total_len = total;
    header.captured_len = captured;
    emit(event, captured);
    if direction == Direction::Ingress as u8 && role == Role::Client as u8 {
        arm_wakeup(pid_tgid as u32);
    }
}

/// A tuple copied a word at a time. Copied as a value, it was split into its fields and its
/// address arrays, which the BPF target moves a byte at a time: some 130 instructions a record.
#[inline(always)]
pub fn copy_tuple(dst: &mut ConnTuple, src: &ConnTuple) {
    const WORDS: usize = size_of::<ConnTuple>() / 8;
    let dst = (dst as *mut ConnTuple).cast::<u64>();
    let src = (src as *const ConnTuple).cast::<u64>();
    for i in 0..WORDS {
        // SAFETY: ConnTuple is 8-aligned and WORDS words long; volatile keeps the compiler
        // from turning the loop back into a byte copy.
        unsafe { core::ptr::write_volatile(dst.add(i), core::ptr::read_volatile(src.add(i))) };
    }
}

/// What the kernel knows of the socket (`entry`, its `SOCKS` entry if it has one), noting that
/// this process's traced data goes through it (so that its close is reported to it). A socket
/// whose handshake came before the agent is added here.
#[inline(always)]
fn claim_socket(sock: u64, entry: Option<*mut SockInfo>, tgid: u32) -> Option<*const SockInfo> {
    match entry {
        Some(info) => {
            // SAFETY: an LRU entry written in place; a racing writer (another CPU, or userspace
            // setting a cap) could at worst leave the other process as owner, and the idle
            // sweep in userspace covers a lost close.
            unsafe {
                if (*info).owner_tgid != tgid {
                    (*info).owner_tgid = tgid;
                }
            }
            Some(info)
        }
        None => {
            let _ = SOCKS.insert(sock, SockInfo::new(ConnTuple::UNKNOWN, tgid), 0);
            None
        }
    }
}

fn emit(event: &agent_common::DataEvent, captured: u32) {
    let mut payload_len = captured as usize;
    if payload_len > MAX_CAPTURE {
        payload_len = MAX_CAPTURE;
    }
    let len = core::mem::size_of::<DataEventHeader>() + payload_len;
    // SAFETY: `len` never exceeds the header plus MAX_CAPTURE, inside the scratch record.
    let bytes = unsafe { core::slice::from_raw_parts(event as *const _ as *const u8, len) };
    if EVENTS
        .output::<[u8]>(bytes, wakeup_flags(len as u32))
        .is_ok()
    {
        count(Counter::DataEvents);
    } else {
        count(Counter::RingBufferFull);
    }
}

/// Copy `want` (≤ MAX_CAPTURE) bytes from a user buffer; returns the bytes copied.
fn copy_buffer(payload: &mut [u8; MAX_CAPTURE * 2], src: u64, want: u32) -> u32 {
    let mut n = want as usize;
    if n > MAX_CAPTURE {
        n = MAX_CAPTURE;
    }
    if n == 0 {
        return 0;
    }
    // SAFETY: destination is `payload`, n ≤ MAX_CAPTURE < its length.
    let rc = unsafe { bpf_probe_read_user(payload.as_mut_ptr().cast(), n as u32, src as *const _) };
    if rc != 0 {
        count(Counter::CopyFailed);
        return 0;
    }
    n as u32
}

/// Iovec entries fetched with one user read before the loop. Each user read pays a fixed toll
/// (access checks, user-access toggling), and most vectored writes have two or three entries.
const PREFETCHED_IOVECS: u32 = 4;

/// State of an iovec copy, shared with the `bpf_loop` callback.
#[repr(C)]
struct IovecCopy {
    payload: *mut u8,
    iov: u64,
    iovcnt: u32,
    want: u32,
    off: u32,
    failed: u32,
    /// The first `prefetched` entries as (base, len) pairs.
    entries: [[u64; 2]; PREFETCHED_IOVECS as usize],
    prefetched: u32,
    /// No further entry is begun once this many bytes are in.
    whole_buffers: u32,
}

/// Copy up to `want` bytes spread over a user iovec array, in order, beginning no entry once
/// `whole_buffers` bytes are in (a decoder that needs only a message's head, which nginx for
/// one writes as an entry of its own, is spared reading the body's). The loop runs in `bpf_loop`
/// so the verifier checks its body once, whatever the number of entries.
fn copy_iovecs(
    payload: &mut [u8; MAX_CAPTURE * 2],
    iov: u64,
    iovcnt: u32,
    want: u32,
    whole_buffers: u32,
) -> u32 {
    // The entries are filled by the read below, never zeroed first: zeroing them (with the
    // fields around them) compiled to a byte-at-a-time loop of some 300 instructions.
    let mut entries = MaybeUninit::<[[u64; 2]; PREFETCHED_IOVECS as usize]>::uninit();
    // A fixed-size read, so that the verifier sees every entry written. It may read past a
    // shorter array, harmlessly; a fault (an array ending at an unmapped page) zeroes them all
    // and every entry is then read alone.
    // SAFETY: `entries` is exactly PREFETCHED_IOVECS × 16 bytes.
    let rc = unsafe {
        bpf_probe_read_user(
            entries.as_mut_ptr().cast(),
            PREFETCHED_IOVECS * 16,
            iov as *const _,
        )
    };
    let mut prefetched = 0;
    if rc == 0 {
        prefetched = if iovcnt < PREFETCHED_IOVECS {
            iovcnt
        } else {
            PREFETCHED_IOVECS
        };
    }
    let mut state = IovecCopy {
        payload: payload.as_mut_ptr(),
        iov,
        iovcnt,
        want,
        off: 0,
        failed: 0,
        // SAFETY: the helper wrote all of it, the user's bytes or (on a fault) zeroes.
        entries: unsafe { entries.assume_init() },
        prefetched,
        whole_buffers,
    };
    // The prefetched entries are copied in line; `bpf_loop` (a helper call, and an indirect
    // call per entry) takes over only for longer vectors.
    let mut stopped = false;
    for index in 0..PREFETCHED_IOVECS {
        if copy_entry(&mut state, index as u64) {
            stopped = true;
            break;
        }
    }
    if !stopped {
        // SAFETY: the callback only touches `state`, which outlives the call.
        unsafe {
            bpf_loop(
                (MAX_IOVECS as u32) - PREFETCHED_IOVECS,
                copy_one_iovec as *mut _,
                (&raw mut state).cast(),
                0,
            )
        };
    }
    if state.failed != 0 {
        count(Counter::CopyFailed);
    }
    if iovcnt as usize > MAX_IOVECS && state.off < want {
        count(Counter::IovecsTruncated);
    }
    let mut off = state.off as usize;
    if off > MAX_CAPTURE {
        off = MAX_CAPTURE;
    }
    off as u32
}

/// The entries after the prefetched ones, as a `bpf_loop` callback; returns 1 to stop.
extern "C" fn copy_one_iovec(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the `IovecCopy` on the caller's stack.
    let state = unsafe { &mut *ctx.cast::<IovecCopy>() };
    i64::from(copy_entry(state, index + PREFETCHED_IOVECS as u64))
}

/// Copy iovec entry `index`; true when the copy is over (all entries, enough bytes, or a
/// fault).
#[inline(always)]
fn copy_entry(state: &mut IovecCopy, index: u64) -> bool {
    if index >= state.iovcnt as u64 || state.off >= state.want || state.off >= state.whole_buffers {
        return true;
    }
    let [base, len] = if index < state.prefetched as u64 {
        state.entries[(index & (PREFETCHED_IOVECS as u64 - 1)) as usize]
    } else {
        match read_user_pair(state.iov + index * 16) {
            Ok(entry) => entry,
            Err(_) => {
                state.failed = 1;
                return true;
            }
        }
    };
    let mut n = (state.want - state.off) as usize;
    if (len as usize) < n {
        n = len as usize;
    }
    if n > MAX_CAPTURE {
        n = MAX_CAPTURE;
    }
    if n == 0 {
        return false;
    }
    // Read as the verifier sees it: the compiler knows `off < want ≤ MAX_CAPTURE` and would
    // drop the mask, which is the verifier's only proof that the copy stays in bounds.
    // SAFETY: a plain field of `state`.
    let off = unsafe { core::ptr::read_volatile(&raw const state.off) };
    let at = (off as usize) & (MAX_CAPTURE - 1);
    // SAFETY: at < MAX_CAPTURE and n ≤ MAX_CAPTURE keep the copy inside the payload array,
    // which is 2 × MAX_CAPTURE long.
    let rc =
        unsafe { bpf_probe_read_user(state.payload.add(at).cast(), n as u32, base as *const _) };
    if rc != 0 {
        state.failed = 1;
        return true;
    }
    state.off += n as u32;
    false
}

/// Two adjacent user words (an iovec entry, a msghdr's iov pointer and count) in one read.
fn read_user_pair(addr: u64) -> Result<[u64; 2], i64> {
    // SAFETY: bpf_probe_read_user faults safely on bad addresses.
    unsafe { aya_ebpf::helpers::bpf_probe_read_user(addr as *const [u64; 2]) }.map_err(i64::from)
}
