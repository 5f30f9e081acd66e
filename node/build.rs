//! Builds the kernel programs of `ebpf/tdsvip-ebpf` with aya-build (nightly + bpf-linker, see
//! shared/TOOLCHAIN.md) into `OUT_DIR`, where `src/ebpf.rs` embeds them.
//!
//! A machine without the eBPF toolchain still builds the workspace: the failure becomes a
//! `cargo:warning`, the crate is compiled without the `tdsvip_ebpf` cfg and every eBPF feature
//! answers "built without eBPF" at run time. CI sets `TDSVIP_REQUIRE_EBPF=1`, which turns the
//! same failure into a build error, so a broken eBPF build cannot pass CI silently.

use std::env;

const REQUIRE: &str = "TDSVIP_REQUIRE_EBPF";

fn main() {
    println!("cargo::rustc-check-cfg=cfg(tdsvip_ebpf)");
    println!("cargo::rerun-if-env-changed={REQUIRE}");
    let required = env::var(REQUIRE).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));

    // A stale object from an earlier successful build must not stand in for a failed one.
    let object = std::path::Path::new(&env::var("OUT_DIR").unwrap_or_default()).join("tdsvip-ebpf");
    let _ = std::fs::remove_file(&object);

    let Some(ebpf_dir) = locate_ebpf_crate() else {
        fail(required, "ebpf/tdsvip-ebpf not found next to node/");
        return;
    };
    let package = aya_build::Package {
        name: "tdsvip-ebpf",
        root_dir: &ebpf_dir,
        ..Default::default()
    };
    // aya-build relays every line the nested cargo prints as a cargo:warning; quiet keeps
    // that to real compiler messages.
    // SAFETY: build scripts are single-threaded here; nothing else reads the environment.
    unsafe { env::set_var("CARGO_TERM_QUIET", "true") };
    match aya_build::build_ebpf([package], aya_build::Toolchain::default()) {
        Ok(()) => {
            // aya-build skips silently (returning Ok) under AYA_BUILD_SKIP; only a real object
            // enables the programs.
            if object.is_file() {
                println!("cargo::rustc-cfg=tdsvip_ebpf");
            } else {
                fail(
                    required,
                    "aya-build produced no tdsvip-ebpf object (AYA_BUILD_SKIP set?)",
                );
            }
        }
        Err(err) => fail(required, &format!("{err:#}")),
    }
}

fn locate_ebpf_crate() -> Option<String> {
    let manifest_dir = env::var("CARGO_MANIFEST_DIR").ok()?;
    let dir = std::path::Path::new(&manifest_dir)
        .parent()?
        .join("ebpf")
        .join("tdsvip-ebpf");
    dir.is_dir().then(|| dir.to_string_lossy().into_owned())
}

fn fail(required: bool, reason: &str) {
    let reason = reason.replace('\n', " | ");
    if required {
        // A panic is how a build script fails the build with its message shown.
        panic!("{REQUIRE}=1 but the eBPF programs did not build: {reason}");
    }
    println!(
        "cargo::warning=tdsvip-node is built without eBPF (vip_guard and conn_track will report \
         \"built without eBPF\" at run time): {reason}. Install the toolchain with deploy/setup.sh."
    );
    println!("cargo::rustc-env=TDSVIP_EBPF_BUILD_ERROR={reason}");
    // Installing the toolchain later should be enough to get the programs on the next build:
    // a watched path that does not exist yet keeps this script re-running until it does.
    if let Some(home) = env::var_os("CARGO_HOME").or_else(|| {
        env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".cargo").into_os_string())
    }) {
        let linker = std::path::Path::new(&home).join("bin").join("bpf-linker");
        println!("cargo::rerun-if-changed={}", linker.display());
    }
}
