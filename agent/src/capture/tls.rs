//! Attaching the OpenSSL uprobes to every libssl that traced processes map, including
//! libraries first mapped after the agent started (found by rescanning /proc/PID/maps). Where
//! the library's layout allows, they go on its internal read and write functions rather than the
//! exported ones (see `openssl_entries`).

use std::{
    collections::HashSet,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeScope},
    },
};

use super::openssl_entries::internal_entries;

/// (entry program, return program, symbol). The `_ex` forms are absent before OpenSSL 1.1.1;
/// their programs also serve the internal functions they wrap, which take the same arguments.
type Probe = (&'static str, &'static str, &'static str);
const READ_EX: Probe = ("ssl_read_ex_enter", "ssl_read_ex_return", "SSL_read_ex");
const WRITE_EX: Probe = ("ssl_write_ex_enter", "ssl_write_ex_return", "SSL_write_ex");
const PROBES: &[Probe] = &[
    ("ssl_read_enter", "ssl_read_return", "SSL_read"),
    ("ssl_write_enter", "ssl_write_return", "SSL_write"),
    READ_EX,
    WRITE_EX,
];

/// Where distributions keep the system OpenSSL.
const SYSTEM_LIBRARY_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib64",
    "/usr/local/lib",
];

pub struct TlsProbes {
    /// Libraries already handled, by (device, inode): one attachment covers every process
    /// mapping that file.
    attached: HashSet<(u64, u64)>,
    pub libraries: Vec<PathBuf>,
    loaded: bool,
    disabled: bool,
}

impl TlsProbes {
    pub fn new(enabled: bool) -> Self {
        Self {
            attached: HashSet::new(),
            libraries: Vec::new(),
            loaded: false,
            disabled: !enabled,
        }
    }

    /// Attach to the libssl files in the usual library directories, before any process is
    /// seen using them: a program started later is then traced from its first request.
    pub fn scan_system(&mut self, ebpf: &mut Ebpf) {
        if self.disabled {
            return;
        }
        for path in system_libssl_files() {
            self.attach_file(ebpf, &path, &path);
        }
    }

    /// Look for libssl in these processes' memory maps and attach to any new one.
    pub fn scan(&mut self, ebpf: &mut Ebpf, pids: impl Iterator<Item = u32>) {
        if self.disabled {
            return;
        }
        for pid in pids {
            for lib in libssl_paths(pid) {
                // Reach the file through the process's root: it may live in another mount
                // namespace (a container).
                let path = PathBuf::from(format!("/proc/{pid}/root"))
                    .join(lib.strip_prefix("/").unwrap_or(&lib));
                self.attach_file(ebpf, &path, &lib);
            }
        }
    }

    /// Attach to one library file unless it (the same inode) is attached already.
    fn attach_file(&mut self, ebpf: &mut Ebpf, path: &Path, shown: &Path) {
        let Ok(meta) = fs::metadata(path) else {
            return;
        };
        if !self.attached.insert((meta.dev(), meta.ino())) {
            return;
        }
        match self.attach(ebpf, path) {
            Ok((n, functions)) => {
                log::info!(
                    "TLS: {n} OpenSSL probes on {}, on its {functions} functions",
                    shown.display()
                );
                self.libraries.push(shown.to_path_buf());
            }
            Err(e) => log::warn!("TLS: cannot probe {}: {e:#}", shown.display()),
        }
    }

    /// Attach to one library; returns the number of probes and which functions carry them.
    fn attach(&mut self, ebpf: &mut Ebpf, path: &Path) -> anyhow::Result<(usize, &'static str)> {
        if !self.loaded {
            for (enter, ret, _) in PROBES {
                for name in [enter, ret] {
                    uprobe(ebpf, name)?.load()?;
                }
            }
            self.loaded = true;
        }
        match internal_entries(path) {
            Ok(entries) => {
                for ((enter, ret, _), offset) in
                    [(READ_EX, entries.read), (WRITE_EX, entries.write)]
                {
                    for name in [enter, ret] {
                        uprobe(ebpf, name)?.attach(
                            UProbeAttachLocation::AbsoluteOffset(offset),
                            path,
                            UProbeScope::AllProcesses,
                        )?;
                    }
                }
                return Ok((4, "internal read and write"));
            }
            Err(e) => log::debug!(
                "TLS: probing {}'s exported functions ({e:#})",
                path.display()
            ),
        }
        let mut attached = 0;
        for (enter, ret, symbol) in PROBES {
            for name in [enter, ret] {
                match uprobe(ebpf, name)?.attach(*symbol, path, UProbeScope::AllProcesses) {
                    Ok(_) => attached += 1,
                    // SSL_read_ex/SSL_write_ex do not exist in older libraries.
                    Err(e) if symbol.ends_with("_ex") => {
                        log::debug!("{symbol} not probed in {}: {e}", path.display());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok((attached, "exported"))
    }
}

fn uprobe<'e>(ebpf: &'e mut Ebpf, name: &str) -> anyhow::Result<&'e mut UProbe> {
    Ok(ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow::anyhow!("program {name} missing"))?
        .try_into()?)
}

/// The libssl files in the usual library directories.
pub fn system_libssl_files() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in SYSTEM_LIBRARY_DIRS {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let is_libssl = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("libssl.so."));
            if is_libssl {
                found.push(entry.path());
            }
        }
    }
    found
}

/// Paths of the libssl files a process maps.
fn libssl_paths(pid: u32) -> Vec<PathBuf> {
    let Ok(maps) = fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| {
            Path::new(path)
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libssl.so"))
        })
        .map(PathBuf::from)
        .collect();
    found.sort();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_no_libssl_in_a_process_without_one_and_tolerates_missing_pids() {
        assert!(libssl_paths(u32::MAX).is_empty());
        // The test binary does not link OpenSSL.
        assert!(libssl_paths(std::process::id()).is_empty());
    }
}
