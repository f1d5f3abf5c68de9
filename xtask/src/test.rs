//! `cargo xtask test`: set-up, then formatting, lints, the agent build and every test.
//!
//! Steps after set-up all run even when an earlier one fails (except the tests, which need the
//! build), so one run shows every problem. The last line is an aggregate of cargo test's own
//! "test result:" lines.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, Result};

use crate::setup::{self, Scope};
use crate::util::{self, display};

#[derive(Default, Debug, PartialEq, Eq)]
pub struct Totals {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
    pub binaries: u64,
}

impl Totals {
    /// Adds one libtest line such as
    /// `test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s`.
    pub fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        self.binaries += 1;
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(word), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match word {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
    }
}

struct Step {
    name: &'static str,
    outcome: &'static str,
}

/// Returns whether every step passed (the summary is already printed).
pub fn test() -> Result<bool> {
    let started = Instant::now();
    banner("set-up");
    setup::setup(Scope::ALL).context("set-up failed")?;

    let mut steps: Vec<Step> = Vec::new();
    let mut record = |name: &'static str, ok: bool| {
        steps.push(Step {
            name,
            outcome: if ok { "ok" } else { "FAILED" },
        });
        ok
    };

    banner("cargo fmt --check");
    record("fmt", cargo_ok(&["fmt", "--all", "--check"]));

    // The kernel crate is linted for its own target with nightly (as it is built): on the host
    // it is a `no_std` binary that cannot be checked next to crates that bring in `std`.
    banner("cargo clippy");
    let workspace = cargo_ok(&[
        "clippy",
        "--workspace",
        "--exclude",
        "agent-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    let kernel = util::run_status(
        Command::new("rustup")
            .current_dir(util::workspace_root())
            .args([
                "run",
                "nightly",
                "cargo",
                "clippy",
                "-p",
                "agent-ebpf",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ]),
    )
    .is_ok_and(|s| s.success());
    record("clippy", workspace && kernel);

    banner("cargo build -p periscope");
    let built = record("build", cargo_ok(&["build", "-p", "periscope"]));

    let mut totals = Totals::default();
    if built {
        banner("cargo test --workspace");
        let bin = util::target_dir().join("debug/periscope");
        let ok = cargo_test(&bin, &mut totals).unwrap_or_else(|e| {
            eprintln!("xtask: {e:#}");
            false
        });
        record("test", ok);
    } else {
        steps.push(Step {
            name: "test",
            outcome: "not run",
        });
    }

    let all_ok = steps.iter().all(|s| s.outcome == "ok");
    let list: Vec<String> = steps
        .iter()
        .map(|s| format!("{} {}", s.name, s.outcome))
        .collect();
    println!();
    println!(
        "xtask test: {} in {:.0}s ({}); {} test binaries",
        if all_ok { "PASSED" } else { "FAILED" },
        started.elapsed().as_secs_f64(),
        list.join(", "),
        totals.binaries,
    );
    println!(
        "tests: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    let _ = std::io::stdout().flush();
    Ok(all_ok)
}

fn banner(what: &str) {
    println!("\n==> {what}");
    let _ = std::io::stdout().flush();
}

fn cargo_ok(args: &[&str]) -> bool {
    util::run_status(util::cargo().args(args)).is_ok_and(|s| s.success())
}

/// Runs `cargo test --workspace`, streaming its output line by line and adding up its results.
fn cargo_test(bin: &std::path::Path, totals: &mut Totals) -> Result<bool> {
    let mut cmd = util::cargo();
    // agent-ebpf is a `no_main` kernel program: it has no host test harness to link.
    cmd.args([
        "test",
        "--workspace",
        "--exclude",
        "agent-ebpf",
        "--no-fail-fast",
    ])
    .env("PERISCOPE_BIN", bin)
    .stdout(Stdio::piped());
    eprintln!("+ {}", display(&cmd));
    let mut child = cmd.spawn().context("could not start cargo test")?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let mut out = std::io::stdout().lock();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        totals.add_line(&line);
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
    drop(out);
    let status = child.wait().context("waiting for cargo test")?;
    Ok(status.success())
}

#[cfg(test)]
mod tests {
    use super::Totals;

    #[test]
    fn adds_up_libtest_result_lines() {
        let mut t = Totals::default();
        t.add_line("test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        t.add_line("test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 5 filtered out; finished in 1.20s");
        t.add_line("running 3 tests");
        t.add_line("test foo ... ok");
        assert_eq!(
            t,
            Totals {
                passed: 15,
                failed: 2,
                ignored: 1,
                binaries: 2
            }
        );
    }
}
