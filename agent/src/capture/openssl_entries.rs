//! Where in libssl the TLS probes cost least.
//!
//! `SSL_read`, `SSL_write` and their `_ex` forms begin with `sub $n,%rsp`, an instruction uprobes
//! cannot emulate: every hit then also single-steps a copy of it, which measured 10.4 µs a hit on
//! the test VM against 0.7 µs for a first instruction the kernel emulates (`push`, `call`). All
//! four are thin wrappers around two internal functions (OpenSSL's `ssl_read_internal` and
//! `ssl_write_internal`) that take the `_ex` arguments and begin with `push`. Those have no
//! exported symbol, so they are found in the wrappers' code: `SSL_read_ex` is
//! `sub $n,%rsp; call <internal>`, and `SSL_read` must call the same function within its first
//! bytes. A library laid out otherwise keeps the probes on the exported functions.

use std::path::Path;

use anyhow::{Context as _, bail};
use object::{Architecture, Object as _, ObjectSection as _, ObjectSymbol as _};

/// File offsets of the internal functions, where uprobes attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InternalEntries {
    pub read: u64,
    pub write: u64,
}

/// How far into the plain wrapper the shared call is looked for.
const WRAPPER_SCAN_BYTES: usize = 64;

/// The internal read and write functions of the libssl at `path` (x86-64 only).
pub fn internal_entries(path: &Path) -> anyhow::Result<InternalEntries> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let file = object::File::parse(&*data).context("parsing the library")?;
    if file.architecture() != Architecture::X86_64 {
        bail!("not an x86-64 library");
    }
    Ok(InternalEntries {
        read: shared_callee(&file, "SSL_read_ex", "SSL_read")?,
        write: shared_callee(&file, "SSL_write_ex", "SSL_write")?,
    })
}

/// The file offset of the function `ex` calls first, provided `plain` calls it too.
fn shared_callee(file: &object::File, ex: &str, plain: &str) -> anyhow::Result<u64> {
    let (ex_at, ex_code) = function_code(file, ex)?;
    let target = wrapper_callee(ex_code, ex_at)
        .with_context(|| format!("{ex} does not start as a wrapper (sub, call)"))?;
    let (plain_at, plain_code) = function_code(file, plain)?;
    let scanned = &plain_code[..plain_code.len().min(WRAPPER_SCAN_BYTES)];
    if !calls_in(scanned, plain_at).any(|t| t == target) {
        bail!("{plain} does not call the function {ex} wraps ({target:#x})");
    }
    file_offset(file, target).with_context(|| format!("{target:#x} lies in no file section"))
}

/// A function's address and its code, to the end of its section.
fn function_code<'d>(file: &object::File<'d>, name: &str) -> anyhow::Result<(u64, &'d [u8])> {
    let symbol = file
        .dynamic_symbols()
        .find(|s| s.name() == Ok(name))
        .with_context(|| format!("no symbol {name}"))?;
    let section = symbol
        .section_index()
        .and_then(|i| file.section_by_index(i).ok())
        .with_context(|| format!("{name} is in no section"))?;
    let code = section
        .data()
        .ok()
        .and_then(|d| d.get(usize::try_from(symbol.address() - section.address()).ok()?..))
        .with_context(|| format!("{name}'s code is not in the file"))?;
    Ok((symbol.address(), code))
}

/// `[endbr64;] sub $imm8,%rsp; call rel32` at `at`: the call's target.
fn wrapper_callee(code: &[u8], at: u64) -> Option<u64> {
    const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];
    const SUB_RSP_IMM8: [u8; 3] = [0x48, 0x83, 0xec];
    let skip = if code.starts_with(&ENDBR64) { 4 } else { 0 };
    let rest = &code[skip..];
    if !rest.starts_with(&SUB_RSP_IMM8) {
        return None;
    }
    call_target(rest.get(4..)?, at + skip as u64 + 4)
}

/// `call rel32` at the start of `code`, which sits at `at`: its target.
fn call_target(code: &[u8], at: u64) -> Option<u64> {
    const CALL_REL32: u8 = 0xe8;
    let (&opcode, rest) = code.split_first()?;
    if opcode != CALL_REL32 {
        return None;
    }
    let rel = i32::from_le_bytes(rest.get(..4)?.try_into().ok()?);
    Some((at + 5).wrapping_add_signed(i64::from(rel)))
}

/// Targets of every byte sequence in `code` that reads as `call rel32`. Some are not
/// instructions at all; the caller only asks whether a known target is among them.
fn calls_in(code: &[u8], at: u64) -> impl Iterator<Item = u64> + '_ {
    (0..code.len()).filter_map(move |i| call_target(&code[i..], at + i as u64))
}

/// Where the code at virtual address `address` lies in the file: uprobes attach by file offset.
fn file_offset(file: &object::File, address: u64) -> Option<u64> {
    file.sections().find_map(|section| {
        let (offset, size) = section.file_range()?;
        let inside = address.checked_sub(section.address())?;
        (inside < size.min(section.size())).then_some(offset + inside)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_wrappers_call() {
        // OpenSSL 3.0's SSL_read_ex, as Debian builds it.
        let code = [
            0x48, 0x83, 0xec, 0x08, 0xe8, 0xc7, 0xfd, 0xff, 0xff, 0x31, 0xd2,
        ];
        assert_eq!(wrapper_callee(&code, 0x354c0), Some(0x35290));
        let mut with_endbr = vec![0xf3, 0x0f, 0x1e, 0xfa];
        with_endbr.extend_from_slice(&code);
        assert_eq!(wrapper_callee(&with_endbr, 0x354bc), Some(0x35290));
        // Not a wrapper: a push first, or a sub without a call after it.
        assert_eq!(wrapper_callee(&[0x41, 0x55, 0xe8, 0, 0, 0, 0], 0), None);
        assert_eq!(
            wrapper_callee(&[0x48, 0x83, 0xec, 0x18, 0x64, 0x48, 0x8b], 0),
            None
        );
        assert_eq!(
            wrapper_callee(&[0x48, 0x83, 0xec, 0x08, 0xe8, 0xc7], 0),
            None
        );
    }

    #[test]
    fn finds_a_call_inside_the_plain_wrapper() {
        // OpenSSL 3.0's SSL_read up to its call: sub, canary, checks, then call.
        let code = [
            0x48, 0x83, 0xec, 0x18, 0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0x00, 0x00, 0x00, 0x48,
            0x89, 0x44, 0x24, 0x08, 0x31, 0xc0, 0x85, 0xd2, 0x78, 0x2f, 0x48, 0x89, 0xe1, 0x48,
            0x63, 0xd2, 0xe8, 0x3d, 0xfe, 0xff, 0xff,
        ];
        assert!(calls_in(&code, 0x35430).any(|t| t == 0x35290));
        assert!(!calls_in(&code[..30], 0x35430).any(|t| t == 0x35290));
    }

    /// The system's libssl, where the test machine has one (the TLS end-to-end tests need it).
    #[test]
    fn the_system_libssl_has_internal_entries_that_do_not_start_with_a_sub() {
        let Some(path) = [
            "/usr/lib/x86_64-linux-gnu/libssl.so.3",
            "/usr/lib64/libssl.so.3",
        ]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists()) else {
            eprintln!("SKIP: no system libssl.so.3 on this machine");
            return;
        };
        let entries = internal_entries(path).unwrap();
        assert_ne!(entries.read, entries.write);
        let data = std::fs::read(path).unwrap();
        for at in [entries.read, entries.write] {
            let first = &data[at as usize..at as usize + 3];
            assert_ne!(
                first,
                [0x48, 0x83, 0xec],
                "{at:#x} starts with a sub: no gain"
            );
        }
    }
}
