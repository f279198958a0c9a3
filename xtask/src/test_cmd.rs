//! `cargo xtask test [cargo test args…]`: the project's one test command. Bundles the plugin in
//! release (the host tests load that `.clap`), builds a debug plugin that aborts when
//! `process()` allocates (`tests/tests/process_allocs.rs` loads it) and the standalone app with
//! the same check (`tests/tests/editor_screenshot.rs` runs it under Xvfb with the editor open),
//! then runs every workspace test. `cargo xtask test-aarch64` ([`run_aarch64`]) runs the
//! `engine` tests again on 64-bit ARM under emulation.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

pub fn run(extra: &[String]) -> anyhow::Result<()> {
    nice_plug_xtask::chdir_workspace_root()?;
    nice_plug_xtask::main_with_args(
        "xtask",
        ["bundle", "musicrfm", "--release"].map(String::from),
    )?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    let clap = std::fs::canonicalize(target_dir.join("bundled").join("musicrfm.clap"))
        .context("the bundle step did not produce target/bundled/musicrfm.clap")?;

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(&cargo)
        .args([
            "build",
            "--workspace",
            "--features",
            "musicrfm/standalone,musicrfm/assert_process_allocs",
            "--bin",
            "musicrfm_standalone",
        ])
        .status()
        .context("could not run cargo build")?;
    if !status.success() {
        bail!("cargo build of the allocation-checked standalone app failed ({status})");
    }
    let standalone_dir = target_dir.join("alloc-checked");
    std::fs::create_dir_all(&standalone_dir)?;
    let standalone = standalone_dir.join("musicrfm_standalone");
    std::fs::copy(
        target_dir.join("debug").join("musicrfm_standalone"),
        &standalone,
    )
    .context("copying the allocation-checked standalone app")?;
    let standalone = std::fs::canonicalize(standalone)?;

    let status = Command::new(&cargo)
        .args([
            "build",
            "-p",
            "musicrfm",
            "--features",
            "assert_process_allocs",
        ])
        .status()
        .context("could not run cargo build")?;
    if !status.success() {
        bail!("cargo build -p musicrfm --features assert_process_allocs failed ({status})");
    }
    // `cargo test` rebuilds target/debug/libmusicrfm.so without the feature: keep a copy.
    let checked_dir = target_dir.join("alloc-checked");
    std::fs::create_dir_all(&checked_dir)?;
    let checked = checked_dir.join("libmusicrfm.so");
    std::fs::copy(target_dir.join("debug").join("libmusicrfm.so"), &checked)
        .context("copying the allocation-checked plugin")?;
    let checked = std::fs::canonicalize(checked)?;

    cargo_test(
        &["--workspace"],
        extra,
        &[
            ("MUSICRFM_CLAP", clap.as_os_str()),
            ("MUSICRFM_CLAP_ALLOC_CHECKED", checked.as_os_str()),
            ("MUSICRFM_STANDALONE", standalone.as_os_str()),
        ],
    )
}

/// `cargo test ARGS EXTRA` with `env` set; an error names the command when it fails.
fn cargo_test(
    args: &[&str],
    extra: &[String],
    env: &[(&str, &std::ffi::OsStr)],
) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .arg("test")
        .args(args)
        .args(extra)
        .envs(env.iter().copied())
        .status()
        .context("could not run cargo test")?;
    if !status.success() {
        bail!("cargo test {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The target [`run_aarch64`] builds for.
const AARCH64: &str = "aarch64-unknown-linux-gnu";

/// `cargo xtask test-aarch64 [cargo test args…]`: every `engine` test built for 64-bit ARM Linux
/// and run under user-mode emulation (`qemu-aarch64`), so the NEON kernels (`engine::matvec`),
/// the generic attention and element-wise loops that ARM machines take, and the parity with the
/// reference run as they would on Apple Silicon or a Linux ARM server (same instruction set,
/// emulated). Needs the target's standard library (`rustup target add
/// aarch64-unknown-linux-gnu`), a cross linker and C library (Debian: `gcc-aarch64-linux-gnu
/// libc6-dev-arm64-cross`) and `qemu-aarch64` (Debian: `qemu-user`); `.ci/run` installs them.
/// The linker, the runner and the emulator's library root can be overridden with cargo's
/// `CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_{LINKER,RUNNER}` and qemu's `QEMU_LD_PREFIX`.
pub fn run_aarch64(extra: &[String]) -> anyhow::Result<()> {
    nice_plug_xtask::chdir_workspace_root()?;
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .with_context(|| format!("could not run {rustc} --print sysroot"))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if !sysroot
        .join("lib/rustlib")
        .join(AARCH64)
        .join("lib")
        .is_dir()
    {
        bail!(
            "the {AARCH64} standard library is not installed in {}: run `rustup target add {AARCH64}`",
            sysroot.display()
        );
    }
    let linker_var = "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER";
    let runner_var = "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER";
    let linker = std::env::var(linker_var).unwrap_or_else(|_| "aarch64-linux-gnu-gcc".to_owned());
    let runner = std::env::var(runner_var).unwrap_or_else(|_| "qemu-aarch64".to_owned());
    let libraries =
        std::env::var("QEMU_LD_PREFIX").unwrap_or_else(|_| "/usr/aarch64-linux-gnu".to_owned());
    let runs = |program: &str| {
        Command::new(program)
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success())
    };
    if !runs(&linker) {
        bail!(
            "the cross linker `{linker}` ({linker_var}) does not run: on Debian or Ubuntu, \
             `apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross`"
        );
    }
    let emulator = runner.split_whitespace().next().unwrap_or_default();
    if !runs(emulator) {
        bail!(
            "the emulator `{emulator}` ({runner_var}) does not run: on Debian or Ubuntu, \
             `apt-get install qemu-user`"
        );
    }
    if !PathBuf::from(&libraries).join("lib").is_dir() {
        bail!(
            "no ARM C library under {libraries} (QEMU_LD_PREFIX): on Debian or Ubuntu, \
             `apt-get install libc6-dev-arm64-cross`"
        );
    }
    cargo_test(
        &["-p", "engine", "--target", AARCH64],
        extra,
        &[
            (linker_var, linker.as_ref()),
            (runner_var, runner.as_ref()),
            ("CC_aarch64_unknown_linux_gnu", linker.as_ref()),
            ("QEMU_LD_PREFIX", libraries.as_ref()),
        ],
    )
}
