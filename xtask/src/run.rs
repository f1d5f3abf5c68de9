//! `cargo xtask run -- <periscope args>`: toolchain set-up, release build, then the agent.

use std::os::unix::process::CommandExt as _;
use std::process::Command;

use anyhow::{Result, bail};

use crate::setup::{self, Scope};
use crate::util::{self, display};

pub fn run(args: Vec<String>) -> Result<()> {
    // Without root, tracefs is left to the agent, which runs under sudo below.
    setup::setup(Scope {
        tracefs: util::is_root(),
        ..Scope::RUN
    })?;
    util::run(util::cargo().args(["build", "--release", "-p", "periscope"]))?;
    let bin = util::target_dir().join("release/periscope");
    let args = if args.is_empty() {
        vec!["run".to_string()]
    } else {
        args
    };

    // The agent loads eBPF programs: it needs root (or CAP_BPF, CAP_PERFMON, ...).
    let mut cmd = if util::is_root() {
        let mut cmd = Command::new(&bin);
        cmd.args(&args);
        cmd
    } else if let Some(sudo) = util::which("sudo") {
        eprintln!("xtask: the agent needs root; running it through sudo");
        let mut cmd = Command::new(sudo);
        cmd.arg("-E").arg(&bin).args(&args);
        cmd
    } else {
        bail!(
            "the agent needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, ...) and sudo is not \
             installed; run as root: {} {}",
            bin.display(),
            args.join(" ")
        );
    };
    eprintln!("+ {}", display(&cmd));
    // exec only returns on failure.
    let err = cmd.exec();
    bail!("could not start {}: {err}", bin.display())
}
