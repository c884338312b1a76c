//! Links the unwinder of GCC's runtime into kiln statically (libgcc_eh)
//! instead of loading libgcc_s.so.1: that library's constructor probes the
//! CPU with `cpuid`, which traps to the hypervisor in a VM, and loading it
//! was ~0.2 ms of CPU in every start of kiln, most of a no-op converge's
//! budget on a small VM (bench/noop-converge). Panics still unwind, through
//! the same unwinder, linked in. Only on glibc targets, where Rust's std
//! names libgcc_s; the static archive then answers first and the linker
//! (--as-needed) drops the shared one.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    if os == "linux" && env == "gnu" && !features.split(',').any(|f| f == "crt-static") {
        println!("cargo:rustc-link-lib=static:-bundle=gcc_eh");
    }
}
