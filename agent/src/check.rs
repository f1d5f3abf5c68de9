//! `periscope check`: one screen on what this kernel and these privileges allow.

use std::{fs, io::Write as _, path::Path};

use crate::capture::{
    kernel_btf,
    openssl_entries::internal_entries,
    probes::{KERNEL_BTF, ProbeOptions, Probes, SocketProbes, wanted_tracepoints},
    tls::system_libssl_files,
    tracefs,
};
use crate::cpu_priority::{SHORT_SLICE, current_tid, set_time_slice};

/// One line to stdout; a reader that went away (`periscope check | head -3`) is no error.
fn say(line: &str) {
    let _ = writeln!(std::io::stdout(), "{line}");
}

struct Report {
    fatal: bool,
}

impl Report {
    fn line(&mut self, ok: bool, required: bool, what: &str, detail: &str) {
        let mark = match (ok, required) {
            (true, _) => "ok  ",
            (false, true) => "FAIL",
            (false, false) => "warn",
        };
        if !ok && required {
            self.fatal = true;
        }
        say(&format!("  [{mark}] {what:<38} {detail}"));
    }
}

/// Returns whether capture is possible.
pub fn check() -> bool {
    let mut r = Report { fatal: false };
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    say(&format!("periscope check — kernel {}", release.trim()));

    let caps = effective_capabilities();
    let has = |bit: u32| caps.is_some_and(|c| c & (1u64 << bit) != 0);
    let (cap_sys_admin, cap_perfmon, cap_bpf) = (has(21), has(38), has(39));
    r.line(
        cap_sys_admin || (cap_bpf && cap_perfmon),
        true,
        "privileges (CAP_BPF+CAP_PERFMON or root)",
        &format!(
            "uid {}, CapEff {:#x}",
            unsafe { libc::geteuid() },
            caps.unwrap_or(0)
        ),
    );
    let btf = Path::new(KERNEL_BTF).exists();
    r.line(
        btf,
        true,
        &format!("BTF ({KERNEL_BTF})"),
        if btf {
            "present: the data path reads the current syscall's registers through it"
        } else {
            "missing: the data path reads the current syscall's registers through BTF-typed helpers"
        },
    );
    if btf {
        let fields = kernel_btf::sock_offsets(Path::new(KERNEL_BTF));
        r.line(
            fields.is_ok(),
            false,
            "socket fields in BTF (struct sock)",
            &match fields {
                Ok(at) => format!(
                    "family at {}, protocol at {}: the data path runs as raw tracepoints",
                    at.family, at.protocol
                ),
                Err(e) => format!("{e:#}; the sock tracepoints' records are used instead"),
            },
        );
    }
    let root = match tracefs::ensure_mounted() {
        Ok(root) => {
            r.line(true, true, "tracefs", root);
            Some(root)
        }
        Err(e) => {
            r.line(false, true, "tracefs", &format!("{e:#}"));
            None
        }
    };
    if let Some(root) = root {
        let mut missing_required = Vec::new();
        let mut missing_optional = Vec::new();
        let mut total = 0;
        for (category, name, required) in wanted_tracepoints() {
            total += 1;
            if !tracefs::has_tracepoint(root, category, name) {
                let list = if required {
                    &mut missing_required
                } else {
                    &mut missing_optional
                };
                list.push(format!("{category}:{name}"));
            }
        }
        r.line(
            missing_required.is_empty(),
            true,
            "socket I/O and TCP state tracepoints (sock)",
            &if missing_required.is_empty() {
                format!("{total} wanted, all required present")
            } else {
                format!("missing {}", missing_required.join(", "))
            },
        );
        r.line(
            missing_optional.is_empty(),
            false,
            "process tracepoints",
            &if missing_optional.is_empty() {
                "sched_process_{exec,exit}, task_newtask, sched_wakeup".to_owned()
            } else {
                format!(
                    "missing {} (new processes found by rescans of /proc)",
                    missing_optional.join(", ")
                )
            },
        );
        match tracefs::read_offsets(root) {
            Ok(_) => r.line(
                true,
                true,
                "tracepoint layouts",
                "read from tracefs formats",
            ),
            Err(e) => r.line(false, true, "tracepoint layouts", &format!("{e:#}")),
        }
    }
    let kprobes = Path::new("/sys/kernel/tracing/kprobe_events").exists()
        || Path::new("/sys/kernel/debug/tracing/kprobe_events").exists();
    r.line(
        kprobes,
        false,
        "kprobes",
        if kprobes {
            "available (not needed)"
        } else {
            "absent: not needed, tracepoints used"
        },
    );
    let uprobes = Path::new("/sys/bus/event_source/devices/uprobe").exists();
    r.line(
        uprobes,
        false,
        "uprobes",
        if uprobes {
            "TLS plaintext through OpenSSL"
        } else {
            "absent: TLS traffic not decoded"
        },
    );
    if uprobes {
        for path in system_libssl_files() {
            let lib = path.display();
            match internal_entries(&path) {
                Ok(_) => r.line(
                    true,
                    false,
                    "OpenSSL probe points",
                    &format!("{lib}: internal read/write, one trap a call"),
                ),
                Err(e) => r.line(
                    false,
                    false,
                    "OpenSSL probe points",
                    &format!(
                        "{lib}: SSL_read/SSL_write themselves, where each call also \
                         single-steps, so HTTPS costs more ({e:#})"
                    ),
                ),
            }
        }
    }
    let slices = short_slices_granted();
    r.line(
        slices,
        false,
        "short time slices (Linux 6.12)",
        if slices {
            "the agent's threads run by 0.1 ms slices: traced programs rarely preempt them"
        } else {
            "not granted: the agent's threads keep the default slice"
        },
    );

    if !r.fatal {
        match Probes::load(&ProbeOptions {
            agent_tgid: std::process::id(),
            filter_pids: true,
            capture_bytes: 64,
            ring_buffer_bytes: 1 << 16,
            exe_names: Vec::new(),
            socket_probes: SocketProbes::Auto,
        }) {
            Ok(p) => {
                r.line(
                    true,
                    true,
                    "load and attach kernel programs",
                    "verifier accepted all",
                );
                drop(p);
            }
            Err(e) => r.line(
                false,
                true,
                "load and attach kernel programs",
                &format!("{e:#}"),
            ),
        }
    }
    say(if r.fatal {
        "capture is NOT possible here: fix the FAIL lines above"
    } else {
        "capture is possible: `periscope run` will trace HTTP/1, HTTP/2, gRPC, PostgreSQL, \
         MySQL and Redis over TCP (IPv4 and IPv6)"
    });
    !r.fatal
}

/// Whether the kernel grants a thread the short slice the agent asks for (tried on a scratch
/// thread, which ends right after).
fn short_slices_granted() -> bool {
    std::thread::spawn(|| set_time_slice(current_tid(), SHORT_SLICE).unwrap_or(false))
        .join()
        .unwrap_or(false)
}

fn effective_capabilities() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}
