//! `--model`: a directory or a repo id. Repo ids come from the local Hugging Face cache; a model
//! that is not there (or only in part) is downloaded into it, with a progress bar
//! (`engine::hub::download`; `HF_ENDPOINT`, `HF_TOKEN` and `HF_HUB_OFFLINE` apply).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use engine::hub::download::{DownloadOptions, DownloadProgress, HubConfig, has_model_files};
use engine::{LoadError, LoadOptions, WeightFormat};
use indicatif::{HumanBytes, HumanDuration, ProgressBar, ProgressStyle};

/// `--dtype`: shared by `render` and `stream`.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct DtypeFlag {
    /// Weight format of the decoder's linear layers on the CPU: f32, bf16, q8 or q4 (8 or 4
    /// bits, one scale per 32 weights), quantized at load from the checkpoint's dtype.
    #[arg(long = "dtype", value_name = "f32|bf16|q8|q4", default_value_t = WeightFormat::F32)]
    pub dtype: WeightFormat,
}

impl DtypeFlag {
    pub fn load_options(self) -> LoadOptions {
        LoadOptions {
            weight_format: self.dtype,
        }
    }
}

pub fn resolve(source: &str) -> anyhow::Result<PathBuf> {
    let is_repo_id = engine::hub::parse_repo_id(source).is_some() && !Path::new(source).exists();
    match engine::hub::resolve_model(source) {
        Ok(dir) if !is_repo_id || has_model_files(&dir) => Ok(dir),
        Ok(_) | Err(LoadError::ModelNotFound { .. }) if is_repo_id => download(source),
        Ok(dir) => Ok(dir),
        Err(e) => Err(e.into()),
    }
}

fn download(repo: &str) -> anyhow::Result<PathBuf> {
    let config = HubConfig::from_env();
    if !config.offline {
        eprintln!(
            "{repo} is not in the Hugging Face cache; downloading it from {} into {}",
            config.endpoint,
            config.cache_dir.display()
        );
    }
    let progress = DownloadProgress::new();
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("[{bar:40}] {bytes}/{total_bytes} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let done = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                show(&bar, &progress);
                std::thread::sleep(Duration::from_millis(100));
            }
            show(&bar, &progress);
        });
        let result = engine::hub::download::download_model(
            repo,
            &config,
            &DownloadOptions::default(),
            &progress,
        );
        done.store(true, Ordering::Relaxed);
        result
    });
    bar.finish_and_clear();
    let dir = result?;
    eprintln!("{repo}: {}", dir.display());
    Ok(dir)
}

fn show(bar: &ProgressBar, progress: &DownloadProgress) {
    let s = progress.snapshot();
    bar.set_length(s.total);
    bar.set_position(s.done);
    let rate = if s.bytes_per_second > 0.0 {
        format!(", {}/s", HumanBytes(s.bytes_per_second as u64))
    } else {
        String::new()
    };
    let eta = s
        .eta
        .map(|e| format!(", {} left", HumanDuration(e)))
        .unwrap_or_default();
    bar.set_message(format!("{}{rate}{eta}", s.file));
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        dtype: DtypeFlag,
    }

    #[test]
    fn dtype_defaults_to_f32_parses_each_format_and_names_the_flag_when_wrong() {
        assert_eq!(Cli::parse_from(["x"]).dtype.dtype, WeightFormat::F32);
        for format in WeightFormat::ALL {
            let cli = Cli::parse_from(["x", "--dtype", format.name()]);
            assert_eq!(cli.dtype.load_options().weight_format, format);
        }
        let err = Cli::try_parse_from(["x", "--dtype", "q9"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--dtype")
                && err.contains("unknown weight format `q9`: expected f32, bf16, q8 or q4"),
            "{err}"
        );
    }
}
