use which::which;

/// The kernel crate is linked by `bpf-linker`, which cargo does not know about: rebuild when the
/// linker binary changes.
fn main() {
    let bpf_linker = which("bpf-linker").expect("bpf-linker not on PATH: run `cargo xtask setup`");
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
}
