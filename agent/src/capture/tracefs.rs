//! tracefs: where tracepoints live. Mounted on demand; tracepoint layouts read from their
//! `format` files so the kernel programs never guess an offset.

use std::{fs, path::Path};

use agent_common::{TracepointOffsets, sock_length_record, sock_state_record};
use anyhow::{Context as _, bail};

pub const TRACEFS: &str = "/sys/kernel/tracing";
const LEGACY_TRACEFS: &str = "/sys/kernel/debug/tracing";

/// Make sure tracefs is mounted, mounting it when the directory is empty. Returns its root.
pub fn ensure_mounted() -> anyhow::Result<&'static str> {
    if Path::new(TRACEFS).join("events").is_dir() {
        return Ok(TRACEFS);
    }
    if Path::new(LEGACY_TRACEFS).join("events").is_dir() {
        return Ok(LEGACY_TRACEFS);
    }
    let target = std::ffi::CString::new(TRACEFS)?;
    let fstype = std::ffi::CString::new("tracefs")?;
    let source = std::ffi::CString::new("nodev")?;
    // SAFETY: plain mount(2) with NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        bail!(
            "tracefs is not mounted at {TRACEFS} and mounting it failed ({err}); \
             run `mount -t tracefs nodev {TRACEFS}` as root, or give the agent CAP_SYS_ADMIN"
        );
    }
    log::info!("mounted tracefs at {TRACEFS}");
    Ok(TRACEFS)
}

/// Whether a tracepoint exists on this kernel.
pub fn has_tracepoint(root: &str, category: &str, name: &str) -> bool {
    Path::new(root)
        .join("events")
        .join(category)
        .join(name)
        .join("format")
        .is_file()
}

/// Byte offset of `field` in the tracepoint's record.
pub fn field_offset(root: &str, category: &str, name: &str, field: &str) -> anyhow::Result<u16> {
    let path = Path::new(root)
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse_field_offset(&text, field)
        .with_context(|| format!("field `{field}` of tracepoint {category}:{name}"))
}

/// Find `field:<type> <field>[...];\toffset:N;` in a tracefs format text.
fn parse_field_offset(format: &str, field: &str) -> anyhow::Result<u16> {
    for line in format.lines() {
        let Some(decl) = line.trim().strip_prefix("field:") else {
            continue;
        };
        let mut parts = decl.split(';');
        let declaration = parts.next().unwrap_or_default();
        let declared_name = declaration
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .next()
            .unwrap_or_default();
        let declared_name = declared_name.split('[').next().unwrap_or_default();
        if declared_name != field {
            continue;
        }
        for part in parts {
            if let Some(value) = part.trim().strip_prefix("offset:") {
                return Ok(value.trim().parse()?);
            }
        }
    }
    bail!("not found in the tracepoint format")
}

/// Offsets of every tracepoint field the kernel programs read.
pub fn read_offsets(root: &str) -> anyhow::Result<TracepointOffsets> {
    // The socket programs load these fields at fixed offsets: check them.
    let length_fields = [
        ("sk", sock_length_record::SK),
        ("family", sock_length_record::FAMILY),
        ("protocol", sock_length_record::PROTOCOL),
        ("ret", sock_length_record::RET),
        ("flags", sock_length_record::FLAGS),
    ];
    let state_fields = [
        ("skaddr", sock_state_record::SKADDR),
        ("oldstate", sock_state_record::OLDSTATE),
        ("newstate", sock_state_record::NEWSTATE),
        ("sport", sock_state_record::SPORT),
        ("dport", sock_state_record::DPORT),
        ("family", sock_state_record::FAMILY),
        ("protocol", sock_state_record::PROTOCOL),
        ("saddr", sock_state_record::SADDR),
        ("daddr", sock_state_record::DADDR),
        ("saddr_v6", sock_state_record::SADDR_V6),
        ("daddr_v6", sock_state_record::DADDR_V6),
    ];
    let fixed = [
        ("sock_send_length", &length_fields[..]),
        ("sock_recv_length", &length_fields[..]),
        ("inet_sock_set_state", &state_fields[..]),
    ];
    for (name, fields) in fixed {
        for &(field, expected) in fields {
            let at = field_offset(root, "sock", name, field)?;
            if usize::from(at) != expected {
                bail!(
                    "sock:{name} has `{field}` at offset {at}, expected {expected}; this kernel's layout is not supported"
                );
            }
        }
    }
    Ok(TracepointOffsets {
        newtask_pid: field_offset(root, "task", "task_newtask", "pid")?,
        newtask_clone_flags: field_offset(root, "task", "task_newtask", "clone_flags")?,
        wakeup_pid: field_offset(root, "sched", "sched_wakeup", "pid")?,
        _pad: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE_FORMAT: &str = "name: inet_sock_set_state\nID: 1\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
        \tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;\n\
        \tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;\n";

    #[test]
    fn finds_pointer_array_and_plain_fields() {
        assert_eq!(parse_field_offset(STATE_FORMAT, "skaddr").unwrap(), 8);
        assert_eq!(parse_field_offset(STATE_FORMAT, "newstate").unwrap(), 20);
        assert_eq!(parse_field_offset(STATE_FORMAT, "saddr_v6").unwrap(), 40);
        assert!(parse_field_offset(STATE_FORMAT, "saddr").is_err());
    }
}
