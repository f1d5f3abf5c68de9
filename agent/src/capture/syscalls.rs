//! This architecture's syscall numbers, for the kernel's data path: it reads the current
//! syscall's number from the registers the thread saved on entry, and userspace tells it which
//! numbers are the data syscalls. (The register layout is compiled into the kernel programs,
//! which are built for the agent's architecture.)

use agent_common::{IoSyscall, SYSCALL_KINDS_LEN};

/// `(number, kind)` for every data syscall the kernel programs decode.
pub fn table() -> &'static [(u32, u8)] {
    TABLE
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
