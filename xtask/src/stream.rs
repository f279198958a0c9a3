//! `cargo xtask stream`: drive the streaming engine (`engine::stream`) as a host's offline
//! bounce would — one control per step at the step's first host sample, fixed-size blocks,
//! waiting for the engine — from `--steer` schedules, write the latency-compensated audio to a
//! WAV and print the engine's speed: steps/s, the realtime factor and the step-time
//! percentiles.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use engine::MusicGen;
use engine::render::{SamplingChoice, default_guidance};
use engine::stream::{
    Clock, ControlFrame, Engine, EngineConfig, GenerationSettings, ModelSource, SLOTS,
    SlotDirection,
};

use crate::model_source;
use crate::render::SteerFlags;

/// Stream MusicGen through the real-time engine into a WAV, and time it.
#[derive(Debug, Args)]
pub struct StreamArgs {
    /// Model directory or Hugging Face repo id (resolved in the local HF cache).
    #[arg(long, default_value = engine::hub::DEFAULT_MODEL)]
    pub model: String,
    /// Text prompt ("" for unconditional).
    #[arg(long)]
    pub prompt: String,
    /// Length of the bounce in seconds.
    #[arg(long, allow_hyphen_values = true)]
    pub seconds: f64,
    /// Output WAV (32-bit float, mono, at --rate), aligned with the controls (latency removed).
    #[arg(long)]
    pub out: PathBuf,
    /// Host sample rate in Hz.
    #[arg(long, default_value_t = 48_000)]
    pub rate: u32,
    /// Host block size in samples.
    #[arg(long, default_value_t = 512)]
    pub block: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Pick the most likely code at every step (default: the checkpoint's sampling).
    #[arg(long)]
    pub greedy: bool,
    /// Classifier-free guidance scale (≤ 1 disables it). Default: the generation config's.
    #[arg(long, allow_hyphen_values = true)]
    pub guidance: Option<f32>,
    /// `--steer` k drives slot k (at most 8) with its schedule's strength per step, as in
    /// `render`.
    #[command(flatten)]
    pub steering: SteerFlags,
    #[command(flatten)]
    pub dtype: model_source::DtypeFlag,
    /// Decoder positions before the window slides (re-prompting with the last 12 s).
    #[arg(long, default_value_t = 1500)]
    pub window: usize,
}

/// Give up on a step after this long: a stalled engine is an error, not a hang.
const WAIT: Duration = Duration::from_secs(120);

pub fn run(args: &StreamArgs) -> anyhow::Result<()> {
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        bail!("--seconds {}: a positive length is expected", args.seconds);
    }
    if args.block == 0 {
        bail!("--block 0: a positive block size is expected");
    }
    let (steers, layers) = args.steering.parse()?;
    if steers.len() > SLOTS {
        bail!(
            "--steer: at most {SLOTS} (one per slot), got {}",
            steers.len()
        );
    }
    let dir = model_source::resolve(&args.model)?;
    let model = MusicGen::load_with(&dir, &engine::default_device(), args.dtype.load_options())
        .with_context(|| {
            format!(
                "loading --model {} as --dtype {}",
                args.model, args.dtype.dtype
            )
        })?;
    let settings = GenerationSettings {
        sampling: SamplingChoice {
            greedy: args.greedy,
            ..SamplingChoice::default()
        }
        .resolve(&model.generation_config),
        guidance: args
            .guidance
            .unwrap_or_else(|| default_guidance(&model.generation_config)),
        seed: args.seed,
    };
    let config = EngineConfig {
        sample_rate: args.rate,
        clock: Clock::Timeline,
        window: args.window,
        reprompt_frames: (args.window * 2 / 5).min(600),
        ..EngineConfig::default()
    };
    let (handle, mut endpoint) = Engine::spawn(config)?;
    handle.load_model(ModelSource::Loaded(Arc::new(model)))?;
    handle.set_generation(settings)?;
    for (slot, steer) in steers.iter().enumerate() {
        let direction = SlotDirection {
            file: steer.file.clone(),
            class: steer.class.clone(),
            layers: layers.clone(),
            gate: args.steering.gate,
        };
        handle.set_slot(slot, Some(direction))?;
    }
    handle.set_prompt(&args.prompt, 0)?;

    let started = Instant::now();
    let latency = loop {
        let status = endpoint.status();
        if status.running {
            break status.latency_samples as usize;
        }
        if status.error != engine::stream::ErrorCode::None {
            bail!("{}", handle.last_error());
        }
        if started.elapsed() > WAIT {
            bail!("the engine did not start");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let rate = u64::from(args.rate);
    let samples = latency + (args.seconds * args.rate as f64).round() as usize;
    let control = |s: u64| {
        let mut frame = ControlFrame::silent(s);
        for (k, steer) in steers.iter().enumerate() {
            frame.slots[k] = steer.schedule.coefficient(steer.strength, s as usize, 0.0);
        }
        frame
    };
    let mut out = vec![0.0f32; samples];
    let (mut t, mut next) = (0usize, 0u64);
    let bounce = Instant::now();
    while t < samples {
        let n = args.block.min(samples - t);
        while (next * rate).div_ceil(50) < (t + n) as u64 {
            if !endpoint.push_control(control(next)) {
                break; // the queue is full: the engine takes them as it goes
            }
            next += 1;
        }
        if !endpoint.wait_for(n, WAIT) {
            bail!(
                "no audio for samples {t}..{} after {WAIT:?}: {}",
                t + n,
                handle.last_error()
            );
        }
        endpoint.pop(&mut out[t..t + n]);
        t += n;
    }
    let wall = bounce.elapsed().as_secs_f64();
    engine::audio::write_wav(&args.out, &out[latency..], args.rate)
        .with_context(|| format!("writing --out {}", args.out.display()))?;

    let mut times = handle.step_times()?;
    if times.is_empty() {
        bail!("the engine ran no step");
    }
    let steps = times.len();
    times.sort();
    let at = |q: f64| times[((steps - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    let audio_seconds = (samples - latency) as f64 / args.rate as f64;
    println!(
        "{steps} steps in {wall:.2} s: {:.1} steps/s, realtime factor {:.2} (audio s / wall s), \
         latency {latency} samples ({:.0} ms)",
        steps as f64 / wall,
        audio_seconds / wall,
        latency as f64 * 1e3 / args.rate as f64
    );
    println!(
        "step time: P50 {:.2} ms, P95 {:.2} ms, P99 {:.2} ms, max {:.2} ms (budget 20 ms)",
        at(0.5),
        at(0.95),
        at(0.99),
        at(1.0)
    );
    println!(
        "underruns {}, wrote {}",
        endpoint.status().underruns,
        args.out.display()
    );
    Ok(())
}
