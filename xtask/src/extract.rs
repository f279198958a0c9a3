//! `cargo xtask extract`: per-layer clip features for probe training, through the engine's one
//! feature protocol (`engine::features`: mono → model rate → EnCodec codes → decoder without
//! text unless `--text-conditioned` → every block's output mean-pooled). `--features
//! chroma|logmel` computes model-free features from the audio instead (one "layer"). Output:
//! see `feature_store`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use engine::MusicGen;
use engine::features::{BlockFeatures, FeatureProtocol};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde_json::{Value, json};

use crate::audio_features::{self, FEATURE_KINDS};
use crate::eval_steering::LayerProtocol;
use crate::feature_store::{
    FEATURES_FORMAT, Shard, read_manifest, read_shard, shard_name, write_shard,
};
use crate::model_source;

/// Mean-pooled per-block MusicGen features (or chroma / log-mel) of a SynTheory dataset.
#[derive(Debug, Args)]
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
    /// `ours`: blocks 0…n−1 at their outputs. `reference`: MusicRFM's code — blocks 1…n−1, the
    /// last one after the final LayerNorm (docs/algorithms.md §6).
    #[arg(long, value_enum, default_value_t = LayerProtocol::Ours, conflicts_with = "features")]
    pub layer_protocol: LayerProtocol,
    /// Model-free features instead of MusicGen: chroma | logmel.
    #[arg(long)]
    pub features: Option<String>,
    /// Clips per shard file (the unit of resumption).
    #[arg(long, default_value_t = 256)]
    pub shard_size: usize,
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

    // The model, or none for model-free features (`--features`).
    let (model, model_name, d, n_layers_model) = match &args.features {
        Some(kind) => {
            let d = match kind.as_str() {
                "chroma" => 12,
                "logmel" => 64,
                other => bail!(
                    "--features {other:?} is not one of {}",
                    FEATURE_KINDS.join(", ")
                ),
            };
            (None, kind.clone(), d, 1)
        }
        None => {
            let name = args.model.clone().unwrap_or_default();
            let dir = model_source::resolve(&name)?;
            let device = engine::default_device();
            let model =
                MusicGen::load(&dir, &device).with_context(|| format!("loading --model {name}"))?;
            let d = model.config.decoder.hidden_size;
            let n = model.config.decoder.num_hidden_layers;
            (Some(model), model_display_name(&name), d, n)
        }
    };
    let source = args.features.as_deref().unwrap_or("musicgen");
    let reference = args.layer_protocol == LayerProtocol::Reference;
    // MusicRFM's code never reads block 0 (with one block there is nothing else to read).
    let skip = usize::from(reference && n_layers_model > 1);
    let layer_ids: Vec<usize> = (skip..n_layers_model).collect();
    let run_key = json!({
        "source": source,
        "model": model_name,
        "text_conditioned": args.text_conditioned,
        "last_block_normed": reference,
        "pooling": "mean",
        "clips": manifest.len(),
    })
    .to_string();

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating --out {}", args.out.display()))?;
    let protocol = FeatureProtocol {
        text_conditioned: args.text_conditioned,
        last_block_normed: reference,
    };
    let block_features = model
        .as_ref()
        .map(|m| BlockFeatures::new(m, protocol))
        .transpose()?;
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
            let feats = match &block_features {
                Some(features) => {
                    let paths: Vec<&Path> = batch.iter().map(PathBuf::as_path).collect();
                    features.of_files(&paths).map_err(|e| match e {
                        engine::features::FeatureError::UnequalLengths { .. } => {
                            anyhow::anyhow!("{e} (use --batch 1)")
                        }
                        e => e.into(),
                    })?
                }
                None => audio_batch(source, batch)?,
            };
            for (l, f) in layers.iter_mut().zip(feats.into_iter().skip(skip)) {
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
    crate::write_file(&args.out.join("manifest.jsonl"), manifest_text.as_bytes())?;
    let info = json!({
        "format": FEATURES_FORMAT,
        "source": source,
        "model": model_name,
        "d_model": d,
        "n_layers_model": n_layers_model,
        "layers": layer_ids,
        "pooling": "mean",
        "site": "block_output",
        "text_conditioned": args.text_conditioned,
        "last_block_normed": reference,
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
    crate::write_file(
        &args.out.join("features.json"),
        serde_json::to_string_pretty(&info)?.as_bytes(),
    )?;
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
            let (x, rate) = engine::audio::read_wav_mono(f)?;
            Ok(match kind {
                "chroma" => audio_features::chroma(&x, rate),
                _ => audio_features::logmel(&x, rate),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(vec![rows.concat()])
}
