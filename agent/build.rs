use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

/// Builds the kernel programs (`agent-ebpf`, target bpfel-unknown-none, nightly) so that the
/// agent binary can embed them. Set `AYA_BUILD_SKIP=1` to skip it when only userspace code is
/// being checked; the resulting binary then cannot load any program.
fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "agent-ebpf")
        .ok_or_else(|| anyhow!("agent-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("agent-ebpf manifest has no parent"))?;
    let package = aya_build::Package {
        name: ebpf.name.as_str(),
        root_dir: root_dir.as_str(),
        ..Default::default()
    };
    // aya-build watches the kernel crate itself; the shared types shape its records too.
    let common = root_dir
        .parent()
        .ok_or_else(|| anyhow!("agent-ebpf has no parent directory"))?
        .join("agent-common");
    println!("cargo:rerun-if-changed={common}");
    aya_build::build_ebpf([package], Toolchain::default())
}
