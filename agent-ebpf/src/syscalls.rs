//! Which syscall the current thread is in, read from the registers it saved on entry; and the
//! few syscall tracepoints that still run: close and connect at entry, accept at exit.
//!
//! The data path has no syscall tracepoint of its own. `sock:sock_{send,recv}_length` fire
//! inside every socket read and write, after the bytes moved, and the syscall's number and
//! arguments are still in the thread's saved user registers. Watching entries and exits as
//! well cost every syscall on the host a program run, and every traced read or write two more.

use agent_common::{
    Direction, IoSyscall, SYSCALL_ENTER_ARG0, SYSCALL_EXIT_RET, SYSCALL_KINDS_LEN, SYSCALL_NOT_DATA,
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    },
    programs::TracePointContext,
};

use crate::{
    io::Layout,
    maps::{SYSCALL_KINDS, is_traced},
    sockets,
};

/// A data syscall as the current thread made it.
pub struct DataSyscall {
    pub syscall: IoSyscall,
    pub direction: Direction,
    pub layout: Layout,
    /// The first three arguments.
    pub args: [u64; 3],
}

/// Where `struct pt_regs` keeps the syscall number, the first three arguments and the mode
/// register, for the architecture the programs are built for (aya-build sets
/// `bpf_target_arch` from the agent's target).
#[cfg(not(bpf_target_arch = "aarch64"))]
mod regs {
    /// x86-64: `orig_ax`; di, si, dx; `cs`, which is `__USER_CS` for a native 64-bit syscall.
    pub const NR: usize = 120;
    pub const ARGS: [usize; 3] = [112, 104, 96];
    pub const MODE: usize = 136;
    pub const MODE_MASK: u64 = 0xffff;
    pub const MODE_NATIVE: u64 = 0x33;
}

#[cfg(bpf_target_arch = "aarch64")]
mod regs {
    /// arm64: `syscallno` (32 bits); x0..x2, which hold the arguments until the syscall
    /// returns; `pstate`, whose `PSR_MODE32_BIT` marks an AArch32 task.
    pub const NR: usize = 280;
    pub const ARGS: [usize; 3] = [0, 8, 16];
    pub const MODE: usize = 264;
    pub const MODE_MASK: u64 = 0x10;
    pub const MODE_NATIVE: u64 = 0;
}

/// The data syscall the current thread is inside, if it is one we decode.
#[inline(always)]
pub fn current_data_syscall() -> Option<DataSyscall> {
    // SAFETY: both helpers only look at the current task. The verifier knows the result as a
    // `struct pt_regs` pointer: loads from it at these fixed offsets are checked against its
    // type and fault safely.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u8;
    let load = |offset: usize| unsafe { core::ptr::read(regs.add(offset) as *const u64) };
    if load(regs::MODE) & regs::MODE_MASK != regs::MODE_NATIVE {
        // A compat task numbers its syscalls differently: its number would name another call.
        return None;
    }
    let (syscall, direction, layout) = io_shape(kind_of(load(regs::NR) as u32))?;
    let args = [
        load(regs::ARGS[0]),
        load(regs::ARGS[1]),
        match layout {
            Layout::Iovec => load(regs::ARGS[2]),
            _ => 0,
        },
    ];
    Some(DataSyscall {
        syscall,
        direction,
        layout,
        args,
    })
}

/// What a syscall number means to us (`SYSCALL_NOT_DATA` for most).
#[inline(always)]
fn kind_of(nr: u32) -> u8 {
    if nr >= SYSCALL_KINDS_LEN {
        return SYSCALL_NOT_DATA;
    }
    SYSCALL_KINDS.get(nr).copied().unwrap_or(SYSCALL_NOT_DATA)
}

/// The data syscalls: which one, which way the bytes go, where they are.
#[inline(always)]
fn io_shape(kind: u8) -> Option<(IoSyscall, Direction, Layout)> {
    use Direction::{Egress, Ingress};
    Some(match kind {
        k if k == IoSyscall::Read as u8 => (IoSyscall::Read, Ingress, Layout::Buffer),
        k if k == IoSyscall::RecvFrom as u8 => (IoSyscall::RecvFrom, Ingress, Layout::Buffer),
        k if k == IoSyscall::Readv as u8 => (IoSyscall::Readv, Ingress, Layout::Iovec),
        k if k == IoSyscall::RecvMsg as u8 => (IoSyscall::RecvMsg, Ingress, Layout::MsgHdr),
        k if k == IoSyscall::Write as u8 => (IoSyscall::Write, Egress, Layout::Buffer),
        k if k == IoSyscall::SendTo as u8 => (IoSyscall::SendTo, Egress, Layout::Buffer),
        k if k == IoSyscall::Writev as u8 => (IoSyscall::Writev, Egress, Layout::Iovec),
        k if k == IoSyscall::SendMsg as u8 => (IoSyscall::SendMsg, Egress, Layout::MsgHdr),
        k if k == IoSyscall::SendFile as u8 => (IoSyscall::SendFile, Egress, Layout::Counted),
        _ => return None,
    })
}

/// The first argument of a `syscalls:sys_enter_*` record, for a traced process only.
#[inline(always)]
fn traced_arg0(ctx: &TracePointContext) -> Option<(u64, u64)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_traced((pid_tgid >> 32) as u32) {
        return None;
    }
    // SAFETY: the syscall entry record layout, checked by userspace.
    let arg0: u64 = unsafe { ctx.read_at(SYSCALL_ENTER_ARG0) }.ok()?;
    Some((pid_tgid, arg0))
}

/// `syscalls:sys_enter_close`.
pub fn try_enter_close(ctx: &TracePointContext) -> Result<(), i64> {
    match traced_arg0(ctx) {
        Some((pid_tgid, fd)) => sockets::closing(pid_tgid, fd),
        None => Ok(()),
    }
}

/// `syscalls:sys_enter_connect`.
pub fn try_enter_connect(ctx: &TracePointContext) -> Result<(), i64> {
    if let Some((pid_tgid, fd)) = traced_arg0(ctx) {
        sockets::connecting(pid_tgid, fd);
    }
    Ok(())
}

/// `syscalls:sys_exit_accept` / `sys_exit_accept4`.
pub fn try_exit_accept(ctx: &TracePointContext) -> Result<(), i64> {
    // SAFETY: the syscall exit record layout, checked by userspace.
    let ret: i64 = unsafe { ctx.read_at(SYSCALL_EXIT_RET) }.map_err(i64::from)?;
    sockets::accepted(ret);
    Ok(())
}
