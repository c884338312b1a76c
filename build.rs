//! Links the unwinder of GCC's runtime into kiln statically (libgcc_eh)
//! instead of loading libgcc_s.so.1: that library's constructor probes the
//! CPU with `cpuid`, which traps to the hypervisor in a VM, and loading it
//! was ~0.2 ms of CPU in every start of kiln, most of a no-op converge's
//! budget on a small VM (bench/noop-converge). Panics still unwind, through
//! the same unwinder, linked in. Only on glibc targets, where Rust's std
//! names libgcc_s; the static archive then answers first and the linker
//! (--as-needed) drops the shared one.
//!
//! Release builds of the binary also lay out the functions a no-op
//! converge runs together (lld's --symbol-ordering-file, the list
//! bench/symbol-order writes from a profile): a core no-op then maps its
//! code in about 12 page faults instead of 60, some 4% of its time. A name
//! the list has and the code no longer does is skipped.

/// The list of functions, hottest first (bench/symbol-order).
const ORDER: &str = "build/symbol-order.txt";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={ORDER}");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    if os == "linux" && env == "gnu" && !features.split(',').any(|f| f == "crt-static") {
        println!("cargo:rustc-link-lib=static:-bundle=gcc_eh");
    }
    // Rust links x86_64 Linux binaries with its own lld, which reads the list.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let order = std::path::Path::new(&dir).join(ORDER);
    if os == "linux" && arch == "x86_64" && release && order.is_file() {
        let order = order.display();
        println!("cargo:rustc-link-arg-bin=kiln=-Wl,--symbol-ordering-file={order}");
        println!("cargo:rustc-link-arg-bin=kiln=-Wl,--no-warn-symbol-ordering");
    }
}
