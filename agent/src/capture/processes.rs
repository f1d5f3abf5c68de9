//! Which processes are traced: everything but the agent by default, or those named by
//! `--pid`, `--exe` and `--port`, including processes that start after the agent.

use std::{collections::HashSet, fs, path::Path};

use serde::Serialize;

use super::{probes::TracedPids, procnet};

#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub pids: Vec<u32>,
    /// Executable names (`nginx`) or paths (`/usr/sbin/nginx`); a script name also matches an
    /// interpreter running it (`app.py`).
    pub exes: Vec<String>,
    /// Processes listening on these TCP ports.
    pub ports: Vec<u16>,
}

impl Selection {
    /// Whether the kernel must filter by pid (otherwise every process but the agent is traced).
    pub fn is_filtering(&self) -> bool {
        !(self.pids.is_empty() && self.exes.is_empty() && self.ports.is_empty())
    }

    /// Whether the process is selected by its pid or by what it runs (not by its sockets).
    fn selects_by_pid_or_exe(&self, tgid: u32) -> bool {
        self.pids.contains(&tgid) || self.matches_exe(tgid)
    }

    fn matches_exe(&self, tgid: u32) -> bool {
        if self.exes.is_empty() {
            return false;
        }
        let exe = fs::read_link(format!("/proc/{tgid}/exe")).ok();
        let cmdline = fs::read(format!("/proc/{tgid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .collect();
        self.exes.iter().any(|wanted| {
            let by_path = exe.as_deref().is_some_and(|p| {
                p == Path::new(wanted) || p.file_name().is_some_and(|n| n == wanted.as_str())
            });
            // argv[0] names a symlink or wrapper; argv[1] the script of an interpreter.
            let by_arg = args.iter().take(2).any(|a| {
                let a = String::from_utf8_lossy(a);
                a == wanted.as_str()
                    || Path::new(a.as_ref())
                        .file_name()
                        .is_some_and(|n| n == wanted.as_str())
            });
            by_path || by_arg
        })
    }
}

#[derive(Debug, Serialize)]
pub struct SelectionStats {
    /// Processes the kernel holds as selected: those selected and their forked children, until
    /// they exit.
    pub kernel_table_entries: u64,
}

/// Keeps the kernel's `TRACED_PIDS` table in step with the selection.
pub struct ProcessSelector {
    selection: Selection,
    agent_tgid: u32,
    traced: HashSet<u32>,
    /// Processes whose program was found not to match by pid or name: what they run changes
    /// only by an exec, which is reported (`on_exec`), so a rescan does not read their /proc
    /// entries again. Forgotten when they exit, and all of it now and then, in case an exit
    /// was lost and the pid reused.
    not_matching: HashSet<u32>,
    rescans_since_reset: u32,
    kernel_table: Option<TracedPids>,
}

/// Rescans after which `not_matching` is rebuilt from scratch.
const NOT_MATCHING_KEPT_FOR: u32 = 60;

impl ProcessSelector {
    pub fn new(selection: Selection, agent_tgid: u32, kernel_table: Option<TracedPids>) -> Self {
        Self {
            selection,
            agent_tgid,
            traced: HashSet::new(),
            not_matching: HashSet::new(),
            rescans_since_reset: 0,
            kernel_table,
        }
    }

    pub fn traced_count(&self) -> usize {
        self.traced.len()
    }

    /// The processes traced now: the selected ones, or every process when not filtering.
    pub fn traced_pids(&self) -> Vec<u32> {
        if self.selection.is_filtering() {
            self.traced.iter().copied().collect()
        } else {
            all_pids().filter(|p| *p != self.agent_tgid).collect()
        }
    }

    /// Walk /proc and select every matching process not selected yet. Children forked by a
    /// selected process are added by the kernel itself.
    pub fn rescan(&mut self) {
        if !self.selection.is_filtering() {
            return;
        }
        let listening = if self.selection.ports.is_empty() {
            HashSet::new()
        } else {
            procnet::listening_inodes(&self.selection.ports.iter().copied().collect())
        };
        self.rescans_since_reset += 1;
        if self.rescans_since_reset >= NOT_MATCHING_KEPT_FOR {
            self.rescans_since_reset = 0;
            self.not_matching.clear();
        }
        for tgid in all_pids() {
            if self.traced.contains(&tgid) || tgid == self.agent_tgid {
                continue;
            }
            let by_name =
                !self.not_matching.contains(&tgid) && self.selection.selects_by_pid_or_exe(tgid);
            if !by_name {
                self.not_matching.insert(tgid);
            }
            // Listening sockets come and go: checked on every rescan.
            let selected =
                by_name || (!listening.is_empty() && procnet::holds_any_socket(tgid, &listening));
            if selected {
                self.select(tgid);
            }
        }
    }

    /// A process started a new program: select it now if it matches, so its first requests
    /// are seen.
    pub fn on_exec(&mut self, tgid: u32) {
        self.not_matching.remove(&tgid);
        if self.selection.is_filtering()
            && !self.traced.contains(&tgid)
            && tgid != self.agent_tgid
            && self.selection.selects_by_pid_or_exe(tgid)
        {
            self.select(tgid);
        }
    }

    /// Whether this process is traced (always, when not filtering).
    pub fn is_traced(&self, tgid: u32) -> bool {
        tgid != self.agent_tgid && (!self.selection.is_filtering() || self.traced.contains(&tgid))
    }

    /// Entries in the kernel's table of selected processes, when there is one.
    pub fn kernel_table_entries(&self) -> Option<u64> {
        self.kernel_table.as_ref().map(TracedPids::entries)
    }

    pub fn on_exit(&mut self, tgid: u32) {
        self.traced.remove(&tgid);
        self.not_matching.remove(&tgid);
    }

    fn select(&mut self, tgid: u32) {
        if let Some(table) = self.kernel_table.as_mut()
            && let Err(err) = table.insert(tgid)
        {
            log::warn!("cannot select process {tgid}: {err}");
            return;
        }
        log::info!("tracing process {tgid} ({})", comm(tgid));
        self.traced.insert(tgid);
    }
}

pub fn all_pids() -> impl Iterator<Item = u32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
}

pub fn comm(tgid: u32) -> String {
    fs::read_to_string(format!("/proc/{tgid}/comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_else(|_| "?".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_matches_by_exe_name_and_pid_selection_filters() {
        let me = std::process::id();
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_name().unwrap().to_str().unwrap().to_owned();
        let sel = Selection {
            exes: vec![name],
            ..Default::default()
        };
        assert!(sel.is_filtering());
        assert!(sel.matches_exe(me));
        let other = Selection {
            exes: vec!["surely-not-this-program".into()],
            ..Default::default()
        };
        assert!(!other.matches_exe(me));
        assert!(!Selection::default().is_filtering());
    }

    #[test]
    fn a_process_found_not_matching_is_checked_again_only_when_it_execs() {
        // A shell that becomes the selected program by exec, a moment after it starts.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 0.3; exec sleep 5"])
            .spawn()
            .unwrap();
        let pid = child.id();
        let selection = Selection {
            exes: vec!["sleep".into()],
            ..Default::default()
        };
        let mut selector = ProcessSelector::new(selection, std::process::id(), None);
        selector.rescan();
        assert!(!selector.is_traced(pid), "a shell is not `sleep`");
        std::thread::sleep(std::time::Duration::from_millis(800));
        // Its /proc entry now names `sleep`, but what it runs changes only by an exec, which
        // the kernel reports: the rescan does not read it again.
        selector.rescan();
        assert!(!selector.is_traced(pid));
        selector.on_exec(pid);
        assert!(selector.is_traced(pid), "the exec is checked at once");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
