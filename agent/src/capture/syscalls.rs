//! This architecture's syscall numbers and register layout, for the kernel's data path: it reads
//! the current syscall's number and arguments from the registers the thread saved on entry, so
//! userspace tells it which numbers are data syscalls and where the registers are.

use agent_common::{IoSyscall, SYSCALL_KINDS_LEN, SyscallRegs};

/// `(number, kind)` for every data syscall the kernel programs decode.
pub fn table() -> &'static [(u32, u8)] {
    TABLE
}

/// Offsets in `struct pt_regs` of the syscall number, the first three arguments and the mode
/// register.
pub fn regs() -> SyscallRegs {
    REGS
}

const fn io(syscall: IoSyscall) -> u8 {
    syscall as u8
}

#[cfg(target_arch = "x86_64")]
const TABLE: &[(u32, u8)] = &[
    (0, io(IoSyscall::Read)),
    (1, io(IoSyscall::Write)),
    (19, io(IoSyscall::Readv)),
    (20, io(IoSyscall::Writev)),
    (40, io(IoSyscall::SendFile)),
    (44, io(IoSyscall::SendTo)),
    (45, io(IoSyscall::RecvFrom)),
    (46, io(IoSyscall::SendMsg)),
    (47, io(IoSyscall::RecvMsg)),
];

/// x86_64 `struct pt_regs`: `orig_ax` holds the number, di, si, dx the first arguments; a
/// native syscall comes from the 64-bit user code segment (`__USER_CS`).
#[cfg(target_arch = "x86_64")]
const REGS: SyscallRegs = SyscallRegs {
    nr: 120,
    arg0: 112,
    arg1: 104,
    arg2: 96,
    mode: 136,
    _pad: 0,
    mode_mask: 0xffff,
    mode_native: 0x33,
};

#[cfg(target_arch = "aarch64")]
const TABLE: &[(u32, u8)] = &[
    (63, io(IoSyscall::Read)),
    (64, io(IoSyscall::Write)),
    (65, io(IoSyscall::Readv)),
    (66, io(IoSyscall::Writev)),
    (71, io(IoSyscall::SendFile)),
    (206, io(IoSyscall::SendTo)),
    (207, io(IoSyscall::RecvFrom)),
    (211, io(IoSyscall::SendMsg)),
    (212, io(IoSyscall::RecvMsg)),
];

/// arm64 `struct pt_regs`: x0..x2 hold the first arguments until the syscall returns,
/// `syscallno` the number; AArch32 tasks have `PSR_MODE32_BIT` set in `pstate`.
#[cfg(target_arch = "aarch64")]
const REGS: SyscallRegs = SyscallRegs {
    nr: 280,
    arg0: 0,
    arg1: 8,
    arg2: 16,
    mode: 264,
    _pad: 0,
    mode_mask: 0x10,
    mode_native: 0,
};

// Every number must fit the kernel's lookup array.
const _: () = {
    let mut i = 0;
    while i < TABLE.len() {
        assert!(TABLE[i].0 < SYSCALL_KINDS_LEN);
        i += 1;
    }
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_data_syscall_is_mapped_once() {
        let kinds: Vec<u8> = table().iter().map(|(_, k)| *k).collect();
        for syscall in [
            IoSyscall::Read,
            IoSyscall::Write,
            IoSyscall::RecvFrom,
            IoSyscall::SendTo,
            IoSyscall::Readv,
            IoSyscall::Writev,
            IoSyscall::RecvMsg,
            IoSyscall::SendMsg,
            IoSyscall::SendFile,
        ] {
            assert_eq!(kinds.iter().filter(|k| **k == syscall as u8).count(), 1);
        }
        let mut numbers: Vec<u32> = table().iter().map(|(n, _)| *n).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), table().len());
    }

    /// The numbers agree with the C library's for this machine.
    #[test]
    fn numbers_match_libc() {
        let expected = [
            (libc::SYS_read, io(IoSyscall::Read)),
            (libc::SYS_write, io(IoSyscall::Write)),
            (libc::SYS_readv, io(IoSyscall::Readv)),
            (libc::SYS_writev, io(IoSyscall::Writev)),
            (libc::SYS_sendfile, io(IoSyscall::SendFile)),
            (libc::SYS_sendto, io(IoSyscall::SendTo)),
            (libc::SYS_recvfrom, io(IoSyscall::RecvFrom)),
            (libc::SYS_sendmsg, io(IoSyscall::SendMsg)),
            (libc::SYS_recvmsg, io(IoSyscall::RecvMsg)),
        ];
        for (nr, kind) in expected {
            assert!(
                table().contains(&(nr as u32, kind)),
                "syscall {nr} should map to kind {kind}"
            );
        }
    }
}
