//! `cargo xtask extract`: per-layer clip features for probe training (docs/algorithms.md §1).
//!
//! MusicGen protocol: mono → resample to the model's rate (windowed sinc) → EnCodec codes →
//! the decoder LM on the undelayed codes (all 4 codebooks of frame t at position t, no BOS),
//! without text (cross-attention skipped) unless `--text-conditioned` (empty prompt) → every
//! block's output mean-pooled over time. `--features chroma|logmel` computes model-free
//! features from the audio instead (one "layer"). Output: see `feature_store`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use burn::tensor::{Tensor, TensorData};
use clap::Parser;
use engine::{CaptureBlocks, CrossContext, MusicGen};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde_json::{Value, json};

use crate::audio_features::{self, FEATURE_KINDS};
use crate::feature_store::{
    FEATURES_FORMAT, Shard, read_manifest, read_shard, shard_name, write_shard,
};
use crate::model_source;

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask extract",
    about = "Mean-pooled per-block MusicGen features (or chroma / log-mel) of a SynTheory dataset"
)]
pub struct ExtractArgs {
    /// Model directory or Hugging Face repo id (not needed with --features).
    #[arg(long, required_unless_present = "features")]
    pub model: Option<String>,
    /// Dataset directory written by `cargo xtask syntheory` (dataset.json + manifest.jsonl).
    #[arg(long)]
    pub dataset: PathBuf,
    /// Output features directory (existing valid shards of the same run are kept).
    #[arg(long)]
    pub out: PathBuf,
    /// Clips per decoder batch.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Run the decoder with the empty-prompt text condition (cross-attention on).
    #[arg(long, conflicts_with = "features")]
    pub text_conditioned: bool,
    /// Model-free features instead of MusicGen: chroma | logmel.
    #[arg(long)]
    pub features: Option<String>,
    /// Clips per shard file (the unit of resumption).
    #[arg(long, default_value_t = 256)]
    pub shard_size: usize,
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let args = ExtractArgs::try_parse_from(
        std::iter::once("cargo xtask extract".to_owned()).chain(args.iter().cloned()),
    )
    .unwrap_or_else(|e| e.exit());
    extract(&args)
}

/// Where the features come from.
enum Source {
    Model {
        model: Box<MusicGen>,
        cross: Box<Option<(Tensor<3>, Tensor<2>)>>,
    },
    Audio(String),
}

pub fn extract(args: &ExtractArgs) -> anyhow::Result<()> {
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if args.shard_size == 0 {
        bail!("--shard-size must be at least 1");
    }
    let info_path = args.dataset.join("dataset.json");
    let dataset: Value = serde_json::from_slice(
        &std::fs::read(&info_path)
            .with_context(|| format!("reading --dataset {}", info_path.display()))?,
    )
    .with_context(|| format!("parsing {}", info_path.display()))?;
    let manifest = read_manifest(&args.dataset.join("manifest.jsonl"))?;
    if manifest.is_empty() {
        bail!(
            "--dataset {}: the manifest is empty",
            args.dataset.display()
        );
    }
    let files: Vec<PathBuf> = manifest
        .iter()
        .enumerate()
        .map(|(i, row)| {
            row["file"]
                .as_str()
                .map(|f| args.dataset.join(f))
                .with_context(|| format!("manifest row {i} has no `file`"))
        })
        .collect::<anyhow::Result<_>>()?;

    let (source, model_name, d, n_layers_model, rate) = match &args.features {
        Some(kind) => {
            let d = match kind.as_str() {
                "chroma" => 12,
                "logmel" => 64,
                other => bail!(
                    "--features {other:?} is not one of {}",
                    FEATURE_KINDS.join(", ")
                ),
            };
            (Source::Audio(kind.clone()), kind.clone(), d, 1, 0)
        }
        None => {
            let name = args.model.clone().unwrap_or_default();
            let dir = model_source::resolve(&name)?;
            let device = engine::default_device();
            let model =
                MusicGen::load(&dir, &device).with_context(|| format!("loading --model {name}"))?;
            let d = model.config.decoder.hidden_size;
            let n = model.config.decoder.num_hidden_layers;
            let rate = model.config.audio_encoder.sampling_rate as u32;
            let cross = if args.text_conditioned {
                let c = model.condition("", false)?;
                Some((c.encoder_states, c.mask))
            } else {
                None
            };
            let model = Box::new(model);
            let cross = Box::new(cross);
            (
                Source::Model { model, cross },
                model_display_name(&name),
                d,
                n,
                rate,
            )
        }
    };
    let layer_ids: Vec<usize> = (0..n_layers_model).collect();
    let run_key = json!({
        "source": match &source { Source::Model { .. } => "musicgen", Source::Audio(k) => k },
        "model": model_name,
        "text_conditioned": args.text_conditioned,
        "pooling": "mean",
        "clips": manifest.len(),
    })
    .to_string();

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating --out {}", args.out.display()))?;
    let n = manifest.len();
    let bar = ProgressBar::new(n as u64);
    bar.set_style(
        ProgressStyle::with_template("extract [{bar:40}] {pos}/{len} clips, {elapsed} (eta {eta})")
            .expect("static template")
            .progress_chars("=> "),
    );
    let mut shards = Vec::new();
    for (i, start) in (0..n).step_by(args.shard_size).enumerate() {
        let rows = args.shard_size.min(n - start);
        let path = args.out.join(shard_name(i));
        shards.push(shard_name(i));
        if read_shard(&path, &run_key, &layer_ids, d, start, rows).is_ok() {
            bar.inc(rows as u64);
            continue;
        }
        let mut layers = vec![Vec::with_capacity(rows * d); layer_ids.len()];
        for b0 in (start..start + rows).step_by(args.batch) {
            let b1 = (b0 + args.batch).min(start + rows);
            let batch = &files[b0..b1];
            let feats = match &source {
                Source::Audio(kind) => audio_batch(kind, batch)?,
                Source::Model { model, cross } => {
                    model_batch(model, cross.as_ref().as_ref(), rate, batch)?
                }
            };
            for (l, f) in layers.iter_mut().zip(feats) {
                l.extend(f);
            }
            bar.inc((b1 - b0) as u64);
        }
        write_shard(
            &path,
            &run_key,
            &layer_ids,
            d,
            &Shard {
                start,
                rows,
                layers,
            },
        )?;
    }
    bar.finish();

    let manifest_text: String = manifest.iter().map(|r| format!("{r}\n")).collect();
    crate::atomic_write(&args.out.join("manifest.jsonl"), |f| {
        use std::io::Write;
        Ok(f.write_all(manifest_text.as_bytes())?)
    })?;
    let info = json!({
        "format": FEATURES_FORMAT,
        "source": match &source { Source::Model { .. } => "musicgen", Source::Audio(k) => k },
        "model": model_name,
        "d_model": d,
        "n_layers_model": n_layers_model,
        "layers": layer_ids,
        "pooling": "mean",
        "site": "block_output",
        "text_conditioned": args.text_conditioned,
        "concept": dataset["concept"],
        "classes": dataset["classes"],
        "kind": dataset["kind"],
        "label_key": dataset["label_key"],
        "dataset": args.dataset.display().to_string(),
        "clips": n,
        "shard_size": args.shard_size,
        "shards": shards,
        "run_key": run_key,
    });
    crate::atomic_write(&args.out.join("features.json"), |f| {
        use std::io::Write;
        Ok(f.write_all(serde_json::to_string_pretty(&info)?.as_bytes())?)
    })?;
    eprintln!(
        "{n} clips × {} layers × {d} → {}",
        layer_ids.len(),
        args.out.display()
    );
    Ok(())
}

/// A repo id as given, or a directory's name (the directions file's `model` field).
fn model_display_name(source: &str) -> String {
    let p = Path::new(source);
    if p.is_dir() {
        p.canonicalize()
            .ok()
            .and_then(|c| c.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| source.to_owned())
    } else {
        source.to_owned()
    }
}

fn audio_batch(kind: &str, files: &[PathBuf]) -> anyhow::Result<Vec<Vec<f32>>> {
    let rows: Vec<Vec<f32>> = files
        .par_iter()
        .map(|f| {
            let (x, rate) = audio_features::read_wav_mono(f)?;
            Ok(match kind {
                "chroma" => audio_features::chroma(&x, rate),
                _ => audio_features::logmel(&x, rate),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(vec![rows.concat()])
}

/// Mean-pooled block outputs of one batch: one `batch × d` row-major vector per block.
fn model_batch(
    model: &MusicGen,
    cross: Option<&(Tensor<3>, Tensor<2>)>,
    rate: u32,
    files: &[PathBuf],
) -> anyhow::Result<Vec<Vec<f32>>> {
    let audio: Vec<Vec<f32>> = files
        .par_iter()
        .map(|f| {
            let (x, from) = audio_features::read_wav_mono(f)?;
            audio_features::resample(&x, from, rate)
                .with_context(|| format!("resampling {}", f.display()))
        })
        .collect::<anyhow::Result<_>>()?;
    let len = audio[0].len();
    if let Some((i, a)) = audio.iter().enumerate().find(|(_, a)| a.len() != len) {
        bail!(
            "{} has {} samples at {rate} Hz but {} has {len}: clips of one batch must be equally long (use --batch 1)",
            files[i].display(),
            a.len(),
            files[0].display()
        );
    }
    let b = audio.len();
    let device = &model.device;
    let wave = Tensor::<3>::from_data(TensorData::new(audio.concat(), [b, 1, len]), device);
    let codes = model.audio_encoder.encode(wave);
    let context: Option<CrossContext> = cross.map(|(states, mask)| {
        model.decoder.cross_context(
            states.clone().repeat_dim(0, b),
            mask.clone().repeat_dim(0, b),
        )
    });
    let mut capture = CaptureBlocks::default();
    model.decoder.hidden(codes, context.as_ref(), &mut capture);
    capture
        .outputs
        .into_iter()
        .map(|h| {
            h.mean_dim(1)
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("reading block output: {e:?}"))
        })
        .collect()
}
