//! Builds the filter guest for `wasm32-unknown-unknown` and encodes it as a component,
//! so the `hashgate` binary carries the authority's reference guest inside it.
//!
//! The guest is built by a nested `cargo rustc` with its own target directory under
//! `OUT_DIR` (so it does not wait on the outer build's lock) and without the outer build's
//! flags, which are meant for the host target.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const WASM_TARGET: &str = "wasm32-unknown-unknown";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir
        .parent()
        .expect("host/ lives in the workspace root");
    println!("cargo:rerun-if-changed={}", root.join("guest").display());
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );

    ensure_wasm_target();

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let target_dir = out_dir.join("guest-target");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([
            "rustc",
            "-p",
            "hashgate-guest",
            "--lib",
            "--crate-type=cdylib",
        ])
        .args(["--target", WASM_TARGET, "--profile", "guest"])
        .env("CARGO_TARGET_DIR", &target_dir)
        // simd128 speeds up the guest's own hashing (the portable scanner path).
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+simd128");
    for var in [
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_PROFILE_RELEASE_PANIC",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("failed to run cargo for the guest");
    assert!(status.success(), "building the wasm guest failed");

    let module_path = target_dir
        .join(WASM_TARGET)
        .join("guest")
        .join("hashgate_guest.wasm");
    let module = std::fs::read(&module_path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", module_path.display()));
    let component = wit_component::ComponentEncoder::default()
        .module(&module)
        .expect("guest module carries its component type")
        .validate(true)
        .encode()
        .expect("encoding the guest component");
    std::fs::write(out_dir.join("hashgate_guest.component.wasm"), component)
        .expect("writing the guest component");
}

/// Installs the wasm target with rustup when it is missing, or stops with a one-line
/// instruction where rustup is not available.
fn ensure_wasm_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = |root: &Path| root.join("lib/rustlib").join(WASM_TARGET).exists();
    if sysroot.as_deref().is_some_and(installed) {
        return;
    }
    let added = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .status()
        .is_ok_and(|s| s.success());
    if !added {
        panic!("the {WASM_TARGET} target is missing: run `rustup target add {WASM_TARGET}`");
    }
}
