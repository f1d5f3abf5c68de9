//! Which syscall the current thread is in, read from the registers it saved on entry.
//!
//! No syscall tracepoint runs at all. `sock:sock_{send,recv}_length` fire inside every socket
//! read and write, after the bytes moved, and the syscall's number and arguments are still in the
//! thread's saved user registers. An enabled syscall tracepoint, even one whose program returns
//! at once, puts every syscall of every process on the host on the kernel's slow path.

use agent_common::{Direction, IoSyscall, SYSCALL_KINDS_LEN, SYSCALL_NOT_DATA};
use aya_ebpf::helpers::generated::{bpf_get_current_task_btf, bpf_task_pt_regs};

use crate::{io::Layout, maps::SYSCALL_KINDS};

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
