//! Periscope's kernel programs. Each program is a thin entry point that calls a `try_` function
//! returning `Result`; errors are dropped there because a tracepoint cannot report them.
#![no_std]
#![no_main]
// The one atomic add (see `maps::traced_pids_changed`).
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod io;
mod maps;
mod process;
mod record;
mod sockets;
mod syscalls;
mod tls;

use agent_common::Direction;
use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint, uprobe, uretprobe},
    programs::{ProbeContext, RawTracePointContext, RetProbeContext, TracePointContext},
};

/// `sock:sock_send_length`: the data path, outgoing.
#[tracepoint]
pub fn sock_send(ctx: TracePointContext) -> u32 {
    let _ = io::try_socket_io(&ctx, Direction::Egress);
    0
}

/// `sock:sock_recv_length`: the data path, incoming.
#[tracepoint]
pub fn sock_recv(ctx: TracePointContext) -> u32 {
    let _ = io::try_socket_io(&ctx, Direction::Ingress);
    0
}

/// `sock_send_length` as a raw tracepoint: the data path, outgoing, when the kernel's BTF
/// locates the socket's fields (else `sock_send`).
#[raw_tracepoint]
pub fn sock_send_raw(ctx: RawTracePointContext) -> i32 {
    let _ = io::try_socket_io_raw(&ctx, Direction::Egress);
    0
}

/// `sock_recv_length` as a raw tracepoint: the data path, incoming.
#[raw_tracepoint]
pub fn sock_recv_raw(ctx: RawTracePointContext) -> i32 {
    let _ = io::try_socket_io_raw(&ctx, Direction::Ingress);
    0
}

/// `sock:inet_sock_set_state`: connection set-up and end.
#[tracepoint]
pub fn sock_state(ctx: TracePointContext) -> u32 {
    let _ = sockets::try_state_change(&ctx);
    0
}

#[tracepoint]
pub fn process_exec(ctx: TracePointContext) -> u32 {
    let _ = process::try_exec(&ctx);
    0
}

#[tracepoint]
pub fn process_exit(ctx: TracePointContext) -> u32 {
    let _ = process::try_exit(&ctx);
    0
}

#[tracepoint]
pub fn thread_wakeup(ctx: TracePointContext) -> u32 {
    let _ = process::try_wakeup(&ctx);
    0
}

#[tracepoint]
pub fn process_fork(ctx: TracePointContext) -> u32 {
    let _ = process::try_fork(&ctx);
    0
}

macro_rules! tls_probes {
    ($enter:ident, $ret:ident, $direction:ident, $ex:expr) => {
        #[uprobe]
        pub fn $enter(ctx: ProbeContext) -> u32 {
            let _ = tls::try_enter(&ctx, Direction::$direction, $ex);
            0
        }

        #[uretprobe]
        pub fn $ret(ctx: RetProbeContext) -> u32 {
            let _ = tls::try_return(&ctx, $ex);
            0
        }
    };
}

tls_probes!(ssl_read_enter, ssl_read_return, Ingress, false);
tls_probes!(ssl_read_ex_enter, ssl_read_ex_return, Ingress, true);
tls_probes!(ssl_write_enter, ssl_write_return, Egress, false);
tls_probes!(ssl_write_ex_enter, ssl_write_ex_return, Egress, true);

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The probe-reading helpers are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
