//! `cargo xtask test [cargo test args…]`: the project's one test command. Bundles the plugin in
//! release (the host tests load that `.clap`), builds a debug plugin that aborts when
//! `process()` allocates (`tests/tests/process_allocs.rs` loads it) and the standalone app with
//! the same check (`tests/tests/editor_screenshot.rs` runs it under Xvfb with the editor open),
//! then runs every workspace test.

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

    let status = Command::new(cargo)
        .args(["test", "--workspace"])
        .args(extra)
        .env("MUSICRFM_CLAP", &clap)
        .env("MUSICRFM_CLAP_ALLOC_CHECKED", &checked)
        .env("MUSICRFM_STANDALONE", &standalone)
        .status()
        .context("could not run cargo test")?;
    if !status.success() {
        bail!("cargo test --workspace failed ({status})");
    }
    Ok(())
}
