//! `cargo xtask eval-steering`: the paper's Table-2 protocol (MusicRFM §6) for any model. For
//! each strength η and each target class, render N clips over a prompt list with that class
//! steered, classify every clip with the concept's multiclass probe (the training feature
//! pipeline: 32 kHz → EnCodec → undelayed codes → decoder without text → block output
//! mean-pooled), and report accuracy against η with the chance line (table, JSON, PNG).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use burn::tensor::{Tensor, TensorData};
use clap::Parser;
use directions::faer::Mat;
use directions::{DirectionsFile, Probe};
use engine::steering::{LayerWeights, Schedule, SteeringPlan};
use engine::{CaptureBlocks, Generation, GenerationOptions, MusicGen, Sampling};
use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;
use serde_json::json;

use crate::model_source;

const DEFAULT_PROMPTS: [&str; 4] = [
    "A relaxing jazz song with piano",
    "Upbeat electronic dance music with synths",
    "Slow classical piano piece",
    "Fast-paced rock song with guitar",
];

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask eval-steering",
    about = "Probe accuracy of steered generations against strength"
)]
pub struct EvalArgs {
    #[arg(long, default_value = engine::hub::DEFAULT_MODEL)]
    pub model: String,
    /// The concept's directions file (format v1).
    #[arg(long)]
    pub directions: PathBuf,
    /// The concept's multiclass probe (`<stem>.probe.safetensors` from train-probes).
    #[arg(long)]
    pub probe: PathBuf,
    /// Decoder block whose mean-pooled output the probe reads. Default: `probe.block` of the
    /// train-probes report beside it (`<stem>.report.json`).
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

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let args = EvalArgs::try_parse_from(
        std::iter::once("cargo xtask eval-steering".to_owned()).chain(args.iter().cloned()),
    )
    .unwrap_or_else(|e| e.exit());
    evaluate(&args)
}

fn probe_block(args: &EvalArgs) -> anyhow::Result<usize> {
    if let Some(b) = args.block {
        return Ok(b);
    }
    let name = args
        .probe
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".probe.safetensors").with_context(|| {
        format!(
            "--probe {}: not named <stem>.probe.safetensors; give --block",
            args.probe.display()
        )
    })?;
    let report = args.probe.with_file_name(format!("{stem}.report.json"));
    let text = std::fs::read_to_string(&report).with_context(|| {
        format!(
            "reading {} for the probe's block (or give --block)",
            report.display()
        )
    })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", report.display()))?;
    json["probe"]["block"]
        .as_u64()
        .map(|b| b as usize)
        .with_context(|| {
            format!(
                "{}: no probe.block (was the multiclass probe trained?)",
                report.display()
            )
        })
}

fn evaluate(args: &EvalArgs) -> anyhow::Result<()> {
    if args.clips == 0 || args.etas.is_empty() {
        bail!("--clips and --etas must not be empty");
    }
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        bail!("--seconds must be positive");
    }
    let layers = LayerWeights::parse(&args.layers).map_err(anyhow::Error::msg)?;
    let file = DirectionsFile::read(&args.directions)?;
    let probe = Probe::<f32>::load(&args.probe)?;
    let block = probe_block(args)?;
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
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating --out {}", args.out.display()))?;
    let frames = (args.seconds * model.config.audio_encoder.frame_rate() as f64)
        .round()
        .max(1.0) as usize;
    let steps = frames + model.config.decoder.num_codebooks - 1;

    let total = (args.etas.len() * classes.len() * args.clips) as u64;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("clips [{bar:40}] {pos}/{len} {msg} ({eta} left)")
            .expect("template"),
    );
    let mut rows = Vec::new();
    for &eta in &args.etas {
        let mut correct = 0usize;
        let mut per_class = Vec::new();
        for &class in &classes {
            let mut hits = 0usize;
            for clip in 0..args.clips {
                let prompt = &prompts[clip % prompts.len()];
                let seed = args
                    .seed
                    .wrapping_add((clip as u64) << 8)
                    .wrapping_add(class as u64);
                let audio = render_clip(
                    &model,
                    &file,
                    &args.directions,
                    class,
                    eta,
                    &layers,
                    args,
                    prompt,
                    steps,
                    seed,
                )?;
                let predicted = classify(&model, &probe, block, &audio)?;
                hits += usize::from(predicted == class);
                bar.inc(1);
            }
            correct += hits;
            per_class.push(
                json!({"class": file.classes[class], "accuracy": hits as f64 / args.clips as f64}),
            );
        }
        let accuracy = correct as f64 / (classes.len() * args.clips) as f64;
        bar.set_message(format!("η {eta}: {accuracy:.3}"));
        rows.push(json!({"eta": eta, "accuracy": accuracy, "per_class": per_class}));
    }
    bar.finish();

    let chance = 1.0 / n_classes as f64;
    println!(
        "{:>8} {:>10}   (chance {chance:.3}, {} clips per class, block {block})",
        "η", "accuracy", args.clips
    );
    for row in &rows {
        println!(
            "{:>8.3} {:>10.3}",
            row["eta"].as_f64().unwrap_or(0.0),
            row["accuracy"].as_f64().unwrap_or(0.0)
        );
    }
    let results = json!({
        "model": args.model, "directions": args.directions, "probe": args.probe, "block": block,
        "concept": file.concept, "classes": classes.iter().map(|&c| file.classes[c].clone()).collect::<Vec<_>>(),
        "chance": chance, "clips_per_class": args.clips, "seconds": args.seconds, "prompts": prompts,
        "layers": args.layers, "gate": args.gate, "guidance": args.guidance, "seed": args.seed, "rows": rows,
    });
    let json_path = args.out.join("results.json");
    crate::atomic_write(&json_path, |f| {
        Ok(f.write_all(serde_json::to_string_pretty(&results)?.as_bytes())?)
    })?;
    let png = args.out.join("accuracy.png");
    crate::atomic_write_path(&png, |tmp| plot(tmp, &results))?;
    println!("wrote {} and {}", json_path.display(), png.display());
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn render_clip(
    model: &MusicGen,
    file: &DirectionsFile,
    path: &Path,
    class: usize,
    eta: f32,
    layers: &LayerWeights,
    args: &EvalArgs,
    prompt: &str,
    steps: usize,
    seed: u64,
) -> anyhow::Result<Vec<f32>> {
    let options = GenerationOptions {
        steps: Some(steps),
        guidance: args.guidance,
        sampling: Sampling::MUSICGEN_DEFAULT,
        seed,
        ..GenerationOptions::default()
    };
    let mut generation = Generation::new(model, prompt, options)?;
    let mut plan = SteeringPlan::new(
        model.decoder.num_blocks(),
        model.decoder.d_model(),
        seed,
        &model.device,
    );
    if eta != 0.0 {
        plan.add(
            file,
            path,
            class,
            eta,
            Schedule::Constant,
            layers,
            args.gate,
        )?;
    }
    for step in 0..steps {
        generation.step(&mut plan.hook(step));
    }
    let (codes, [k, frames]) = generation.codes();
    crate::render::decode(model, &codes, k, frames)
}

/// The probe's prediction for 32 kHz `audio`, through the training feature pipeline.
fn classify(
    model: &MusicGen,
    probe: &Probe<f32>,
    block: usize,
    audio: &[f32],
) -> anyhow::Result<usize> {
    let device = &model.device;
    let wave = Tensor::<3>::from_data(TensorData::new(audio.to_vec(), [1, 1, audio.len()]), device);
    let codes = model.audio_encoder.encode(wave);
    let frames = codes.dims()[2];
    let codes = codes.slice([0..1, 0..model.config.decoder.num_codebooks, 0..frames]);
    let mut capture = CaptureBlocks::default();
    model.decoder.hidden(codes, None, &mut capture);
    let pooled = capture.outputs[block].clone().mean_dim(1);
    let features: Vec<f32> = pooled
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let x = Mat::<f32>::from_fn(1, features.len(), |_, j| features[j]);
    let labels = probe.predict_labels(x.as_ref())?;
    Ok(labels[0])
}

fn plot(path: &Path, results: &serde_json::Value) -> anyhow::Result<()> {
    let rows = results["rows"].as_array().context("rows")?;
    let points: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| {
            (
                r["eta"].as_f64().unwrap_or(0.0),
                r["accuracy"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    let chance = results["chance"].as_f64().unwrap_or(0.0);
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
        "{}: probe accuracy vs steering strength",
        results["concept"].as_str().unwrap_or("")
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(lo..hi, 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("strength η")
        .y_desc("accuracy")
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
