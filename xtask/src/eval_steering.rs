//! `cargo xtask eval-steering`: the paper's Table-2 protocol for any model. For each strength η
//! and each target class, render N clips over a prompt list with that class steered (the one
//! render path, `engine::render`), classify every clip with the concept's multiclass probe
//! through the feature protocol the probe was trained with (`engine::features`, read from the
//! train-probes report), and report accuracy against η with the chance line (table, JSON, PNG).
//! Each clip is also rendered unsteered with the same seed, and the share of codes that
//! steering changed is reported per η (0 at η = 0).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use directions::faer::Mat;
use directions::{DirectionsFile, Probe};
use engine::features::{BlockFeatures, FeatureProtocol};
use engine::render::{decode_audio, generate_codes};
use engine::steering::{LayerWeights, Schedule, SteeringPlan};
use engine::{Codes, GenerationOptions, MusicGen, Sampling};
use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::model_source;
use crate::training::TrainReport;

const FONT: &str = "DejaVu Sans";

const DEFAULT_PROMPTS: [&str; 4] = [
    "A relaxing jazz song with piano",
    "Upbeat electronic dance music with synths",
    "Slow classical piano piece",
    "Fast-paced rock song with guitar",
];

/// Probe accuracy of steered generations against strength.
#[derive(Debug, Args)]
pub struct EvalArgs {
    #[arg(long, default_value = engine::hub::DEFAULT_MODEL)]
    pub model: String,
    /// The concept's directions file (format v1).
    #[arg(long)]
    pub directions: PathBuf,
    /// The concept's multiclass probe (`<stem>.probe.safetensors` from train-probes); its
    /// report `<stem>.report.json` beside it gives the block and the feature protocol.
    #[arg(long)]
    pub probe: PathBuf,
    /// Override the report's block (the decoder block whose mean-pooled output the probe reads).
    #[arg(long)]
    pub block: Option<usize>,
    /// Strengths, comma-separated (the paper: 0,0.15,0.3,0.45,0.6).
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
    /// Output folder: results.json, accuracy.png.
    #[arg(long)]
    pub out: PathBuf,
}

/// `results.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalResults {
    pub model: String,
    pub directions: PathBuf,
    pub probe: PathBuf,
    pub block: usize,
    pub protocol: FeatureProtocol,
    pub concept: String,
    pub classes: Vec<String>,
    pub chance: f64,
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
    pub accuracy: f64,
    pub per_class: Vec<ClassAccuracy>,
    /// Share of codes that differ from the unsteered clip of the same seed and prompt.
    pub codes_changed: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassAccuracy {
    pub class: String,
    pub accuracy: f64,
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
    let block = match (args.block, &report.probe) {
        (Some(b), _) => b,
        (None, Some(p)) => p.block,
        (None, None) => bail!(
            "--probe {}: its report names no probe block (was the multiclass probe trained?); give --block",
            args.probe.display()
        ),
    };
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
    let n_classes = match probe.kind {
        directions::ProbeKind::Multiclass { n_classes } => n_classes,
        other => bail!(
            "--probe {}: a multiclass probe is needed, this one is {other:?}",
            args.probe.display()
        ),
    };
    if n_classes != file.classes.len() {
        bail!(
            "--probe {} has {n_classes} classes, --directions {} has {}",
            args.probe.display(),
            args.directions.display(),
            file.classes.len()
        );
    }

    let dir = model_source::resolve(&args.model)?;
    let device = engine::default_device();
    let model = MusicGen::load(&dir, &device)?;
    if block >= model.decoder.num_blocks() || probe.dim() != model.decoder.d_model() {
        bail!(
            "the probe reads block {block} with {} features; {} has {} blocks of width {}",
            probe.dim(),
            args.model,
            model.decoder.num_blocks(),
            model.decoder.d_model()
        );
    }
    let features = BlockFeatures::new(&model, report.protocol)?;
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
    let plan = |seed| {
        SteeringPlan::new(
            model.decoder.num_blocks(),
            model.decoder.d_model(),
            seed,
            &model.device,
        )
    };
    let clip_seed = |clip: usize, class: usize| {
        args.seed
            .wrapping_add((clip as u64) << 8)
            .wrapping_add(class as u64)
    };

    let total = ((args.etas.len() + 1) * classes.len() * args.clips) as u64;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("clips [{bar:40}] {pos}/{len} {msg} ({eta} left)")
            .expect("template"),
    );
    // The unsteered clip of every (class, clip) seed, for the share of codes steering changed.
    let mut unsteered: Vec<Codes> = Vec::new();
    for &class in &classes {
        for clip in 0..args.clips {
            let seed = clip_seed(clip, class);
            let prompt = &prompts[clip % prompts.len()];
            unsteered.push(generate_codes(
                &model,
                prompt,
                options(seed),
                &mut plan(seed),
                |_| {},
            )?);
            bar.inc(1);
        }
    }
    let mut rows = Vec::new();
    for &eta in &args.etas {
        let (mut correct, mut changed, mut codes_total) = (0usize, 0usize, 0usize);
        let mut per_class = Vec::new();
        for (ci, &class) in classes.iter().enumerate() {
            let mut hits = 0usize;
            for clip in 0..args.clips {
                let seed = clip_seed(clip, class);
                let prompt = &prompts[clip % prompts.len()];
                let mut steering = plan(seed);
                steering.add(
                    &file,
                    &args.directions,
                    class,
                    eta,
                    Schedule::Constant,
                    &layers,
                    args.gate,
                )?;
                let codes = generate_codes(&model, prompt, options(seed), &mut steering, |_| {})?;
                let baseline = &unsteered[ci * args.clips + clip];
                changed += codes
                    .data
                    .iter()
                    .zip(&baseline.data)
                    .filter(|(a, b)| a != b)
                    .count();
                codes_total += codes.data.len();
                let audio = decode_audio(&model, &codes)?;
                let predicted = classify(&features, &probe, block, audio)?;
                hits += usize::from(predicted == class);
                bar.inc(1);
            }
            correct += hits;
            per_class.push(ClassAccuracy {
                class: file.classes[class].clone(),
                accuracy: hits as f64 / args.clips as f64,
            });
        }
        let accuracy = correct as f64 / (classes.len() * args.clips) as f64;
        bar.set_message(format!("η {eta}: {accuracy:.3}"));
        rows.push(EvalRow {
            eta,
            accuracy,
            per_class,
            codes_changed: changed as f64 / codes_total.max(1) as f64,
        });
    }
    bar.finish();

    let chance = 1.0 / n_classes as f64;
    println!(
        "{:>8} {:>10} {:>14}   (chance {chance:.3}, {} clips per class, block {block})",
        "η", "accuracy", "codes changed", args.clips
    );
    for row in &rows {
        println!(
            "{:>8.3} {:>10.3} {:>14.3}",
            row.eta, row.accuracy, row.codes_changed
        );
    }
    let results = EvalResults {
        model: args.model.clone(),
        directions: args.directions.clone(),
        probe: args.probe.clone(),
        block,
        protocol: report.protocol,
        concept: file.concept.clone(),
        classes: classes.iter().map(|&c| file.classes[c].clone()).collect(),
        chance,
        clips_per_class: args.clips,
        seconds: args.seconds,
        prompts,
        layers: args.layers.clone(),
        gate: args.gate,
        guidance: args.guidance,
        seed: args.seed,
        rows,
    };
    let json_path = args.out.join("results.json");
    crate::write_file(
        &json_path,
        serde_json::to_string_pretty(&results)?.as_bytes(),
    )?;
    let png = args.out.join("accuracy.png");
    crate::write_file_with(&png, |tmp| plot(tmp, &results))?;
    println!("wrote {} and {}", json_path.display(), png.display());
    Ok(())
}

/// The probe's prediction for one clip at the model's rate, through the training protocol.
fn classify(
    features: &BlockFeatures,
    probe: &Probe<f32>,
    block: usize,
    audio: Vec<f32>,
) -> anyhow::Result<usize> {
    let pooled = features.pooled(&[audio])?;
    let row = &pooled[block];
    let x = Mat::<f32>::from_fn(1, row.len(), |_, j| row[j]);
    Ok(probe.predict_labels(x.as_ref())?[0])
}

fn plot(path: &Path, results: &EvalResults) -> anyhow::Result<()> {
    let mut points: Vec<(f64, f64)> = results
        .rows
        .iter()
        .map(|r| (f64::from(r.eta), r.accuracy))
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let chance = results.chance;
    let (lo, hi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.0), hi.max(p.0))
        });
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, hi + 0.5)
    };
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "{}: probe accuracy vs steering strength (block {})",
        results.concept, results.block
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(lo..hi, 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("strength η")
        .y_desc("accuracy")
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .draw()?;
    chart
        .draw_series(LineSeries::new(points.clone(), &BLUE))?
        .label("steered")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))?;
    chart
        .draw_series(LineSeries::new(
            vec![(lo, chance), (hi, chance)],
            RED.stroke_width(1),
        ))?
        .label("chance")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
