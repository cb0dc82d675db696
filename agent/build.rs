//! Records the target architecture for the update artifact path.
fn main() {
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    println!("cargo:rustc-env=NAP_TARGET_ARCH={arch}");
}
