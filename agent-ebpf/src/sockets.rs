//! Connection identity and life cycle, from `sock:inet_sock_set_state`: the handshake gives the
//! 4-tuple and the role, and reaching `TCP_CLOSE` ends the connection. Watching close() and
//! accept()/connect() instead would need syscall tracepoints, which put every syscall of every
//! process on the host on the kernel's slow path.
//!
//! The program runs for every TCP connection of the host, mostly in softirq context, where the
//! process owning the socket is unknown. A client's move to `SYN_SENT` is the exception: it
//! happens inside `connect()`, so with a selection only the selected processes' client sockets
//! are entered in `SOCKS`, and the host's other outgoing connections skip the table (an insert
//! into it costs about 300 ns).

use agent_common::{
    AF_INET, CloseEvent, ConnTuple, Counter, EventKind, Role, SockInfo, sock_state_record as at,
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    programs::TracePointContext,
};

use crate::{
    io::{copy_tuple, is_tcp_over_ip},
    maps::{EVENTS, SOCKS, config, count, is_traced, wakeup_flags},
    record::field,
};

// TCP states as the kernel numbers them (include/net/tcp_states.h).
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_CLOSE: i32 = 7;

/// `sock:inet_sock_set_state`, a few times per connection.
pub fn try_state_change(ctx: &TracePointContext) -> Result<(), i64> {
    let family: u16 = field(ctx, at::FAMILY);
    if !is_tcp_over_ip(family, field(ctx, at::PROTOCOL)) {
        return Ok(());
    }
    let sk: u64 = field(ctx, at::SKADDR);
    let new: i32 = field(ctx, at::NEWSTATE);
    if new == TCP_CLOSE {
        closed(sk);
        return Ok(());
    }
    let selecting = config!(filter_pids) != 0;
    if new == TCP_SYN_SENT {
        if selecting && is_traced((bpf_get_current_pid_tgid() >> 32) as u32) {
            // The tuple follows at ESTABLISHED: the local port may not be chosen yet.
            enter(sk, SockInfo::new(ConnTuple::UNKNOWN, 0));
        }
        return Ok(());
    }
    if new != TCP_ESTABLISHED {
        return Ok(());
    }
    let old: i32 = field(ctx, at::OLDSTATE);
    let role = match old {
        TCP_SYN_SENT => Role::Client,
        TCP_SYN_RECV => Role::Server,
        _ => Role::Unknown,
    };
    let mut tuple = ConnTuple {
        family,
        local_port: field(ctx, at::SPORT),
        remote_port: field(ctx, at::DPORT),
        role: role as u8,
        _pad: 0,
        local_addr: [0; 16],
        remote_addr: [0; 16],
    };
    if family == AF_INET {
        // Whole words: the verifier takes a load from the record only at a fixed offset from
        // its start, and byte arrays compile to a copy loop through a moving pointer.
        let s: u32 = field(ctx, at::SADDR);
        let d: u32 = field(ctx, at::DADDR);
        tuple.local_addr[..4].copy_from_slice(&s.to_ne_bytes());
        tuple.remote_addr[..4].copy_from_slice(&d.to_ne_bytes());
    } else {
        tuple.local_addr = v6_address(ctx, at::SADDR_V6);
        tuple.remote_addr = v6_address(ctx, at::DADDR_V6);
    }
    if selecting && role == Role::Client {
        // Entered at SYN_SENT if its process is selected; no bytes have moved on it yet.
        if let Some(info) = SOCKS.get_ptr_mut(sk) {
            // SAFETY: a map value just looked up, written in place.
            copy_tuple(unsafe { &mut (*info).tuple }, &tuple);
        }
        return Ok(());
    }
    enter(sk, SockInfo::new(tuple, 0));
    Ok(())
}

/// Enter a TCP socket over IPv4 or IPv6 in `SOCKS` (the data path takes an entry as proof of
/// both).
#[inline(always)]
fn enter(sk: u64, info: SockInfo) {
    if SOCKS.insert(sk, info, 0).is_ok() {
        count(Counter::SocketsEntered);
    }
}

/// A 16-byte address field of the record, as two 8-byte loads.
#[inline(always)]
fn v6_address(ctx: &TracePointContext, offset: usize) -> [u8; 16] {
    let high: u64 = field(ctx, offset);
    let low: u64 = field(ctx, offset + 8);
    let mut address = [0; 16];
    address[..8].copy_from_slice(&high.to_ne_bytes());
    address[8..].copy_from_slice(&low.to_ne_bytes());
    address
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
