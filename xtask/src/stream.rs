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
use engine::profile::{Phase, Profile};
use engine::render::{SamplingChoice, default_guidance};
use engine::steering::{LayerWeights, SteerArg};
use engine::stream::{
    Clock, ControlFrame, Engine, EngineConfig, GenerationSettings, ModelSource, SLOTS,
    SlotDirection, StepTime, offline,
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
    /// Decoder positions before the window slides (re-prompting with its last 40 %: 12 s of
    /// the default 30 s).
    #[arg(long, default_value_t = 1500)]
    pub window: usize,
    /// Frames EnCodec decodes per run: 1 is the least latency; more costs less per step (the
    /// codec's largest weights are read once per run). Default: 2 on the CPU, 1 on a GPU.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=50))]
    pub decode_chunk: Option<u64>,
    /// A new prompt, typed while playing: sent as the plugin sends it (for the steps already
    /// due) when the bounce reaches `--prompt-change-at`; the report says when the stream took
    /// it and what the steps around it cost.
    #[arg(long)]
    pub prompt_change: Option<String>,
    /// Seconds into the bounce at which `--prompt-change` is sent (default: half way).
    #[arg(long, requires = "prompt_change")]
    pub prompt_change_at: Option<f64>,
}

/// Give up on a step after this long: a stalled engine is an error, not a hang.
const WAIT: Duration = Duration::from_secs(120);

/// One bounce through the engine.
pub struct StreamSetup<'a> {
    pub prompt: &'a str,
    pub seconds: f64,
    pub rate: u32,
    pub block: usize,
    pub settings: GenerationSettings,
    pub window: usize,
    pub reprompt_frames: usize,
    /// `None`: the engine's default for the model.
    pub decode_chunk_frames: Option<usize>,
    /// Slot k steered by `steers[k]`'s schedule.
    pub steers: &'a [SteerArg],
    pub layers: Option<LayerWeights>,
    pub gate: f32,
    /// A prompt sent while playing, and the second at which it is sent.
    pub prompt_change: Option<(&'a str, f64)>,
}

/// What a bounce measured.
pub struct StreamReport {
    /// The audio, latency removed.
    pub audio: Vec<f32>,
    pub latency: usize,
    /// Seconds of the bounce loop.
    pub wall: f64,
    pub times: Vec<StepTime>,
    pub underruns: u64,
    pub slides: u64,
    /// Meter publications of slot 0 (0 without a probe).
    pub meter_updates: u64,
    /// Where the engine's time went during the bounce, all phases summed.
    pub profile: Profile,
    /// The codec ran beside each step's generation work (`engine::stream::decodes_beside`):
    /// its time is not part of the step's other phases.
    pub codec_beside: bool,
    /// The step whose control went out with the prompt change, and the step that took it.
    pub prompt_change: Option<(u64, u64)>,
}

pub fn run(args: &StreamArgs) -> anyhow::Result<()> {
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        bail!("--seconds {}: a positive length is expected", args.seconds);
    }
    let (steers, layers) = args.steering.parse()?;
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
    let setup = StreamSetup {
        prompt: &args.prompt,
        seconds: args.seconds,
        rate: args.rate,
        block: args.block,
        settings,
        window: args.window,
        reprompt_frames: engine::stream::reprompt_frames_for(args.window),
        decode_chunk_frames: args.decode_chunk.map(|n| n as usize),
        steers: &steers,
        layers,
        gate: args.steering.gate,
        prompt_change: match &args.prompt_change {
            Some(prompt) => {
                let at = args.prompt_change_at.unwrap_or(args.seconds / 2.0);
                if !(0.0..args.seconds).contains(&at) {
                    bail!(
                        "--prompt-change-at {at}: a second within the bounce (0 to --seconds {}) \
                         is expected",
                        args.seconds
                    );
                }
                Some((prompt.as_str(), at))
            }
            None => None,
        },
    };
    let report = bounce(Arc::new(model), &setup)?;
    engine::audio::write_wav(&args.out, &report.audio, args.rate)
        .with_context(|| format!("writing --out {}", args.out.display()))?;
    report.print(args.rate);
    println!("wrote {}", args.out.display());
    Ok(())
}

/// Bounce `setup` through a new engine with `model`: one control per step at the step's first
/// host sample, fixed blocks, waiting for the engine as an offline host does.
pub fn bounce(model: Arc<MusicGen>, setup: &StreamSetup) -> anyhow::Result<StreamReport> {
    if setup.block == 0 {
        bail!("--block 0: a positive block size is expected");
    }
    if setup.steers.len() > SLOTS {
        bail!(
            "--steer: at most {SLOTS} (one per slot), got {}",
            setup.steers.len()
        );
    }
    let config = EngineConfig {
        sample_rate: setup.rate,
        clock: Clock::Timeline,
        window: setup.window,
        reprompt_frames: setup.reprompt_frames,
        decode_chunk_frames: setup.decode_chunk_frames,
        ..EngineConfig::default()
    };
    let codec_beside = engine::stream::decodes_beside(&model);
    let (handle, mut endpoint) = Engine::spawn(config)?;
    handle.load_model(ModelSource::Loaded(model))?;
    handle.set_generation(setup.settings)?;
    for (slot, steer) in setup.steers.iter().enumerate() {
        let direction = SlotDirection {
            file: steer.file.clone(),
            class: steer.class.clone(),
            layers: setup.layers.clone(),
            gate: setup.gate,
        };
        handle.set_slot(slot, Some(direction))?;
    }
    handle.set_prompt(setup.prompt, 0)?;

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
    let samples = latency + (setup.seconds * setup.rate as f64).round() as usize;
    let change_step = setup
        .prompt_change
        .map(|(_, at)| (at * 50.0).round() as u64);
    let mut change_sent: Result<bool, engine::stream::StreamError> = Ok(false);
    let mut control = |s: u64| {
        if let (Some(step), Some((prompt, _))) = (change_step, setup.prompt_change)
            && s == step
        {
            change_sent = handle.set_prompt(prompt, 0).map(|()| true);
        }
        let mut frame = ControlFrame::silent(s);
        for (k, steer) in setup.steers.iter().enumerate() {
            frame.slots[k] = steer.schedule.coefficient(steer.strength, s as usize, 0.0);
        }
        frame
    };
    let mut out = vec![0.0f32; samples];
    let profile = Profile::now();
    let bounce = Instant::now();
    let blocks = [setup.block];
    offline::bounce(
        &mut endpoint,
        setup.rate,
        (0, u64::MAX),
        &mut out,
        &blocks,
        &mut control,
        WAIT,
    )
    .map_err(|e| anyhow::anyhow!("{e}: {}", handle.last_error()))?;
    let wall = bounce.elapsed().as_secs_f64();
    if !change_sent.context("sending --prompt-change")? && setup.prompt_change.is_some() {
        bail!("--prompt-change was not sent: the bounce ended first");
    }
    let profile = Profile::now().since(&profile);
    let times = handle.step_times()?;
    if times.is_empty() {
        bail!("the engine ran no step");
    }
    let status = endpoint.status();
    if status.prompt_pending {
        bail!("--prompt-change: the stream ended before it took the new prompt");
    }
    out.drain(..latency);
    Ok(StreamReport {
        audio: out,
        latency,
        wall,
        times,
        underruns: status.underruns,
        slides: status.slides,
        meter_updates: handle.meter(0).map_or(0, |(_, updates)| updates),
        profile,
        codec_beside,
        prompt_change: change_step.map(|step| (step, status.prompt_step)),
    })
}

impl StreamReport {
    pub fn steps_per_second(&self) -> f64 {
        self.times.len() as f64 / self.wall
    }

    /// Audio seconds per wall second.
    pub fn realtime_factor(&self, rate: u32) -> f64 {
        self.audio.len() as f64 / rate as f64 / self.wall
    }

    /// The `q` quantile of the step times in ms, over the steps `keep` selects.
    pub fn quantile_ms(&self, q: f64, keep: impl Fn(&StepTime) -> bool) -> Option<f64> {
        let mut times: Vec<Duration> = self
            .times
            .iter()
            .filter(|t| keep(t))
            .map(|t| t.took)
            .collect();
        times.sort();
        let last = times.len().checked_sub(1)?;
        Some(times[(last as f64 * q).round() as usize].as_secs_f64() * 1e3)
    }

    pub fn print(&self, rate: u32) {
        println!(
            "{} steps in {:.2} s: {:.1} steps/s, realtime factor {:.2} (audio s / wall s; real time \
             needs 50 steps/s), latency {} samples ({:.0} ms)",
            self.times.len(),
            self.wall,
            self.steps_per_second(),
            self.realtime_factor(rate),
            self.latency,
            self.latency as f64 * 1e3 / rate as f64
        );
        let all = |_: &StepTime| true;
        let q = |q| self.quantile_ms(q, all).unwrap_or(f64::NAN);
        let slowest = (0..self.times.len())
            .max_by_key(|&i| self.times[i].took)
            .unwrap_or(0);
        println!(
            "step time: P50 {:.2} ms, P95 {:.2} ms, P99 {:.2} ms, max {:.2} ms at step {slowest} \
             (budget 20 ms)",
            q(0.5),
            q(0.95),
            q(0.99),
            q(1.0)
        );
        let fmt = |v: Option<f64>| v.map_or("none".to_owned(), |v| format!("{v:.2} ms"));
        println!(
            "window slides {}: worst step while sliding {}, elsewhere {}; underruns {}",
            self.slides,
            fmt(self.quantile_ms(1.0, |t| t.sliding)),
            fmt(self.quantile_ms(1.0, |t| !t.sliding)),
            self.underruns
        );
        let steps = self.times.len() as f64;
        let mean_ms = self.times.iter().map(|t| t.took.as_secs_f64()).sum::<f64>() * 1e3 / steps;
        let beside = |phase: Phase| self.codec_beside && phase == Phase::Codec;
        let phases: Vec<String> = self
            .profile
            .phases()
            .map(|(phase, ms)| {
                let note = if beside(phase) {
                    " (beside the rest)"
                } else {
                    ""
                };
                format!("{}{note} {:.2}", phase.name(), ms / steps)
            })
            .collect();
        let in_step: f64 = self
            .profile
            .phases()
            .filter(|&(phase, _)| !beside(phase))
            .map(|(_, ms)| ms)
            .sum();
        println!(
            "per-step profile (mean ms over every step, replays of a slide included): {}; other \
             {:.2}; step {mean_ms:.2}",
            phases.join(", "),
            mean_ms - in_step / steps
        );
        if let Some((sent, taken)) = self.prompt_change {
            // From the step whose control went out with it (the engine may be a step or two
            // behind the controls) to 10 steps after the step that took it.
            let ms = |t: &StepTime| t.took.as_secs_f64() * 1e3;
            let (from, to) = (sent.min(taken) as usize, taken as usize + 10);
            let around: Vec<f64> = self.times.iter().take(to + 1).skip(from).map(ms).collect();
            let took = self.times.get(taken as usize).map_or(f64::NAN, ms);
            let worst = around.iter().copied().fold(f64::NAN, f64::max);
            let mean = around.iter().sum::<f64>() / around.len().max(1) as f64;
            println!(
                "prompt change sent with step {sent}'s control, taken at step {taken}: that step \
                 {took:.2} ms; steps {from}..={to} mean {mean:.2} ms, worst {worst:.2} ms"
            );
        }
    }
}
