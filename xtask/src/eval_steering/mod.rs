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

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use directions::{DirectionsFile, Probe};
use engine::features::BlockFeatures;
use engine::render::{decode_audio, generate_codes};
use engine::steering::{LayerWeights, Schedule, SteeringPlan};
use engine::{GenerationOptions, MusicGen, Sampling};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::training::TrainReport;
use crate::{audio_features, distances, model_source};

mod classify;
mod report;

use classify::{Classifier, Prediction, classifier_probes, eval_kind};

pub use report::{ClassAccuracy, EvalResults, EvalRow};
use report::{plot, print_table};

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
    let kind = eval_kind(args, &probe, &file)?;
    let (block, probes) = classifier_probes(args, &report, probe, kind, reference)?;
    let classifier = Classifier { probes, kind };
    let classifier_blocks: Vec<usize> = classifier.probes.iter().map(|p| p.0).collect();

    // The layer protocol: MusicRFM's code never steers (or reads) block 0.
    let steer_file = if reference {
        without_block_zero(&file)?
    } else {
        file.clone()
    };
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

/// The directions without their block-0 row: MusicRFM's code never steers (or reads) block 0.
fn without_block_zero(file: &DirectionsFile) -> anyhow::Result<DirectionsFile> {
    let mut steer_file = file.clone();
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
    Ok(steer_file)
}
