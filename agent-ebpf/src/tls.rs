//! TLS plaintext: uprobes on OpenSSL's SSL_read/SSL_write (and their `_ex` forms) copy the bytes
//! the application hands to or gets from the library. The socket an SSL object talks over is
//! learned from the socket reads and writes made inside those calls (see `io::try_socket_io`), so the
//! plaintext joins the same connection as its ciphertext would have.

use agent_common::{Counter, DATA_FLAG_TLS, Direction, TLS_SYSCALL};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};

use crate::{
    io::{Payload, emit_payload},
    maps::{SOCKS, TLS_EVER_ENTERED, count, is_raised, is_traced, raise},
};

/// An SSL call between its entry and its return, keyed by pid_tgid.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsCall {
    pub ssl: u64,
    pub buf: u64,
    /// `size_t *` that receives the byte count (`_ex` forms), else 0.
    pub count_out: u64,
    /// Socket used inside this call, if a syscall happened.
    pub sock: u64,
    pub enter_ns: u64,
    pub fd: i32,
    pub direction: u8,
    pub _pad: [u8; 3],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct SslKey {
    pub tgid: u32,
    pub _pad: u32,
    pub ssl: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct SslSocket {
    pub sock: u64,
    pub fd: i32,
    pub _pad: u32,
}

#[map]
static TLS_CALLS: LruHashMap<u64, TlsCall> = LruHashMap::with_max_entries(16384, 0);

/// Which socket each SSL object was last seen using: SSL_read can return buffered plaintext
/// without any syscall.
#[map]
static SSL_SOCKETS: LruHashMap<SslKey, SslSocket> = LruHashMap::with_max_entries(65536, 0);

pub fn try_enter(ctx: &ProbeContext, direction: Direction, ex: bool) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_traced((pid_tgid >> 32) as u32) {
        return Ok(());
    }
    let ssl: u64 = ctx.arg(0).ok_or(1i64)?;
    let buf: u64 = ctx.arg(1).ok_or(1i64)?;
    let count_out: u64 = if ex { ctx.arg(3).ok_or(1i64)? } else { 0 };
    let call = TlsCall {
        ssl,
        buf,
        count_out,
        sock: 0,
        enter_ns: unsafe { bpf_ktime_get_ns() },
        fd: -1,
        direction: direction as u8,
        _pad: [0; 3],
    };
    raise(&TLS_EVER_ENTERED);
    let _ = TLS_CALLS.insert(pid_tgid, call, 0);
    Ok(())
}

pub fn try_return(ctx: &RetProbeContext, ex: bool) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: copied out before removal.
    let Some(call) = (unsafe { TLS_CALLS.get(pid_tgid) }).copied() else {
        return Ok(());
    };
    let _ = TLS_CALLS.remove(pid_tgid);
    // Both forms return an int: a byte count, or (the `_ex` forms and the internal functions
    // they wrap) a positive success with the count stored.
    let ret: i32 = ctx.ret();
    let moved: u64 = if ex {
        if ret <= 0 {
            return Ok(());
        }
        // SAFETY: user pointer given to the library; faults are reported, not taken.
        unsafe { aya_ebpf::helpers::bpf_probe_read_user(call.count_out as *const u64) }
            .map_err(i64::from)?
    } else if ret > 0 {
        ret as u64
    } else {
        return Ok(());
    };
    let key = SslKey {
        tgid: (pid_tgid >> 32) as u32,
        _pad: 0,
        ssl: call.ssl,
    };
    let (sock, fd) = if call.sock != 0 {
        (call.sock, call.fd)
    } else {
        match unsafe { SSL_SOCKETS.get(key) } {
            Some(s) => (s.sock, s.fd),
            None => {
                count(Counter::TlsUnattributed);
                return Ok(());
            }
        }
    };
    let total = if moved > u32::MAX as u64 {
        u32::MAX
    } else {
        moved as u32
    };
    emit_payload(&Payload {
        pid_tgid,
        sock,
        entry: SOCKS.get_ptr_mut(sock),
        fd,
        direction: call.direction,
        syscall: TLS_SYSCALL,
        flags: DATA_FLAG_TLS,
        enter_ns: call.enter_ns,
        exit_ns: unsafe { bpf_ktime_get_ns() },
        total,
        buf: call.buf,
        iov: 0,
        iovcnt: 0,
    });
    Ok(())
}

/// Called from the data path: if this thread is inside an SSL call, the bytes are
/// ciphertext of that SSL object's socket. Returns true when they must not be reported.
pub fn note_socket(pid_tgid: u64, sock: u64, fd: i32) -> bool {
    if !is_raised(&TLS_EVER_ENTERED) {
        return false;
    }
    let Some(call) = TLS_CALLS.get_ptr_mut(pid_tgid) else {
        return false;
    };
    // SAFETY: this thread's own entry in an LRU map, written in place.
    let ssl = unsafe {
        (*call).sock = sock;
        (*call).fd = fd;
        (*call).ssl
    };
    let key = SslKey {
        tgid: (pid_tgid >> 32) as u32,
        _pad: 0,
        ssl,
    };
    let _ = SSL_SOCKETS.insert(key, SslSocket { sock, fd, _pad: 0 }, 0);
    true
}
