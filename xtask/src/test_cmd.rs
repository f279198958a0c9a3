//! `cargo xtask test [cargo test args…]`: the project's one test command. Bundles the plugin in
//! release (the host test loads that `.clap`), then runs every workspace test.

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
    let status = Command::new(cargo)
        .args(["test", "--workspace"])
        .args(extra)
        .env("MUSICRFM_CLAP", &clap)
        .status()
        .context("could not run cargo test")?;
    if !status.success() {
        bail!("cargo test --workspace failed ({status})");
    }
    Ok(())
}
