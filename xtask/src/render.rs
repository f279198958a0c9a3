//! `cargo xtask render`: offline generation to a 32 kHz WAV, as docs/architecture.md specifies.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use burn::tensor::{Int, Tensor, TensorData};
use clap::Parser;
use engine::steering::{LayerWeights, SteerArg, SteeringPlan};
use engine::{Generation, GenerationOptions, MusicGen, NoHook, Sampling};
use indicatif::{ProgressBar, ProgressStyle};

use crate::model_source;

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask render",
    about = "Render MusicGen offline to a 32 kHz WAV"
)]
pub struct RenderArgs {
    /// Model directory or Hugging Face repo id (resolved in the local HF cache).
    #[arg(long, default_value = engine::hub::DEFAULT_MODEL)]
    pub model: String,
    /// Text prompt ("" for unconditional).
    #[arg(long)]
    pub prompt: String,
    /// Length in seconds (50 frames per second).
    #[arg(
        long,
        conflicts_with = "steps",
        required_unless_present = "steps",
        allow_hyphen_values = true
    )]
    pub seconds: Option<f64>,
    /// Decoder steps, counted as Hugging Face's `max_new_tokens` (N steps give N − 3 frames).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Output WAV (32-bit float, mono, 32 kHz).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Pick the most likely code at every step.
    #[arg(long, conflicts_with_all = ["top_k", "top_p", "temperature"])]
    pub greedy: bool,
    /// Keep the K most likely codes (0 = all). Default: the checkpoint's generation config.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Nucleus sampling mass in (0, 1].
    #[arg(long)]
    pub top_p: Option<f32>,
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Classifier-free guidance scale (≤ 1 disables it). Default: the generation config's.
    #[arg(long, allow_hyphen_values = true)]
    pub guidance: Option<f32>,
    /// Steer toward a concept: <FILE>:<CLASS>=<STRENGTH>[@<SCHEDULE>] (class by name or index;
    /// schedule const | rise:T0:T1 | decay:T | exp:R | logistic:MID:K | sine:PERIOD). Repeatable.
    #[arg(
        long = "steer",
        value_name = "FILE:CLASS=STRENGTH[@SCHEDULE]",
        allow_hyphen_values = true
    )]
    pub steers: Vec<String>,
    /// Layer weights: all | top:K | linear | power:TAU | list:b1,b2,… Default: power:0.95 when
    /// the file has scores that differ, else all.
    #[arg(long)]
    pub layers: Option<String>,
    /// Bernoulli gate probability per (steer, block, step); 1 steers every step.
    #[arg(long, default_value_t = engine::steering::DEFAULT_GATE, allow_hyphen_values = true)]
    pub gate: f32,
    /// Also write the codes handed to EnCodec: int64 .npy, shape [codebooks, frames].
    #[arg(long)]
    pub codes_out: Option<PathBuf>,
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let args = RenderArgs::try_parse_from(
        std::iter::once("cargo xtask render".to_owned()).chain(args.iter().cloned()),
    )
    .unwrap_or_else(|e| e.exit());
    render(&args)
}

/// Decoder steps for the requested length.
pub fn steps_for(args: &RenderArgs, codebooks: usize, frame_rate: usize) -> anyhow::Result<usize> {
    match (args.steps, args.seconds) {
        (Some(0), _) => bail!("--steps must be at least 1"),
        (Some(n), _) => Ok(n),
        (None, Some(s)) if s.is_finite() && s > 0.0 => {
            let frames = (s * frame_rate as f64).round() as usize;
            Ok(frames.max(1) + codebooks - 1)
        }
        (None, Some(s)) => bail!("--seconds must be a positive number, got {s}"),
        (None, None) => bail!("give --seconds or --steps"),
    }
}

/// Reject bad flag values before anything is loaded or written.
pub fn validate(args: &RenderArgs) -> anyhow::Result<()> {
    if let Some(g) = args.guidance
        && !g.is_finite()
    {
        bail!("--guidance must be a number, got {g}");
    }
    steps_for(args, 4, 50)?;
    if let Some(p) = args.top_p
        && !(p > 0.0 && p <= 1.0)
    {
        bail!("--top-p must be in (0, 1], got {p}");
    }
    if let Some(t) = args.temperature
        && !(t.is_finite() && t > 0.0)
    {
        bail!("--temperature must be positive, got {t}");
    }
    if !(0.0..=1.0).contains(&args.gate) {
        bail!("--gate must be a probability in [0, 1], got {}", args.gate);
    }
    if let Some(layers) = &args.layers {
        LayerWeights::parse(layers).map_err(anyhow::Error::msg)?;
    }
    for spec in &args.steers {
        SteerArg::parse(spec)?;
    }
    Ok(())
}

/// The steering plan of `--steer`, `--layers` and `--gate` (empty without `--steer`).
pub fn steering_plan(args: &RenderArgs, model: &MusicGen) -> anyhow::Result<SteeringPlan> {
    let mut plan = SteeringPlan::new(
        model.decoder.num_blocks(),
        model.decoder.d_model(),
        args.seed,
        &model.device,
    );
    for spec in &args.steers {
        let steer = SteerArg::parse(spec)?;
        let layers = match &args.layers {
            Some(text) => LayerWeights::parse(text).map_err(anyhow::Error::msg)?,
            None => default_layers(&steer.file)?,
        };
        plan.add_from_file(&steer, &layers, args.gate)?;
    }
    Ok(plan)
}

/// The paper's power:0.95 where the file's scores tell layers apart, else every layer.
fn default_layers(file: &std::path::Path) -> anyhow::Result<LayerWeights> {
    let directions = directions::DirectionsFile::read(file)?;
    let informative = directions
        .scores
        .iter()
        .any(|row| row.iter().any(|&s| s != row[0]));
    Ok(if informative {
        LayerWeights::PAPER
    } else {
        LayerWeights::All
    })
}

pub fn sampling_for(args: &RenderArgs, model: &MusicGen) -> Sampling {
    let g = &model.generation_config;
    if args.greedy {
        return Sampling::Greedy;
    }
    let flags = args.top_k.is_some() || args.top_p.is_some() || args.temperature.is_some();
    if !flags && !g.do_sample {
        return Sampling::Greedy;
    }
    Sampling::Sample {
        temperature: args
            .temperature
            .or(g.temperature.map(|t| t as f32))
            .unwrap_or(1.0),
        top_k: args.top_k.or(g.top_k).unwrap_or(0),
        top_p: args.top_p.or(g.top_p.map(|p| p as f32)).unwrap_or(1.0),
    }
}

fn render(args: &RenderArgs) -> anyhow::Result<()> {
    validate(args)?;
    let dir = model_source::resolve(&args.model)?;
    let device = engine::default_device();
    let t0 = Instant::now();
    let model =
        MusicGen::load(&dir, &device).with_context(|| format!("loading --model {}", args.model))?;
    eprintln!(
        "loaded {} in {:.1} s",
        dir.display(),
        t0.elapsed().as_secs_f64()
    );

    let codebooks = model.config.decoder.num_codebooks;
    let steps = steps_for(args, codebooks, model.config.audio_encoder.frame_rate())?;
    let options = GenerationOptions {
        steps: Some(steps),
        guidance: args
            .guidance
            .or(model.generation_config.guidance_scale.map(|g| g as f32))
            .unwrap_or(1.0),
        sampling: sampling_for(args, &model),
        seed: args.seed,
        ..GenerationOptions::default()
    };
    let mut plan = steering_plan(args, &model)?;
    let mut generation = Generation::new(&model, &args.prompt, options)?;

    let bar = ProgressBar::new(steps as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} steps, {per_sec} ({eta} left)",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let t1 = Instant::now();
    for step in 0..steps {
        if plan.is_empty() {
            generation.step(&mut NoHook);
        } else {
            generation.step(&mut plan.hook(step));
        }
        bar.inc(1);
    }
    bar.finish();
    let gen_secs = t1.elapsed().as_secs_f64();

    let (codes, [k, frames]) = generation.codes();
    let t2 = Instant::now();
    let samples = decode(&model, &codes, k, frames)?;
    let rate = model.config.audio_encoder.sampling_rate as u32;
    write_wav(&args.out, &samples, rate)?;
    if let Some(path) = &args.codes_out {
        crate::npy::write_i64(path, &codes, &[k, frames])?;
    }
    eprintln!(
        "{steps} steps in {gen_secs:.1} s ({:.1} steps/s), EnCodec {:.2} s → {} ({:.2} s of audio)",
        steps as f64 / gen_secs,
        t2.elapsed().as_secs_f64(),
        args.out.display(),
        samples.len() as f64 / rate as f64
    );
    Ok(())
}

/// EnCodec-decode a `[codebooks, frames]` code matrix to mono samples.
pub fn decode(
    model: &MusicGen,
    codes: &[i64],
    codebooks: usize,
    frames: usize,
) -> anyhow::Result<Vec<f32>> {
    if frames == 0 {
        return Ok(Vec::new());
    }
    let codes = Tensor::<3, Int>::from_data(
        TensorData::new(codes.to_vec(), [1, codebooks, frames]),
        &model.device,
    );
    let audio = model.audio_encoder.decode(codes);
    audio
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("EnCodec output: {e:?}"))
}

/// Write mono 32-bit float WAV, atomically: an existing file is replaced only on success.
pub fn write_wav(path: &std::path::Path, samples: &[f32], rate: u32) -> anyhow::Result<()> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    crate::atomic_write_path(path, |tmp| {
        let mut writer = hound::WavWriter::create(tmp, spec)?;
        for &s in samples {
            writer.write_sample(s)?;
        }
        writer.finalize()?;
        Ok(())
    })
    .with_context(|| format!("writing --out {}", path.display()))
}
