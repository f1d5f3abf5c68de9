//! The agent's command line: bad input is refused with a message naming it, before the kernel
//! is touched; a stop signal is honoured whenever it comes; output cut short is no crash.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Agent, require_capture, serial};

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(common::agent_binary())
        .args(args)
        .output()
        .expect("agent binary built (cargo build -p periscope)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flags_are_named() {
    if !common::agent_binary().exists() {
        eprintln!("SKIPPED: agent binary not built");
        return;
    }
    let (ok, err) = run(&["run", "--capture-bytes", "0"]);
    assert!(!ok);
    assert!(err.contains("--capture-bytes"), "{err}");
    let (ok, err) = run(&["run", "--otlp-protocol", "http/json"]);
    assert!(!ok);
    assert!(
        err.contains("--otlp-protocol") && err.contains("http/json"),
        "{err}"
    );
    let (ok, err) = run(&["run", "--port", "0"]);
    assert!(!ok);
    assert!(err.contains("--port"), "{err}");
    let (ok, err) = run(&["run", "--no-such-flag"]);
    assert!(!ok);
    assert!(err.contains("--no-such-flag"), "{err}");
}

#[test]
fn bad_config_file_names_the_line() {
    if !common::agent_binary().exists() {
        eprintln!("SKIPPED: agent binary not built");
        return;
    }
    let path = std::env::temp_dir().join(format!("periscope-bad-{}.toml", std::process::id()));
    std::fs::write(&path, "exe = [\"nginx\"]\nring_buffer_mib = 0\n").unwrap();
    let (ok, err) = run(&["run", "--config", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("line 2") && err.contains("ring_buffer_mib"),
        "{err}"
    );
    let (ok, err) = run(&["run", "--config", "/nonexistent/periscope.toml"]);
    assert!(!ok);
    assert!(err.contains("/nonexistent/periscope.toml"), "{err}");
}

#[test]
fn bad_otlp_environment_is_named() {
    if !common::agent_binary().exists() {
        eprintln!("SKIPPED: agent binary not built");
        return;
    }
    let out = Command::new(common::agent_binary())
        .args(["run"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{err}");
}

/// SIGTERM while the agent is still loading its programs (about 100 ms in, a debug build takes
/// several times that to start): the agent finishes starting, detaches everything and exits 0,
/// instead of being killed halfway.
#[test]
fn a_stop_during_start_up_is_a_clean_stop() {
    require_capture!();
    let _serial = serial();
    let agent = Agent::spawn(&["--exe", "periscope-test-selects-nothing"], &[]);
    std::thread::sleep(Duration::from_millis(100));
    // Asserts a clean exit (status 0).
    let (_, err) = agent.stop_with(libc::SIGTERM);
    assert!(err.contains("periscope: stopped"), "{err}");
}

/// `periscope check | head -1`: a reader that leaves early is no crash.
#[test]
fn check_output_to_a_closed_pipe_is_no_crash() {
    require_capture!();
    let _serial = serial();
    let mut child = Command::new(common::agent_binary())
        .arg("check")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("agent binary built (cargo build -p periscope)");
    // Gone before the first line is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("panicked"),
        "{}: {stderr}",
        out.status
    );
}

/// `periscope check` says where the OpenSSL probes would go and whether the agent's threads get
/// their short slices: on this kernel (6.18) and Debian's OpenSSL 3, the cheap placements.
#[test]
fn check_reports_probe_points_and_time_slices() {
    require_capture!();
    let _serial = serial();
    let out = Command::new(common::agent_binary())
        .arg("check")
        .output()
        .expect("agent binary built (cargo build -p periscope)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let line = |what: &str| {
        stdout
            .lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no '{what}' line in:\n{stdout}"))
            .to_owned()
    };
    let slices = line("short time slices");
    assert!(slices.contains("[ok  ]"), "{slices}");
    if std::path::Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3").exists() {
        let probes = line("OpenSSL probe points");
        assert!(
            probes.contains("[ok  ]") && probes.contains("internal read/write"),
            "{probes}"
        );
    } else {
        eprintln!("SKIP (part): no Debian libssl.so.3 to place probes in");
    }
}
