//! Connection identity and life cycle: handshakes give the 4-tuple and the role, close() ends
//! a traced socket fd.

use agent_common::{
    AF_INET, AF_INET6, CloseEvent, ConnTuple, Counter, EventKind, IPPROTO_TCP, Role,
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    programs::TracePointContext,
};

use crate::maps::{
    EVENTS, FD_ROLES, SOCK_TUPLES, SOCKET_FDS, config, count, is_traced, wakeup_flags,
};

// TCP states as the kernel numbers them (include/net/tcp_states.h).
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_CLOSE: i32 = 7;

/// `sock:inet_sock_set_state`. Fires in softirq context for accepted connections, so no process
/// filter applies here: it runs once per handshake and once per close, which is cheap.
pub fn try_state_change(ctx: &TracePointContext) -> Result<(), i64> {
    let off = config().offsets;
    // SAFETY: offsets read from this kernel's tracefs format by userspace.
    let protocol: u16 = unsafe { ctx.read_at(off.state_protocol as usize) }.map_err(i64::from)?;
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let sk: u64 = unsafe { ctx.read_at(off.state_skaddr as usize) }.map_err(i64::from)?;
    let new: i32 = unsafe { ctx.read_at(off.state_newstate as usize) }.map_err(i64::from)?;
    if new == TCP_CLOSE {
        let _ = SOCK_TUPLES.remove(sk);
        return Ok(());
    }
    if new != TCP_ESTABLISHED {
        return Ok(());
    }
    let old: i32 = unsafe { ctx.read_at(off.state_oldstate as usize) }.map_err(i64::from)?;
    let role = match old {
        TCP_SYN_SENT => Role::Client,
        TCP_SYN_RECV => Role::Server,
        _ => Role::Unknown,
    };
    let family: u16 = unsafe { ctx.read_at(off.state_family as usize) }.map_err(i64::from)?;
    let mut tuple = ConnTuple {
        family,
        local_port: unsafe { ctx.read_at(off.state_sport as usize) }.map_err(i64::from)?,
        remote_port: unsafe { ctx.read_at(off.state_dport as usize) }.map_err(i64::from)?,
        role: role as u8,
        _pad: 0,
        local_addr: [0; 16],
        remote_addr: [0; 16],
    };
    if family == AF_INET {
        let s: [u8; 4] = unsafe { ctx.read_at(off.state_saddr as usize) }.map_err(i64::from)?;
        let d: [u8; 4] = unsafe { ctx.read_at(off.state_daddr as usize) }.map_err(i64::from)?;
        tuple.local_addr[..4].copy_from_slice(&s);
        tuple.remote_addr[..4].copy_from_slice(&d);
    } else if family == AF_INET6 {
        tuple.local_addr =
            unsafe { ctx.read_at(off.state_saddr_v6 as usize) }.map_err(i64::from)?;
        tuple.remote_addr =
            unsafe { ctx.read_at(off.state_daddr_v6 as usize) }.map_err(i64::from)?;
    } else {
        return Ok(());
    }
    let _ = SOCK_TUPLES.insert(sk, tuple, 0);
    Ok(())
}

/// Exit of accept/accept4 in a traced process (`ret`: the new fd): it is the server end.
pub fn accepted(ret: i64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if ret < 0 || !is_traced((pid_tgid >> 32) as u32) {
        return;
    }
    let _ = FD_ROLES.insert(fd_key(pid_tgid, ret as u64), Role::Server as u8, 0);
}

/// Entry of connect() in a traced process: this fd is the client end.
pub fn connecting(pid_tgid: u64, fd: u64) {
    let _ = FD_ROLES.insert(fd_key(pid_tgid, fd), Role::Client as u8, 0);
}

/// Entry of close() in a traced process: report the end of a socket fd that carried traced data.
pub fn closing(pid_tgid: u64, fd: u64) -> Result<(), i64> {
    let key = fd_key(pid_tgid, fd);
    // SAFETY: copied out before removal.
    let Some(sock) = (unsafe { SOCKET_FDS.get(key) }).copied() else {
        return Ok(());
    };
    let _ = SOCKET_FDS.remove(key);
    let _ = FD_ROLES.remove(key);
    let event = CloseEvent {
        kind: EventKind::Close as u8,
        _pad: [0; 3],
        fd: fd as i32,
        pid_tgid,
        sock,
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
    };
    if EVENTS.output::<CloseEvent>(&event, wakeup_flags()).is_err() {
        count(Counter::ControlEventsLost);
    }
    Ok(())
}

/// Key of the per-process fd maps: tgid in the high half, fd in the low one.
#[inline(always)]
pub fn fd_key(pid_tgid: u64, fd: u64) -> u64 {
    (pid_tgid & 0xffff_ffff_0000_0000) | (fd & 0xffff_ffff)
}
