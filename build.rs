//! Link options of the `log-capturer` executable.

fn main() {
    // Packed relative relocations (DT_RELR, glibc 2.36 and later): the
    // position-independent executable's ~14,000 relative relocations take
    // a few KiB instead of 328 KiB of `.rela.dyn`, which the loader reads
    // at every start and which stayed resident for the whole run.
    println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    println!("cargo::rerun-if-changed=build.rs");
}
