//! Syscall entry through the raw `sys_enter` tracepoint, dispatched by syscall number; exits
//! through the per-syscall exit tracepoints of the few syscalls that need one.
//!
//! Raw `sys_enter` hands over the registers, unlike the per-syscall `syscalls:sys_enter_*`
//! tracepoints, which first build a perf record of the arguments for every event. That
//! bookkeeping cost more than the programs themselves, so the numbers we care about are looked
//! up in a small array filled by userspace for this architecture, and every other syscall
//! leaves at once.

use agent_common::{
    Direction, IoSyscall, SYSCALL_EXIT_RET, SYSCALL_KINDS_LEN, SyscallRegs, syscall_kind,
};
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    programs::{RawTracePointContext, TracePointContext},
};

use crate::{
    io::{self, Layout},
    maps::{SYSCALL_KINDS, config, is_traced},
    sockets,
};

/// What a syscall number means to us (`syscall_kind::NONE` for most).
#[inline(always)]
fn kind_of(nr: u64) -> u8 {
    if nr >= SYSCALL_KINDS_LEN as u64 {
        return syscall_kind::NONE;
    }
    SYSCALL_KINDS
        .get(nr as u32)
        .copied()
        .unwrap_or(syscall_kind::NONE)
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

/// One register of the saved user context.
#[inline(always)]
fn read_reg(regs: u64, offset: u16) -> Result<u64, i64> {
    // SAFETY: `regs` is the tracepoint's `struct pt_regs *`; the read faults safely.
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel((regs + offset as u64) as *const u64) }
        .map_err(i64::from)
}

/// Whether the syscall came from native code: a 32-bit compat task numbers its syscalls
/// differently, and its number would name some other call here.
#[inline(always)]
fn is_native(regs: u64, at: &SyscallRegs) -> bool {
    match read_reg(regs, at.mode) {
        Ok(mode) => (mode as u32) & at.mode_mask == at.mode_native,
        Err(_) => false,
    }
}

/// `raw_syscalls:sys_enter(struct pt_regs *regs, long id)`.
pub fn try_enter(ctx: &RawTracePointContext) -> Result<(), i64> {
    let nr: u64 = ctx.arg(1);
    let kind = kind_of(nr);
    if kind == syscall_kind::NONE {
        return Ok(());
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_traced((pid_tgid >> 32) as u32) {
        return Ok(());
    }
    let regs: u64 = ctx.arg(0);
    let at = config().regs;
    if !is_native(regs, &at) {
        return Ok(());
    }
    let arg0 = read_reg(regs, at.arg0)?;
    match kind {
        syscall_kind::CLOSE => sockets::closing(pid_tgid, arg0),
        syscall_kind::CONNECT => {
            sockets::connecting(pid_tgid, arg0);
            Ok(())
        }
        _ => match io_shape(kind) {
            Some((syscall, direction, layout)) => {
                let arg1 = read_reg(regs, at.arg1)?;
                let arg2 = match layout {
                    Layout::Iovec => read_reg(regs, at.arg2)?,
                    _ => 0,
                };
                io::enter(pid_tgid, syscall, direction, layout, [arg0, arg1, arg2])
            }
            None => Ok(()),
        },
    }
}

// Exits go through the per-syscall `syscalls:sys_exit_*` tracepoints of the data syscalls and
// accept only: a raw `sys_exit` would run for every syscall's exit on the host and need a
// register read just to learn which syscall it was. (They never fire for compat syscalls.)

/// `syscalls:sys_exit_{read,write,...}`.
pub fn try_exit_io(ctx: &TracePointContext) -> Result<(), i64> {
    // SAFETY: the syscall exit record layout, checked by userspace.
    let ret: i64 = unsafe { ctx.read_at(SYSCALL_EXIT_RET) }.map_err(i64::from)?;
    io::exit(ret)
}

/// `syscalls:sys_exit_accept` / `sys_exit_accept4`.
pub fn try_exit_accept(ctx: &TracePointContext) -> Result<(), i64> {
    // SAFETY: as above.
    let ret: i64 = unsafe { ctx.read_at(SYSCALL_EXIT_RET) }.map_err(i64::from)?;
    sockets::accepted(ret);
    Ok(())
}
