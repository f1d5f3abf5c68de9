//! Connection identity and life cycle, from `sock:inet_sock_set_state`: the handshake gives the
//! 4-tuple and the role, and reaching `TCP_CLOSE` ends the connection. Watching close() and
//! accept()/connect() instead would need syscall tracepoints, which put every syscall of every
//! process on the host on the kernel's slow path.

use agent_common::{
    AF_INET, AF_INET6, CloseEvent, ConnTuple, Counter, EventKind, IPPROTO_TCP, Role,
};
use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::TracePointContext};

use agent_common::SockInfo;

use crate::maps::{EVENTS, SOCKS, config, count, wakeup_flags};

// TCP states as the kernel numbers them (include/net/tcp_states.h).
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_CLOSE: i32 = 7;

/// `sock:inet_sock_set_state`. Fires in softirq context for accepted connections and for most
/// closes, so no process filter applies here: it runs a few times per connection, which is cheap.
pub fn try_state_change(ctx: &TracePointContext) -> Result<(), i64> {
    let off = config!(offsets);
    // SAFETY: offsets read from this kernel's tracefs format by userspace.
    let protocol: u16 = unsafe { ctx.read_at(off.state_protocol as usize) }.map_err(i64::from)?;
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let sk: u64 = unsafe { ctx.read_at(off.state_skaddr as usize) }.map_err(i64::from)?;
    let new: i32 = unsafe { ctx.read_at(off.state_newstate as usize) }.map_err(i64::from)?;
    if new == TCP_CLOSE {
        closed(sk);
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
    let _ = SOCKS.insert(sk, SockInfo::new(tuple, 0), 0);
    Ok(())
}

/// The socket reached `TCP_CLOSE`: after the last byte either side could read, whether the
/// process closed it, was reset, or exited. Report it if traced data went through it.
fn closed(sk: u64) {
    // SAFETY: copied out before removal.
    let Some(info) = (unsafe { SOCKS.get(sk) }).copied() else {
        return;
    };
    let _ = SOCKS.remove(sk);
    if info.owner_tgid == 0 {
        return;
    }
    let event = CloseEvent {
        kind: EventKind::Close as u8,
        _pad: [0; 3],
        tgid: info.owner_tgid,
        sock: sk,
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
    };
    if EVENTS
        .output::<CloseEvent>(&event, wakeup_flags(size_of::<CloseEvent>() as u32))
        .is_err()
    {
        count(Counter::ControlEventsLost);
    }
}
