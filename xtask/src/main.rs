//! `cargo xtask <command>`: bundling (nice-plug-xtask) and musicrfm's offline tools.
//!
//! Commands:
//!   bundle <pkg> [--release]     CLAP + VST3 bundles in target/bundled (nice-plug-xtask)
//!   test                         bundle the plugin, then run every workspace test against it
//!   render …                     offline generation to WAV (see `cargo xtask render --help`)
//!   bench <what>                 benchmarks that print a ratio against the reference run
//!   syntheory …                  render a SynTheory concept to WAV clips + manifest
//!   extract …                    per-layer clip features (MusicGen blocks, chroma, log-mel)
//!   train-probes …               RFM probes per layer → directions file v1 + report

use std::process::ExitCode;

mod audio_features;
mod bench;
mod bench_decode;
mod bench_rfm;
mod eval_steering;
mod extract;
mod feature_store;
mod model_source;
mod npy;
mod probe_plot;
mod render;
mod syntheory;
mod syntheory_music;
mod test_cmd;
mod train_probes;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(command) = args.next() else {
        eprintln!("usage: cargo xtask <bundle|test|render|bench|syntheory|extract|train-probes> …");
        return ExitCode::from(2);
    };
    let rest: Vec<String> = args.collect();
    let result = match command.as_str() {
        "bundle" | "bundle-universal" | "known-packages" => {
            nice_plug_xtask::main_with_args("xtask", std::iter::once(command).chain(rest))
        }
        "test" => test_cmd::run(&rest),
        "render" => render::run(&rest),
        "bench" => bench::run(&rest),
        "eval-steering" => eval_steering::run(&rest),
        "syntheory" => syntheory::run(&rest),
        "extract" => extract::run(&rest),
        "train-probes" => train_probes::run(&rest),
        other => Err(anyhow::anyhow!(
            "unknown command `{other}`; expected one of: bundle, test, render, bench, eval-steering, syntheory, extract, train-probes"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Write `path` through a sibling temporary file renamed into place on success, so a failed
/// run never leaves a truncated file where a good one was.
pub fn atomic_write_path(
    path: &std::path::Path,
    write: impl FnOnce(&std::path::Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("{} is not a file path", path.display()))?;
    // The original name stays at the end, so writers that go by the extension (PNG) still work.
    let tmp = path.with_file_name(format!(
        ".tmp-{}-{}",
        std::process::id(),
        name.to_string_lossy()
    ));
    match write(&tmp).and_then(|()| std::fs::rename(&tmp, path).map_err(Into::into)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// [`atomic_write_path`] for a writer.
pub fn atomic_write(
    path: &std::path::Path,
    write: impl FnOnce(&mut std::fs::File) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    atomic_write_path(path, |tmp| {
        let mut file = std::fs::File::create(tmp)?;
        write(&mut file)?;
        file.sync_all()?;
        Ok(())
    })
}
