//! `cargo xtask setup`: checks for everything the build, the tests and the benchmarks need and
//! installs what is missing. Idempotent, and quick when everything is there.
//!
//! To add a Debian or Python package, add one line to `DEBIAN_PACKAGES` or `PIP_PACKAGES`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use crate::util::{self, display, output_if_ok, run};

/// What a Debian package is needed for; `--only-build-deps` installs only `Build`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Need {
    /// Building the agent (bpf-linker links against LLVM).
    Build,
    /// Test and benchmark workloads.
    Workload,
}

/// A Debian package: any one of `names` satisfies it (the first available one is installed).
/// An `optional` one is skipped quietly when the archive does not have it.
struct DebPackage {
    names: &'static [&'static str],
    need: Need,
    optional: bool,
}

const fn deb(names: &'static [&'static str], need: Need) -> DebPackage {
    DebPackage {
        names,
        need,
        optional: false,
    }
}

const fn deb_optional(names: &'static [&'static str], need: Need) -> DebPackage {
    DebPackage {
        names,
        need,
        optional: true,
    }
}

/// Debian packages, one line each.
const DEBIAN_PACKAGES: &[DebPackage] = &[
    deb(&["llvm-22-dev"], Need::Build),
    deb(&["libpolly-22-dev"], Need::Build),
    deb(&["libzstd-dev"], Need::Build),
    deb(&["zlib1g-dev"], Need::Build),
    deb(&["nginx-light", "nginx"], Need::Workload),
    deb(&["wrk"], Need::Workload),
    deb(&["curl"], Need::Workload),
    deb(&["openssl"], Need::Workload),
    deb(&["nodejs"], Need::Workload),
    deb(&["postgresql"], Need::Workload),
    deb(&["mariadb-server"], Need::Workload),
    deb(&["mariadb-client"], Need::Workload),
    deb(&["redis-server"], Need::Workload),
    deb(&["redis-tools"], Need::Workload),
    deb_optional(&["bpftool"], Need::Workload),
];

/// Python packages for test workloads, one line each: (name on PyPI, module to import).
const PIP_PACKAGES: &[(&str, &str)] = &[
    ("psycopg[binary]", "psycopg"),
    ("pymysql", "pymysql"),
    ("redis", "redis"),
    ("grpcio", "grpc"),
    ("grpcio-tools", "grpc_tools"),
];

/// The nightly toolchain that builds the kernel programs (`-Z build-std=core`).
const NIGHTLY: &str = "nightly";
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_MAJOR: &str = "22";

/// What to set up.
#[derive(Clone, Copy, Debug)]
pub struct Scope {
    /// Test/bench workloads and Python packages.
    pub workloads: bool,
    /// Mount tracefs when it is empty (needed to run the agent).
    pub tracefs: bool,
}

impl Scope {
    pub const ALL: Scope = Scope {
        workloads: true,
        tracefs: true,
    };
    pub const BUILD: Scope = Scope {
        workloads: false,
        tracefs: false,
    };
    pub const RUN: Scope = Scope {
        workloads: false,
        tracefs: true,
    };
}

fn status(item: &str, state: &str) {
    println!("setup: {item:<44} {state}");
}

pub fn setup(scope: Scope) -> Result<()> {
    let started = Instant::now();
    let root = util::is_root();
    // Things that need root and are missing, for a clear message when we are not root.
    let mut needs_root: Vec<String> = Vec::new();

    rust_src()?;
    if scope.workloads {
        lint_tools()?;
    }

    // Debian packages first: bpf-linker's build links against LLVM.
    let pip_missing: Vec<&(&str, &str)> = if scope.workloads {
        PIP_PACKAGES
            .iter()
            .filter(|(name, module)| {
                let ok = python_module_present(module);
                status(
                    &format!("python package {name}"),
                    if ok { "present" } else { "missing" },
                );
                !ok
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut wanted: Vec<&DebPackage> = DEBIAN_PACKAGES
        .iter()
        .filter(|p| p.need == Need::Build || scope.workloads)
        .collect();
    const PIP: DebPackage = deb(&["python3-pip"], Need::Workload);
    if !pip_missing.is_empty() && !python_module_present("pip") {
        wanted.push(&PIP);
    }
    let missing: Vec<&DebPackage> = wanted
        .into_iter()
        .filter(|p| {
            let installed = p.names.iter().find(|n| deb_installed(n));
            let label = format!("debian package {}", p.names.join(" | "));
            match installed {
                Some(name) if p.names.len() > 1 => status(&label, &format!("present ({name})")),
                Some(_) => status(&label, "present"),
                None => status(&label, "missing"),
            }
            installed.is_none()
        })
        .collect();
    if !missing.is_empty() {
        if root {
            apt_install(&missing)?;
        } else {
            needs_root.push(format!(
                "apt-get install {}",
                missing
                    .iter()
                    .map(|p| p.names[0])
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
    }

    if needs_root.is_empty() {
        bpf_linker()?;
    } else {
        status("bpf-linker", "not checked (needs the packages above)");
    }

    if !pip_missing.is_empty() {
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "pip", "install", "--quiet", "--break-system-packages"])
            .args(pip_missing.iter().map(|(name, _)| *name));
        if root {
            run(&mut cmd)?;
        } else {
            needs_root.push(display(&cmd));
        }
    }

    if scope.tracefs {
        tracefs(root, &mut needs_root)?;
    }

    if !needs_root.is_empty() {
        eprintln!("setup: these steps need root; run `cargo xtask setup` as root, or by hand:");
        for step in &needs_root {
            eprintln!("    {step}");
        }
        bail!("set-up incomplete: not root");
    }
    println!("setup: done in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// rust-src for the nightly toolchain: `-Z build-std` reads `lib/rustlib/src/rust/library`.
fn rust_src() -> Result<()> {
    let label = format!("rust-src for {NIGHTLY}");
    let sysroot = nightly_sysroot().with_context(|| {
        format!(
            "the {NIGHTLY} toolchain is missing; install it with `rustup toolchain install {NIGHTLY}`"
        )
    })?;
    let library = sysroot.join("lib/rustlib/src/rust/library");
    if library.is_dir() {
        status(&label, "present");
        return Ok(());
    }
    status(&label, "missing: installing");
    let added = util::run_status(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        NIGHTLY,
    ]))
    .map(|s| s.success())
    .unwrap_or(false);
    if !added || !library.is_dir() {
        let tarball = fallback_rust_src().with_context(|| {
            "`rustup component add rust-src` failed and no fallback \
             ../shared/toolchain/rust-src-nightly-*.tar.xz was found"
        })?;
        status(&label, &format!("unpacking {}", tarball.display()));
        run(Command::new("tar")
            .arg("-xJf")
            .arg(&tarball)
            .arg("-C")
            .arg(sysroot.join("lib/rustlib")))?;
    }
    if !library.is_dir() {
        bail!("rust-src is still missing at {}", library.display());
    }
    status(&label, "installed");
    Ok(())
}

/// rustfmt and clippy for the default toolchain, and clippy for nightly (the kernel crate is
/// linted for its own target): `cargo xtask test` runs them.
fn lint_tools() -> Result<()> {
    let tools: [(&str, Option<&str>, &str); 3] = [
        ("rustfmt", None, "rustfmt"),
        ("clippy", None, "cargo-clippy"),
        ("clippy", Some(NIGHTLY), "cargo-clippy"),
    ];
    for (component, toolchain, program) in tools {
        let mut check = match toolchain {
            None => Command::new(program),
            Some(t) => {
                let mut c = Command::new("rustup");
                c.args(["run", t, program]);
                c
            }
        };
        let label = format!("{component} ({})", toolchain.unwrap_or("default toolchain"));
        if output_if_ok(check.arg("--version")).is_some() {
            status(&label, "present");
            continue;
        }
        status(&label, "missing: installing");
        let mut add = Command::new("rustup");
        add.args(["component", "add", component]);
        if let Some(t) = toolchain {
            add.args(["--toolchain", t]);
        }
        run(&mut add)?;
    }
    Ok(())
}

fn nightly_sysroot() -> Option<PathBuf> {
    let out =
        output_if_ok(Command::new("rustc").args([&format!("+{NIGHTLY}"), "--print", "sysroot"]))?;
    let path = PathBuf::from(out.trim());
    path.is_dir().then_some(path)
}

/// The rust-src tarball kept beside the repository in `../shared/toolchain/`.
fn fallback_rust_src() -> Option<PathBuf> {
    let dir = util::workspace_root().parent()?.join("shared/toolchain");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("rust-src-nightly-") && n.ends_with(".tar.xz"))
        })
        .collect();
    found.sort();
    found.pop()
}

fn deb_installed(name: &str) -> bool {
    output_if_ok(Command::new("dpkg-query").args(["-W", "-f=${Status}", name]))
        .is_some_and(|s| s.trim_end().ends_with(" installed"))
}

/// True when the archive has an installable version of the package.
fn deb_available(name: &str) -> bool {
    output_if_ok(Command::new("apt-cache").args(["policy", name])).is_some_and(|s| {
        s.lines()
            .find_map(|l| l.trim().strip_prefix("Candidate:"))
            .is_some_and(|c| c.trim() != "(none)")
    })
}

fn apt_install(missing: &[&DebPackage]) -> Result<()> {
    let apt_get = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        run(&mut cmd)
    };
    apt_get(&["update", "-q"])?;
    let mut names: Vec<&str> = Vec::new();
    for p in missing {
        match p.names.iter().find(|n| deb_available(n)) {
            Some(name) => names.push(name),
            None if p.optional => status(
                &format!("debian package {}", p.names.join(" | ")),
                "not in the archive: skipped",
            ),
            None => bail!(
                "Debian package {} is not available from the configured archives",
                p.names.join(" | ")
            ),
        }
    }
    if names.is_empty() {
        return Ok(());
    }
    // Installing a server package (nginx) would start it as a system service; a policy-rc.d
    // that says "no" keeps set-up from leaving daemons behind. Only ours is removed afterwards.
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists()
        && std::fs::write(policy, "#!/bin/sh\nexit 101\n").is_ok()
        && set_mode(policy, 0o755).is_ok();
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(&names);
    let result = apt_get(&args);
    if ours {
        let _ = std::fs::remove_file(policy);
    }
    result?;
    for name in names {
        status(&format!("debian package {name}"), "installed");
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// bpf-linker at the pinned version, built against LLVM from Debian.
fn bpf_linker() -> Result<()> {
    let label = format!("bpf-linker {BPF_LINKER_VERSION}");
    let program = util::which("bpf-linker").or_else(|| {
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
        let p = home.join("bin/bpf-linker");
        p.is_file().then_some(p)
    });
    let version = program
        .as_ref()
        .and_then(|p| output_if_ok(Command::new(p).arg("--version")))
        .map(|v| v.trim().to_string());
    let force = match &version {
        Some(v) if v.split_whitespace().last() == Some(BPF_LINKER_VERSION) => {
            status(&label, "present");
            return Ok(());
        }
        Some(v) => {
            status(&label, &format!("found `{v}`: reinstalling"));
            true
        }
        None => {
            status(&label, "missing: installing (takes a minute or two)");
            false
        }
    };
    let mut cmd = util::cargo();
    cmd.env("LLVM_PREFIX", format!("/usr/lib/llvm-{LLVM_MAJOR}"))
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features"])
        .arg(format!("llvm-{LLVM_MAJOR}"));
    if force {
        cmd.arg("--force");
    }
    run(&mut cmd)?;
    status(&label, "installed");
    Ok(())
}

fn python_module_present(module: &str) -> bool {
    output_if_ok(Command::new("python3").args(["-c", &format!("import {module}")])).is_some()
}

/// Tracepoints are attached through tracefs; mount it when the directory is empty.
fn tracefs(root: bool, needs_root: &mut Vec<String>) -> Result<()> {
    let dir = Path::new("/sys/kernel/tracing");
    let populated = std::fs::read_dir(dir)
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false);
    if populated {
        status("tracefs at /sys/kernel/tracing", "mounted");
        return Ok(());
    }
    let mut cmd = Command::new("mount");
    cmd.args(["-t", "tracefs", "nodev"]).arg(dir);
    if !root {
        status("tracefs at /sys/kernel/tracing", "not mounted");
        needs_root.push(display(&cmd));
        return Ok(());
    }
    status("tracefs at /sys/kernel/tracing", "not mounted: mounting");
    run(&mut cmd)?;
    Ok(())
}
