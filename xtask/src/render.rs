//! `cargo xtask render`: offline generation to a 32 kHz WAV (the flags are a stable contract,
//! docs/architecture.md). A thin wrapper over `engine::render`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use engine::render::{SamplingChoice, decode_audio, default_guidance, generate_steps};
use engine::steering::{LayerWeights, SteerArg, SteeringPlan};
use engine::{GenerationOptions, MusicGen};
use indicatif::{ProgressBar, ProgressStyle};

use crate::model_source;

/// Render MusicGen offline to a 32 kHz WAV.
#[derive(Debug, Args)]
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
    #[command(flatten)]
    pub steering: SteerFlags,
    #[command(flatten)]
    pub dtype: model_source::DtypeFlag,
    /// Generate open-ended over a KV cache of W positions, as the streaming engine and the
    /// plugin do (their window: 1500), instead of a run of known length, whose last frames the
    /// delay pattern pads. Stops after the requested steps (at most W).
    #[arg(long, value_name = "W")]
    pub window: Option<usize>,
    /// Also write the codes handed to EnCodec: int64 .npy, shape [codebooks, frames].
    #[arg(long)]
    pub codes_out: Option<PathBuf>,
}

/// `--steer`, `--layers`, `--gate`: shared by `render` and `stream`.
#[derive(Debug, Args)]
pub struct SteerFlags {
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
}

impl SteerFlags {
    /// Every flag parsed: the steers, and the layer weights (`None`: each file's default).
    pub fn parse(&self) -> anyhow::Result<(Vec<SteerArg>, Option<LayerWeights>)> {
        if !(0.0..=1.0).contains(&self.gate) {
            bail!("--gate must be a probability in [0, 1], got {}", self.gate);
        }
        let layers = match &self.layers {
            Some(text) => Some(
                LayerWeights::parse(text).map_err(|e| anyhow::anyhow!("--layers {text}: {e}"))?,
            ),
            None => None,
        };
        let steers = self
            .steers
            .iter()
            .map(|spec| SteerArg::parse(spec))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((steers, layers))
    }
}

/// Decoder steps for the requested length.
pub fn steps_for(args: &RenderArgs, codebooks: usize, frame_rate: usize) -> anyhow::Result<usize> {
    match (args.steps, args.seconds) {
        (Some(0), _) => bail!("--steps must be at least 1"),
        (Some(n), _) => Ok(n),
        (None, Some(s)) if s.is_finite() && s > 0.0 => {
            Ok(engine::render::steps_for_seconds(s, codebooks, frame_rate))
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
    let steps = steps_for(args, 4, 50)?;
    if let Some(window) = args.window
        && window < steps
    {
        bail!("--window {window} must hold the {steps} steps asked for");
    }
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
    args.steering.parse()?;
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
    let (steers, layers) = args.steering.parse()?;
    for steer in &steers {
        plan.add_from_file(steer, layers.as_ref(), args.steering.gate)?;
    }
    Ok(plan)
}

/// The `--greedy`, `--top-k`, `--top-p`, `--temperature` flags.
pub fn sampling_choice(args: &RenderArgs) -> SamplingChoice {
    SamplingChoice {
        greedy: args.greedy,
        top_k: args.top_k,
        top_p: args.top_p,
        temperature: args.temperature,
    }
}

pub fn run(args: &RenderArgs) -> anyhow::Result<()> {
    validate(args)?;
    let dir = model_source::resolve(&args.model)?;
    let device = engine::default_device();
    let t0 = Instant::now();
    let model =
        MusicGen::load_with(&dir, &device, args.dtype.load_options()).with_context(|| {
            format!(
                "loading --model {} as --dtype {}",
                args.model, args.dtype.dtype
            )
        })?;
    eprintln!(
        "loaded {} in {:.1} s",
        dir.display(),
        t0.elapsed().as_secs_f64()
    );

    let codebooks = model.config.decoder.num_codebooks;
    let steps = steps_for(args, codebooks, model.config.audio_encoder.frame_rate())?;
    let options = GenerationOptions {
        steps: if args.window.is_some() {
            None
        } else {
            Some(steps)
        },
        window: args.window.unwrap_or(GenerationOptions::default().window),
        guidance: args
            .guidance
            .unwrap_or_else(|| default_guidance(&model.generation_config)),
        sampling: sampling_choice(args).resolve(&model.generation_config),
        seed: args.seed,
    };
    let mut plan = steering_plan(args, &model)?;

    let bar = ProgressBar::new(steps as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} steps, {per_sec} ({eta} left)",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let t1 = Instant::now();
    let codes = generate_steps(&model, &args.prompt, options, steps, &mut plan, |_| {
        bar.inc(1)
    })?;
    bar.finish();
    let gen_secs = t1.elapsed().as_secs_f64();

    let t2 = Instant::now();
    let samples = decode_audio(&model, &codes)?;
    let rate = model.config.audio_encoder.sampling_rate as u32;
    engine::audio::write_wav(&args.out, &samples, rate)
        .with_context(|| format!("writing --out {}", args.out.display()))?;
    if let Some(path) = &args.codes_out {
        crate::npy::write_i64(path, &codes.data, &codes.shape())?;
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
