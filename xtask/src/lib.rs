//! musicrfm's offline tools as a library: concept datasets (SynTheory), feature extraction,
//! probe training, steering evaluation, rendering and benchmarks. The `cargo xtask` binary
//! (`main.rs`) only parses the command line and calls these; the model-side work (generation,
//! the feature protocol, steering) lives in `engine`.

pub mod audio_features;
pub mod bench_decode;
pub mod bench_rfm;
pub mod bench_stream;
pub mod bounce;
pub mod clap_host;
pub mod distances;
pub mod eval_steering;
pub mod extract;
pub mod feature_store;
pub mod midi_file;
pub mod model_source;
pub mod npy;
pub mod probe_plot;
pub mod render;
pub mod stream;
pub mod syntheory;
pub mod syntheory_music;
pub mod test_cmd;
pub mod train_probes;
pub mod training;

/// The clone's root. `cargo run` (so `cargo xtask`) and `cargo test` name the package's
/// directory at run time, which is right even where a binary built in another clone sharing
/// the target directory is reused (cargo's fingerprints do not see the clone's path, so a path
/// baked in at build time can name another clone, or one deleted since); the build's own path
/// otherwise.
pub fn workspace_root() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(
            || env!("CARGO_MANIFEST_DIR").into(),
            std::path::PathBuf::from,
        )
        .join("..")
}

/// The benches' thread count (`cargo xtask bench --threads N`): rayon's global pool with `N`
/// threads, which the benches' own work, their child processes and their reference runs then
/// take (each reads [`rayon::current_num_threads`]); `None` leaves rayon's default.
pub fn bench_threads(threads: Option<usize>) -> anyhow::Result<()> {
    use anyhow::Context;
    let Some(threads) = threads else {
        return Ok(());
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .with_context(|| format!("--threads {threads}: starting rayon's threads"))
}

/// [`directions::atomic::write_atomic`] for a byte buffer, with the path in the error.
pub fn write_file(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
    directions::atomic::write_bytes_atomic(path, bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// Write `path` atomically through a temporary sibling that `write` fills (see
/// [`directions::atomic::write_atomic`]), with the path in the error.
pub fn write_file_with(
    path: &std::path::Path,
    write: impl FnOnce(&std::path::Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    directions::atomic::write_atomic(path, write)
        .with_context(|| format!("writing {}", path.display()))
}
