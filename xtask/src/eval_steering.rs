//! `cargo xtask eval-steering`: the paper's Table 2 for any model. For each strength η and each
//! target class, render N clips over a prompt list with that class steered (the one render path,
//! `engine::render`), and render each clip unsteered with the same seed. Per η it reports
//!
//! - **accuracy** of the concept's multiclass probe on the steered clips, with the chance line —
//!   or, for a regression concept (tempo: a `regression` directions file and probe), the **BPM
//!   shift**: the mean predicted value of the steered clips minus that of the unsteered clips
//!   (the η = 0 mean, since η = 0 reproduces them);
//! - the share of **codes changed** against the unsteered clips (0 at η = 0);
//! - the **Fréchet distance** and **MMD²** (RBF, median heuristic, unbiased; [`crate::distances`])
//!   between the steered and the unsteered clips' embeddings.
//!
//! Clips are classified through the feature protocol the probe was trained with
//! (`engine::features`, read from the train-probes report).
//!
//! **`--classifier block|layers`** (default `block`): `block` is the multiclass (or regression)
//! probe of one block, the report's best one — what `train-probes` always writes. `layers`
//! averages the per-block probes' class scores (xRFM's clamp-and-normalise probabilities; the
//! predicted values for regression) over every block that has one (`train-probes
//! --layer-probes`) and takes the argmax. The paper classifies with a cross-layer aggregate
//! (MusicRFM's code fits a second RFM on the concatenated per-layer projections); that second
//! model is not implemented, and the mean of per-layer scores is the simple stand-in. `block` stays
//! the default because its probe always exists, is the best-validated single model, and is cheap;
//! the per-block probes take ~70 MB each at d = 2048 and are written only when asked for.
//!
//! **`--distance-features model|chroma|logmel`** (default `model`): what FD and MMD compare.
//! `model` is the mean-pooled output of one decoder block (`--distance-block`, default the last)
//! through the same feature protocol — a learned audio embedding that needs no other model, in
//! the space the directions live in, and the same block for every concept so the columns compare
//! across concepts. `chroma` (12-d) and `logmel` (64-d) are model-free (`crate::audio_features`)
//! and better conditioned with few clips, but see only pitch-class or spectral-envelope changes.
//! The paper does not name its FD/MMD embedding (its magnitudes suggest CLAP); CLAP, and the CLAP
//! text-alignment column, are not used because no CLAP model is available offline here. The
//! reference set is the unsteered clips of the same seeds and prompts, so both are exactly 0 at
//! η = 0; the paper's reference distribution is not specified. Magnitudes depend on the
//! embedding and are not comparable to the paper's numbers, only their trend against η is.
//!
//! **`--layer-protocol ours|reference`** (default `ours`): `ours` steers and reads blocks
//! 0…n−1, each at its output (docs/algorithms.md §0.1). `reference` reproduces MusicRFM's code:
//! block 0 is neither steered nor read (its row is dropped from the directions file before the
//! layer weights are computed), and the last block's features are read after the final LayerNorm,
//! while its direction is still added before it, as MusicRFM's hook does. See docs/algorithms.md §6
//! for how η compares between the two.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use directions::faer::Mat;
use directions::{ConceptKind, DirectionsFile, Probe, ProbeKind};
use engine::features::{BlockFeatures, FeatureProtocol};
use engine::render::{decode_audio, generate_codes};
use engine::steering::{LayerWeights, Schedule, SteeringPlan};
use engine::{GenerationOptions, MusicGen, Sampling};
use indicatif::{ProgressBar, ProgressStyle};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::training::{TrainReport, layer_probe_path};
use crate::{audio_features, distances, model_source};

const FONT: &str = "DejaVu Sans";

const DEFAULT_PROMPTS: [&str; 4] = [
    "A relaxing jazz song with piano",
    "Upbeat electronic dance music with synths",
    "Slow classical piano piece",
    "Fast-paced rock song with guitar",
];

/// Which probe classifies the clips (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassifierKind {
    /// The probe of one block (the report's best, or `--block`).
    Block,
    /// The mean of every block's probe scores (needs `train-probes --layer-probes`).
    Layers,
}

/// Which blocks are steered and read, and where (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerProtocol {
    /// Blocks 0…n−1, each at its output.
    Ours,
    /// MusicRFM's code: blocks 1…n−1, the last read after the final LayerNorm.
    Reference,
}

/// The embedding FD and MMD compare (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DistanceFeatures {
    /// The mean-pooled output of one decoder block (`--distance-block`).
    Model,
    /// 12-d chroma of the audio.
    Chroma,
    /// 64 log mel bands of the audio.
    Logmel,
}

/// What the probe predicts: a class (accuracy) or a value (its shift).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvalKind {
    Multiclass,
    Regression,
}

/// Probe accuracy (or BPM shift), codes changed, FD and MMD of steered generations against
/// strength: the paper's Table 2.
#[derive(Debug, Args)]
pub struct EvalArgs {
    #[arg(long, default_value = engine::hub::DEFAULT_MODEL)]
    pub model: String,
    /// The concept's directions file (format v1); `regression` for tempo.
    #[arg(long)]
    pub directions: PathBuf,
    /// The concept's multiclass (or regression) probe (`<stem>.probe.safetensors` from
    /// train-probes); its report `<stem>.report.json` beside it gives the block and the feature
    /// protocol, and `--classifier layers` reads `<stem>.probe.b<block>.safetensors` beside it.
    #[arg(long)]
    pub probe: PathBuf,
    /// `block`: the probe of one block (default: it always exists and is the best-validated
    /// single probe). `layers`: the mean of every block's probe scores (the paper aggregates
    /// over layers; needs `train-probes --layer-probes`).
    #[arg(long, value_enum, default_value_t = ClassifierKind::Block)]
    pub classifier: ClassifierKind,
    /// Override the report's block (`--classifier block`: the decoder block whose mean-pooled
    /// output the probe reads).
    #[arg(long)]
    pub block: Option<usize>,
    /// `ours`: blocks 0…n−1 at their outputs. `reference`: MusicRFM's code — block 0 neither
    /// steered nor read, the last block read after the final LayerNorm.
    #[arg(long, value_enum, default_value_t = LayerProtocol::Ours)]
    pub layer_protocol: LayerProtocol,
    /// The embedding of FD and MMD: `model` (default: a decoder block's mean-pooled output, no
    /// other model needed), `chroma` or `logmel`.
    #[arg(long, value_enum, default_value_t = DistanceFeatures::Model)]
    pub distance_features: DistanceFeatures,
    /// The block of `--distance-features model` (default: the last).
    #[arg(long)]
    pub distance_block: Option<usize>,
    /// Strengths, comma-separated (the paper: 0,0.15,0.3,0.45,0.6; tempo also negative).
    #[arg(
        long,
        default_value = "0,0.15,0.3,0.45,0.6",
        value_delimiter = ',',
        allow_hyphen_values = true
    )]
    pub etas: Vec<f32>,
    /// Clips per (η, class).
    #[arg(long, default_value_t = 4)]
    pub clips: usize,
    /// Prompts, separated by `|` (default: the paper's four example prompts).
    #[arg(long)]
    pub prompts: Option<String>,
    /// Target classes by name or index, comma-separated (default: every class).
    #[arg(long, value_delimiter = ',')]
    pub classes: Option<Vec<String>>,
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    #[arg(long, default_value = "power:0.95")]
    pub layers: String,
    #[arg(long, default_value_t = engine::steering::DEFAULT_GATE)]
    pub gate: f32,
    #[arg(long, default_value_t = 3.0)]
    pub guidance: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder: results.json, eval.png.
    #[arg(long)]
    pub out: PathBuf,
}

/// `results.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalResults {
    pub model: String,
    pub directions: PathBuf,
    pub probe: PathBuf,
    pub kind: EvalKind,
    pub classifier: ClassifierKind,
    /// The probe's block with `--classifier block`.
    pub block: Option<usize>,
    /// The blocks the classifier reads.
    pub classifier_blocks: Vec<usize>,
    pub layer_protocol: LayerProtocol,
    /// The blocks the directions file may steer (after the layer protocol).
    pub steered_blocks: Vec<usize>,
    pub protocol: FeatureProtocol,
    pub distance_features: DistanceFeatures,
    /// The block of `distance_features = model`.
    pub distance_block: Option<usize>,
    pub concept: String,
    pub classes: Vec<String>,
    /// 1/K for a multiclass probe.
    pub chance: Option<f64>,
    /// Regression: the mean predicted value of the unsteered clips.
    pub unsteered_mean: Option<f64>,
    pub clips_per_class: usize,
    pub seconds: f64,
    pub prompts: Vec<String>,
    pub layers: String,
    pub gate: f32,
    pub guidance: f32,
    pub seed: u64,
    pub rows: Vec<EvalRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalRow {
    pub eta: f32,
    /// Multiclass: the share of steered clips classified as their target class.
    pub accuracy: Option<f64>,
    pub per_class: Vec<ClassAccuracy>,
    /// Regression: the mean predicted value (BPM for tempo) of the steered clips.
    pub mean_prediction: Option<f64>,
    /// Regression: `mean_prediction` minus the unsteered clips' mean.
    pub bpm_shift: Option<f64>,
    /// Share of codes that differ from the unsteered clip of the same seed and prompt.
    pub codes_changed: f64,
    /// Fréchet distance between the steered and unsteered clips' embeddings.
    pub frechet_distance: f64,
    /// Unbiased MMD² (RBF, median heuristic) between them; none with fewer than 2 clips.
    pub mmd: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassAccuracy {
    pub class: String,
    pub accuracy: f64,
}

/// The probe(s) that classify a clip from its per-block pooled features.
struct Classifier {
    probes: Vec<(usize, Probe<f32>)>,
    kind: EvalKind,
}

enum Prediction {
    Class(usize),
    Value(f64),
}

impl Classifier {
    fn predict(&self, pooled: &[Vec<f32>]) -> anyhow::Result<Prediction> {
        let row = |block: usize| {
            let r = &pooled[block];
            Mat::<f32>::from_fn(1, r.len(), |_, j| r[j])
        };
        match (self.kind, self.probes.as_slice()) {
            (EvalKind::Multiclass, [(block, probe)]) => Ok(Prediction::Class(
                probe.predict_labels(row(*block).as_ref())?[0],
            )),
            (EvalKind::Multiclass, probes) => {
                let mut mean: Vec<f64> = Vec::new();
                for (block, probe) in probes {
                    let p = probe.predict_proba(row(*block).as_ref())?.remove(0);
                    mean.resize(p.len(), 0.0);
                    mean.iter_mut().zip(&p).for_each(|(m, v)| *m += v);
                }
                let best = (0..mean.len())
                    .max_by(|&a, &b| mean[a].total_cmp(&mean[b]).then(b.cmp(&a)))
                    .unwrap_or(0);
                Ok(Prediction::Class(best))
            }
            (EvalKind::Regression, probes) => {
                let mut sum = 0.0;
                for (block, probe) in probes {
                    sum += probe.predict_values(row(*block).as_ref())?[0];
                }
                Ok(Prediction::Value(sum / probes.len() as f64))
            }
        }
    }
}

/// One rendered clip, as the table needs it.
struct Clip {
    prediction: Prediction,
    embedding: Vec<f64>,
}

pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    if args.clips == 0 || args.etas.is_empty() {
        bail!("--clips and --etas must not be empty");
    }
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        bail!("--seconds must be positive");
    }
    let layers = LayerWeights::parse(&args.layers)
        .map_err(|e| anyhow::anyhow!("--layers {}: {e}", args.layers))?;
    let file = DirectionsFile::read(&args.directions)?;
    let probe = Probe::<f32>::load(&args.probe)?;
    let report = TrainReport::beside_probe(&args.probe)
        .with_context(|| format!("--probe {}", args.probe.display()))?;
    let reference = args.layer_protocol == LayerProtocol::Reference;
    let kind = match (probe.kind, file.kind) {
        (ProbeKind::Multiclass { n_classes }, ConceptKind::Binary) => {
            if n_classes != file.classes.len() {
                bail!(
                    "--probe {} has {n_classes} classes, --directions {} has {}",
                    args.probe.display(),
                    args.directions.display(),
                    file.classes.len()
                );
            }
            EvalKind::Multiclass
        }
        (ProbeKind::Regression, ConceptKind::Regression) => EvalKind::Regression,
        (p, f) => bail!(
            "--probe {} is {p:?} and --directions {} is {f:?}: a multiclass probe goes with \
             class directions, a regression probe with a regression file",
            args.probe.display(),
            args.directions.display()
        ),
    };
    let (block, probes) = match args.classifier {
        ClassifierKind::Block => {
            let block = match (args.block, &report.probe) {
                (Some(b), _) => b,
                (None, Some(p)) => p.block,
                (None, None) => bail!(
                    "--probe {}: its report names no probe block (was the multiclass probe \
                     trained?); give --block",
                    args.probe.display()
                ),
            };
            (Some(block), vec![(block, probe)])
        }
        ClassifierKind::Layers => {
            if args.block.is_some() {
                bail!("--block picks the probe of --classifier block; `layers` reads them all");
            }
            let blocks: Vec<usize> = report
                .layers
                .iter()
                .filter(|l| match kind {
                    EvalKind::Multiclass => {
                        l.multiclass.as_ref().is_some_and(|m| m.fitted().is_some())
                    }
                    EvalKind::Regression => !l.binary.is_empty(),
                })
                .map(|l| l.block)
                .filter(|&b| !(reference && b == 0))
                .collect();
            if blocks.is_empty() {
                bail!(
                    "--probe {}: its report lists no per-block probes to aggregate",
                    args.probe.display()
                );
            }
            let mut probes = Vec::new();
            for b in blocks {
                let path = layer_probe_path(&args.probe, b)?;
                let p = Probe::<f32>::load(&path).with_context(|| {
                    format!(
                        "--classifier layers reads every block's probe; write them with \
                         `train-probes --layer-probes` ({} missing)",
                        path.display()
                    )
                })?;
                if p.kind != probe.kind {
                    bail!(
                        "{} is {:?}, {} is {:?}",
                        path.display(),
                        p.kind,
                        args.probe.display(),
                        probe.kind
                    );
                }
                probes.push((b, p));
            }
            (None, probes)
        }
    };
    let classifier = Classifier { probes, kind };
    let classifier_blocks: Vec<usize> = classifier.probes.iter().map(|p| p.0).collect();

    // The layer protocol: MusicRFM's code never steers (or reads) block 0.
    let mut steer_file = file.clone();
    if reference {
        let keep: Vec<usize> = (0..file.layers.len())
            .filter(|&r| file.layers[r] != 0)
            .collect();
        if keep.is_empty() {
            bail!("--layer-protocol reference drops block 0, the only row of --directions");
        }
        steer_file.layers = keep.iter().map(|&r| file.layers[r]).collect();
        for c in 0..file.classes.len() {
            steer_file.directions[c] = keep
                .iter()
                .map(|&r| file.directions[c][r].clone())
                .collect();
            steer_file.scores[c] = keep.iter().map(|&r| file.scores[c][r]).collect();
        }
    }
    let mut protocol = report.protocol;
    protocol.last_block_normed = reference;
    if protocol != report.protocol {
        eprintln!(
            "warning: the probe was trained on features with the last block {} the final \
             LayerNorm; --layer-protocol {} reads it {}",
            if report.protocol.last_block_normed {
                "after"
            } else {
                "before"
            },
            if reference { "reference" } else { "ours" },
            if reference { "after" } else { "before" },
        );
    }

    let prompts: Vec<String> = match &args.prompts {
        Some(p) => p.split('|').map(str::to_owned).collect(),
        None => DEFAULT_PROMPTS.iter().map(|p| p.to_string()).collect(),
    };
    let classes: Vec<usize> = match &args.classes {
        Some(list) => list
            .iter()
            .map(|c| engine::steering::resolve_class(&file, c, &args.directions))
            .collect::<Result<_, _>>()?,
        None => (0..file.classes.len()).collect(),
    };

    let dir = model_source::resolve(&args.model)?;
    let device = engine::default_device();
    let model = MusicGen::load(&dir, &device)?;
    let n_blocks = model.decoder.num_blocks();
    for (b, p) in &classifier.probes {
        if *b >= n_blocks || p.dim() != model.decoder.d_model() {
            bail!(
                "the probe reads block {b} with {} features; {} has {n_blocks} blocks of width {}",
                p.dim(),
                args.model,
                model.decoder.d_model()
            );
        }
    }
    let distance_block = match args.distance_features {
        DistanceFeatures::Model => {
            let b = args.distance_block.unwrap_or(n_blocks - 1);
            if b >= n_blocks {
                bail!("--distance-block {b}: {} has {n_blocks} blocks", args.model);
            }
            Some(b)
        }
        _ => None,
    };
    let features = BlockFeatures::new(&model, protocol)?;
    let rate = features.rate();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating --out {}", args.out.display()))?;
    let steps = engine::render::steps_for_seconds(
        args.seconds,
        model.config.decoder.num_codebooks,
        model.config.audio_encoder.frame_rate(),
    );
    let options = |seed| GenerationOptions {
        steps: Some(steps),
        guidance: args.guidance,
        sampling: Sampling::MUSICGEN_DEFAULT,
        seed,
        ..GenerationOptions::default()
    };
    let plan = |seed| SteeringPlan::new(n_blocks, model.decoder.d_model(), seed, &model.device);
    let clip_seed = |clip: usize, class: usize| {
        args.seed
            .wrapping_add((clip as u64) << 8)
            .wrapping_add(class as u64)
    };
    // Classify a clip and embed it for the distances.
    let analyse = |audio: Vec<f32>| -> anyhow::Result<Clip> {
        let embedding = match args.distance_features {
            DistanceFeatures::Model => None,
            DistanceFeatures::Chroma => Some(audio_features::chroma(&audio, rate)),
            DistanceFeatures::Logmel => Some(audio_features::logmel(&audio, rate)),
        };
        let pooled = features.pooled(&[audio])?;
        let embedding = embedding
            .unwrap_or_else(|| pooled[distance_block.unwrap_or(0)].clone())
            .into_iter()
            .map(f64::from)
            .collect();
        Ok(Clip {
            prediction: classifier.predict(&pooled)?,
            embedding,
        })
    };

    let total = ((args.etas.len() + 1) * classes.len() * args.clips) as u64;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("clips [{bar:40}] {pos}/{len} {msg} ({eta} left)")
            .expect("template"),
    );
    // The unsteered clip of every (class, clip) seed: the reference for codes changed, the BPM
    // shift and the distances.
    let mut unsteered_codes = Vec::new();
    let mut unsteered = Vec::new();
    for &class in &classes {
        for clip in 0..args.clips {
            let seed = clip_seed(clip, class);
            let prompt = &prompts[clip % prompts.len()];
            let codes = generate_codes(&model, prompt, options(seed), &mut plan(seed), |_| {})?;
            unsteered.push(analyse(decode_audio(&model, &codes)?)?);
            unsteered_codes.push(codes);
            bar.inc(1);
        }
    }
    let mean_value = |clips: &[Clip]| {
        let values: Vec<f64> = clips
            .iter()
            .filter_map(|c| match c.prediction {
                Prediction::Value(v) => Some(v),
                Prediction::Class(_) => None,
            })
            .collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    };
    let unsteered_mean = mean_value(&unsteered);
    let unsteered_embeddings: Vec<Vec<f64>> =
        unsteered.iter().map(|c| c.embedding.clone()).collect();

    let mut rows = Vec::new();
    for &eta in &args.etas {
        let (mut correct, mut changed, mut codes_total) = (0usize, 0usize, 0usize);
        let mut per_class = Vec::new();
        let mut steered = Vec::new();
        for (ci, &class) in classes.iter().enumerate() {
            let mut hits = 0usize;
            for clip in 0..args.clips {
                let seed = clip_seed(clip, class);
                let prompt = &prompts[clip % prompts.len()];
                let mut steering = plan(seed);
                steering.add(
                    &steer_file,
                    &args.directions,
                    class,
                    eta,
                    Schedule::Constant,
                    &layers,
                    args.gate,
                )?;
                let codes = generate_codes(&model, prompt, options(seed), &mut steering, |_| {})?;
                let baseline = &unsteered_codes[ci * args.clips + clip];
                changed += codes
                    .data
                    .iter()
                    .zip(&baseline.data)
                    .filter(|(a, b)| a != b)
                    .count();
                codes_total += codes.data.len();
                let analysed = analyse(decode_audio(&model, &codes)?)?;
                if let Prediction::Class(predicted) = analysed.prediction {
                    hits += usize::from(predicted == class);
                }
                steered.push(analysed);
                bar.inc(1);
            }
            correct += hits;
            if kind == EvalKind::Multiclass {
                per_class.push(ClassAccuracy {
                    class: file.classes[class].clone(),
                    accuracy: hits as f64 / args.clips as f64,
                });
            }
        }
        let embeddings: Vec<Vec<f64>> = steered.iter().map(|c| c.embedding.clone()).collect();
        let frechet_distance = distances::frechet_distance(&embeddings, &unsteered_embeddings)?;
        let mmd = (embeddings.len() >= 2)
            .then(|| distances::mmd2_rbf(&embeddings, &unsteered_embeddings))
            .transpose()?;
        let (accuracy, mean_prediction) = match kind {
            EvalKind::Multiclass => (Some(correct as f64 / steered.len() as f64), None),
            EvalKind::Regression => (None, mean_value(&steered)),
        };
        let bpm_shift = mean_prediction.zip(unsteered_mean).map(|(m, u)| m - u);
        bar.set_message(match (accuracy, bpm_shift) {
            (Some(a), _) => format!("η {eta}: accuracy {a:.3}"),
            (_, Some(s)) => format!("η {eta}: shift {s:+.2}"),
            _ => format!("η {eta}"),
        });
        rows.push(EvalRow {
            eta,
            accuracy,
            per_class,
            mean_prediction,
            bpm_shift,
            codes_changed: changed as f64 / codes_total.max(1) as f64,
            frechet_distance,
            mmd,
        });
    }
    bar.finish();

    let chance = (kind == EvalKind::Multiclass).then(|| 1.0 / file.classes.len() as f64);
    let results = EvalResults {
        model: args.model.clone(),
        directions: args.directions.clone(),
        probe: args.probe.clone(),
        kind,
        classifier: args.classifier,
        block,
        classifier_blocks,
        layer_protocol: args.layer_protocol,
        steered_blocks: steer_file.layers.iter().map(|&b| b as usize).collect(),
        protocol,
        distance_features: args.distance_features,
        distance_block,
        concept: file.concept.clone(),
        classes: classes.iter().map(|&c| file.classes[c].clone()).collect(),
        chance,
        unsteered_mean,
        clips_per_class: args.clips,
        seconds: args.seconds,
        prompts,
        layers: args.layers.clone(),
        gate: args.gate,
        guidance: args.guidance,
        seed: args.seed,
        rows,
    };
    print_table(&results);
    let json_path = args.out.join("results.json");
    crate::write_file(
        &json_path,
        serde_json::to_string_pretty(&results)?.as_bytes(),
    )?;
    let png = args.out.join("eval.png");
    crate::write_file_with(&png, |tmp| plot(tmp, &results))?;
    println!("wrote {} and {}", json_path.display(), png.display());
    Ok(())
}

/// What the classifier and the distances read, in words.
fn describe(results: &EvalResults) -> (String, String) {
    let classifier = match (results.classifier, results.block) {
        (ClassifierKind::Block, Some(b)) => format!("block {b} probe"),
        _ => format!("mean of {} block probes", results.classifier_blocks.len()),
    };
    let distance = match (results.distance_features, results.distance_block) {
        (DistanceFeatures::Model, Some(b)) => format!("block {b} features"),
        (DistanceFeatures::Chroma, _) => "chroma".to_owned(),
        _ => "log-mel".to_owned(),
    };
    (classifier, distance)
}

fn print_table(results: &EvalResults) {
    let (classifier, distance) = describe(results);
    let first = match results.kind {
        EvalKind::Multiclass => "accuracy",
        EvalKind::Regression => "BPM shift",
    };
    let context = match (results.chance, results.unsteered_mean) {
        (Some(c), _) => format!("chance {c:.3}"),
        (_, Some(m)) => format!("unsteered mean {m:.2}"),
        _ => String::new(),
    };
    println!(
        "{}: {context}, {} clips per class, {classifier}, FD/MMD² on {distance} against the \
         unsteered clips, layer protocol {:?}",
        results.concept, results.clips_per_class, results.layer_protocol
    );
    println!(
        "{:>8} {:>10} {:>14} {:>12} {:>12}",
        "η", first, "codes changed", "FD", "MMD²"
    );
    for row in &results.rows {
        let value = row.accuracy.or(row.bpm_shift).unwrap_or(f64::NAN);
        let value = match results.kind {
            EvalKind::Multiclass => format!("{value:.3}"),
            EvalKind::Regression => format!("{value:+.2}"),
        };
        println!(
            "{:>8.3} {value:>10} {:>14.3} {:>12.4} {:>12.4}",
            row.eta,
            row.codes_changed,
            row.frechet_distance,
            row.mmd.unwrap_or(f64::NAN)
        );
    }
}

/// A padded range around `values` (a unit one around a single value).
fn range(values: impl Iterator<Item = f64>, floor_zero: bool) -> (f64, f64) {
    let (mut lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if floor_zero {
        lo = lo.min(0.0);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-9 {
        return (lo - 0.5, hi + 0.5);
    }
    let pad = 0.08 * (hi - lo);
    (
        if floor_zero && lo >= 0.0 {
            lo
        } else {
            lo - pad
        },
        hi + pad,
    )
}

/// A line of points against η, as one panel draws it.
struct Series {
    label: &'static str,
    colour: RGBColor,
    points: Vec<(f64, f64)>,
}

/// One panel: `series` against η, with an optional horizontal reference line.
fn panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    title: &str,
    y_desc: &str,
    series: &[Series],
    y: (f64, f64),
    line: Option<(&str, f64)>,
) -> anyhow::Result<()> {
    let x = range(
        series.iter().flat_map(|s| s.points.iter().map(|p| p.0)),
        false,
    );
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(x.0..x.1, y.0..y.1)?;
    chart
        .configure_mesh()
        .x_desc("strength η")
        .y_desc(y_desc)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()?;
    for Series {
        label,
        colour,
        points,
    } in series
    {
        let colour = *colour;
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
            .label(*label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, colour.filled())))?;
    }
    if let Some((label, value)) = line {
        chart
            .draw_series(LineSeries::new(
                vec![(x.0, value), (x.1, value)],
                RED.stroke_width(1),
            ))?
            .label(label)
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn plot(path: &Path, results: &EvalResults) -> anyhow::Result<()> {
    let mut rows: Vec<&EvalRow> = results.rows.iter().collect();
    rows.sort_by(|a, b| a.eta.total_cmp(&b.eta));
    let points = |f: &dyn Fn(&EvalRow) -> Option<f64>| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|r| {
                f(r).filter(|v| v.is_finite())
                    .map(|v| (f64::from(r.eta), v))
            })
            .collect()
    };
    let root = BitMapBackend::new(path, (1500, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let (classifier, distance) = describe(results);
    let root = root.titled(
        &format!(
            "{}: steering against strength ({} clips per class, {classifier})",
            results.concept, results.clips_per_class
        ),
        (FONT, 22),
    )?;
    let panels = root.split_evenly((1, 3));
    match results.kind {
        EvalKind::Multiclass => panel(
            &panels[0],
            "probe accuracy",
            "accuracy",
            &[Series {
                label: "steered",
                colour: BLUE,
                points: points(&|r| r.accuracy),
            }],
            (0.0, 1.0),
            results.chance.map(|c| ("chance", c)),
        )?,
        EvalKind::Regression => {
            let shift = points(&|r| r.bpm_shift);
            let y = range(shift.iter().map(|p| p.1).chain([0.0]), false);
            panel(
                &panels[0],
                "predicted tempo shift",
                "BPM shift vs unsteered",
                &[Series {
                    label: "steered",
                    colour: BLUE,
                    points: shift,
                }],
                y,
                Some(("unsteered", 0.0)),
            )?
        }
    }
    let fd = points(&|r| Some(r.frechet_distance));
    let y = range(fd.iter().map(|p| p.1), true);
    panel(
        &panels[1],
        &format!("Fréchet distance ({distance})"),
        "FD to unsteered",
        &[Series {
            label: "FD",
            colour: RGBColor(0, 120, 60),
            points: fd,
        }],
        y,
        None,
    )?;
    let mmd = points(&|r| r.mmd);
    let y = range(mmd.iter().map(|p| p.1), true);
    panel(
        &panels[2],
        &format!("MMD² ({distance})"),
        "MMD² to unsteered",
        &[Series {
            label: "MMD²",
            colour: RGBColor(150, 60, 0),
            points: mmd,
        }],
        y,
        None,
    )?;
    root.present()?;
    Ok(())
}
