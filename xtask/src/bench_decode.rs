//! `cargo xtask bench decode`: greedy CFG generation and EnCodec decode on a random-weight model
//! of the real musicgen-small shape, in each `--dtype` weight format, next to PyTorch f32
//! (`tests/bench/torch_decode.py`) on the same weights and thread count, printed as ratios, with
//! the fraction of each format's memory-bandwidth floor.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use burn::tensor::{Int, Tensor, TensorData};
use engine::accuracy::GreedyRun;
use engine::profile::{Phase, Profile};
use engine::steering::SteeringPlan;
use engine::{Generation, GenerationOptions, LoadOptions, MusicGen, Sampling, WeightFormat};

const PROMPT: &str = "80s pop track with bassy drums and synth";

/// Greedy CFG decoder steps and EnCodec decode on a random-weight model of the musicgen-small
/// shape, in each weight format, next to PyTorch f32 on the same weights and thread count.
#[derive(Debug, clap::Args)]
pub struct DecodeArgs {
    /// The bench model directory (made with the reference script on first use).
    #[arg(long, default_value_os_t = default_bench_model())]
    pub model: PathBuf,
    /// Decoder steps to time (at least 3).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(3..))]
    pub steps: u64,
    /// Seconds of audio for the EnCodec decode timing.
    #[arg(long, default_value_t = 10.0)]
    pub decode_seconds: f64,
    /// Weight formats of the decoder's linear layers to time, side by side (comma-separated).
    #[arg(
        long = "dtype",
        value_name = "f32|bf16|q8|q4",
        value_delimiter = ',',
        default_values_t = WeightFormat::ALL
    )]
    pub dtypes: Vec<WeightFormat>,
    /// Python with torch + transformers for the reference run.
    #[arg(long, env = "MUSICRFM_PYTHON", default_value = "python3")]
    pub python: String,
    /// Skip the PyTorch run.
    #[arg(long = "no-reference")]
    pub skip_reference: bool,
    /// Skip the teacher-forced comparison of each reduced format's logits with f32's.
    #[arg(long = "no-accuracy")]
    pub skip_accuracy: bool,
}

pub(crate) fn default_bench_model() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".cache/musicrfm-bench/musicgen-small-random")
}

/// One format's decode steps.
struct Steps {
    label: String,
    step_ms_median: f64,
    step_ms_p90: f64,
    /// Bytes of weights a step reads (`None` where the reference does not say).
    bytes_per_step: Option<u64>,
    /// The read bandwidth probed just before and just after the timed steps.
    bandwidth: Bandwidth,
    /// A prompt change: T5 and the cross-attention keys and values of the new text.
    condition_ms: Option<f64>,
    /// Where the timed steps' time went, summed, and their mean wall time (ms).
    profile: Option<(Profile, f64)>,
    /// The greedy codes of the timed run (compared with f32's).
    codes: Vec<i64>,
    peak_mb: f64,
}

/// The machine's read bandwidth (GB/s) either side of a run: a shared machine's moves by a
/// quarter within minutes, so each run's floor comes from probes taken next to it, not from one
/// probe at the start of the bench.
#[derive(Debug, Clone, Copy)]
struct Bandwidth {
    before: f64,
    after: f64,
}

impl Bandwidth {
    fn mean(self) -> f64 {
        0.5 * (self.before + self.after)
    }
}

/// The PyTorch run: its steps, its EnCodec decode, and how it was configured.
struct Reference {
    steps: Steps,
    decode_s: f64,
}

pub fn run(options: &DecodeArgs) -> anyhow::Result<()> {
    ensure_model(options)?;
    let threads = rayon_threads();
    println!(
        "model: {} (random weights, musicgen-small shape), {threads} threads, {} steps, kernel {}",
        options.model.display(),
        options.steps,
        engine::matvec::Kernel::detect().name()
    );
    println!(
        "read bandwidth: probed just before and just after each run's timed steps (XOR-fold of \
         1 GiB, {threads} threads, best of 5 passes reading each piece as one stream and as four)"
    );

    let mut ours = Vec::new();
    // EnCodec's seconds per codec format (`WeightFormat::codec`: f32 next to f32, bf16 next to
    // bf16, q8 next to q8 and q4), timed with the first decoder format that takes it.
    let mut codecs: Vec<(WeightFormat, f64)> = Vec::new();
    for &format in &options.dtypes {
        reset_peak_rss();
        let timed = codecs.iter().any(|&(codec, _)| codec == format.codec());
        let (steps, decode_s) = measure_ours(options, format, !timed)?;
        if let Some(s) = decode_s {
            codecs.push((format.codec(), s));
        }
        ours.push(steps);
    }
    anyhow::ensure!(!codecs.is_empty(), "--dtype: at least one format");
    let codec_s = |format: WeightFormat| {
        codecs
            .iter()
            .find(|&&(codec, _)| codec == format.codec())
            .map_or(f64::NAN, |&(_, s)| s)
    };
    let reference = if options.skip_reference {
        None
    } else {
        Some(measure_reference(options, threads)?)
    };

    let frames = options.decode_seconds * 50.0;
    println!();
    println!(
        "{:<30} {:>8} {:>8} {:>8} {:>9} {:>8} {:>11} {:>8} {:>11} {:>9} {:>9} {:>8}",
        "ms/step",
        "P50",
        "P90",
        "steps/s",
        "×PyTorch",
        "GB/step",
        "read GB/s",
        "floor",
        "+codec st/s",
        "at floor",
        "prompt ms",
        "peak MB"
    );
    let reference_p50 = reference.as_ref().map(|r| r.steps.step_ms_median);
    let probes = || ours.iter().chain(reference.as_ref().map(|r| &r.steps));
    let low = probes()
        .map(|s| s.bandwidth.before.min(s.bandwidth.after))
        .fold(f64::INFINITY, f64::min);
    let high = probes()
        .map(|s| s.bandwidth.before.max(s.bandwidth.after))
        .fold(0.0, f64::max);
    let rows = ours
        .iter()
        .zip(options.dtypes.iter().map(|&f| codec_s(f)))
        .chain(reference.as_ref().map(|r| (&r.steps, r.decode_s)));
    for (steps, codec_s) in rows {
        let codec_ms_per_frame = 1e3 * codec_s / frames;
        let floor_ms = steps
            .bytes_per_step
            .map(|bytes| bytes as f64 / (steps.bandwidth.mean() * 1e9) * 1e3);
        let floor = floor_ms.map_or("-".to_owned(), |floor_ms| {
            format!("{:.0} %", 100.0 * floor_ms / steps.step_ms_median)
        });
        let at_floor = floor_ms.map_or("-".to_owned(), |floor_ms| {
            format!("{:.1}", 1e3 / (floor_ms + codec_ms_per_frame))
        });
        println!(
            "{:<30} {:>8.2} {:>8.2} {:>8.2} {:>9} {:>8} {:>11} {:>8} {:>11.2} {:>9} {:>9} {:>8.0}",
            steps.label,
            steps.step_ms_median,
            steps.step_ms_p90,
            1e3 / steps.step_ms_median,
            reference_p50.map_or("-".to_owned(), |r| format!(
                "{:.2}×",
                r / steps.step_ms_median
            )),
            steps
                .bytes_per_step
                .map_or("-".to_owned(), |b| format!("{:.3}", b as f64 / 1e9)),
            format!("{:.1}/{:.1}", steps.bandwidth.before, steps.bandwidth.after),
            floor,
            1e3 / (steps.step_ms_median + codec_ms_per_frame),
            at_floor,
            steps
                .condition_ms
                .map_or("-".to_owned(), |ms| format!("{ms:.0}")),
            steps.peak_mb,
        );
    }
    let config = engine::MusicgenConfig::from_file(&options.model.join("config.json"))?;
    let linears = 8 * config.decoder.num_hidden_layers + config.decoder.num_codebooks;
    let round_trip_us = measure_round_trip_us(config.decoder.hidden_size);
    println!(
        "activations to the host kernel and back ([2, 1, {}] into_data + from_data): {round_trip_us:.1} µs × {linears} linears = {:.2} ms per step",
        config.decoder.hidden_size,
        round_trip_us * linears as f64 / 1e3
    );
    print_profiles(&ours, options.steps as usize - 1);
    if let Some(f32_run) = ours.iter().find(|s| s.label.ends_with(" f32")) {
        for steps in ours.iter().filter(|s| !std::ptr::eq(*s, f32_run)) {
            let same = steps
                .codes
                .iter()
                .zip(&f32_run.codes)
                .filter(|(a, b)| a == b)
                .count();
            println!(
                "{}: {same} of {} greedy codes as f32 ({:.1} %) over the timed run",
                steps.label,
                f32_run.codes.len(),
                100.0 * same as f64 / f32_run.codes.len().max(1) as f64
            );
        }
    }
    if !options.skip_accuracy {
        measure_accuracy(options)?;
    }
    let reference_codec = reference.as_ref().map(|r| r.decode_s);
    println!();
    for &(codec, codec_s) in &codecs {
        let with = match codec {
            WeightFormat::F32 => "f32, next to an f32 decoder",
            WeightFormat::Bf16 => "LSTM and transposed convs in bf16, next to a bf16 decoder",
            _ => {
                "LSTM recurrence in q8, its input projection and the transposed convs in bf16, next to a q8/q4 decoder"
            }
        };
        println!(
            "EnCodec decode of {} s ({with}), best of {CODEC_RUNS}: musicrfm {codec_s:.2} s (real-time factor {:.1}×){}",
            options.decode_seconds,
            options.decode_seconds / codec_s,
            reference_codec.map_or(String::new(), |r| format!(
                ", PyTorch f32 {r:.2} s ({:.1}×): ratio {:.2}×",
                options.decode_seconds / r,
                r / codec_s
            ))
        );
    }
    println!(
        "read GB/s = the bandwidth probed before/after the timed steps ({low:.1}–{high:.1} GB/s \
         over the bench); floor = bytes of decoder weights a step reads (GB/step; where the CPU step folds \
         the prompt into the cross-attention's projections, the folds in their place) ÷ the mean \
         of the two; \
         +codec st/s = 1000 / (P50 + EnCodec ms per frame, batch-decoded, with the format's codec); \
         at floor = the same with the floor's ms in place of P50: the most this machine's memory \
         allows that format (real time needs 50); \
         ×PyTorch = PyTorch P50 / P50 (above 1: musicrfm is faster); \
         peak MB = process high-water mark from loading that format"
    );
    Ok(())
}

pub(crate) fn ensure_model(options: &DecodeArgs) -> anyhow::Result<()> {
    if options.model.join("config.json").is_file() {
        return Ok(());
    }
    let script = crate::workspace_root().join("tests/bench/make_bench_model.py");
    println!(
        "making the benchmark model in {} (needs torch + transformers) …",
        options.model.display()
    );
    let status = Command::new(&options.python)
        .arg(&script)
        .arg(&options.model)
        .status()
        .with_context(|| {
            format!(
                "could not run {} (set MUSICRFM_PYTHON or --python)",
                options.python
            )
        })?;
    if !status.success() {
        bail!("{} {} failed", options.python, script.display());
    }
    Ok(())
}

/// Load the bench model with `format`, time its decode steps (and, with `codec`, EnCodec).
fn measure_ours(
    options: &DecodeArgs,
    format: WeightFormat,
    codec: bool,
) -> anyhow::Result<(Steps, Option<f64>)> {
    let device = engine::default_device();
    let t0 = Instant::now();
    let load = LoadOptions {
        weight_format: format,
    };
    let model = MusicGen::load_with(&options.model, &device, load)
        .with_context(|| format!("loading {} as --dtype {format}", options.model.display()))?;
    println!(
        "musicrfm {format}: loaded in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let run = |steps: usize| -> anyhow::Result<(Vec<f64>, Profile, Vec<i64>)> {
        let generation_options = GenerationOptions {
            steps: Some(steps),
            guidance: 3.0,
            sampling: Sampling::Greedy,
            ..GenerationOptions::default()
        };
        let mut generation = Generation::new(&model, PROMPT, generation_options)?;
        let mut plan = SteeringPlan::new(0, 0, 0, &device);
        let mut times = Vec::with_capacity(steps);
        let mut profile = Profile::default();
        for s in 0..steps {
            let (t, before) = (Instant::now(), Profile::now());
            generation.step_steered(&mut plan)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            // Leave out the first step, as the reference does (its clock starts after it).
            if s > 0 {
                profile = profile.plus(&Profile::now().since(&before));
            }
        }
        Ok((times, profile, generation.codes().data))
    };
    run(4)?; // warm-up
    // The probes' gigabyte is left out of the peak: the peak so far is kept, and the count
    // starts again after each probe.
    let mut peak_mb = peak_rss_mb()?;
    let before = measure_bandwidth_gbs();
    reset_peak_rss();
    let (mut step_ms, profile, codes) = run(options.steps as usize)?;
    peak_mb = peak_mb.max(peak_rss_mb()?);
    let after = measure_bandwidth_gbs();
    reset_peak_rss();
    step_ms.remove(0);
    let mean_ms = step_ms.iter().sum::<f64>() / step_ms.len() as f64;
    step_ms.sort_by(f64::total_cmp);

    let condition = model.condition(PROMPT, true)?;
    let mut condition_ms: Vec<f64> = (0..3)
        .map(|_| {
            let t = Instant::now();
            let condition = model.condition(PROMPT, true)?;
            let _ = condition.encoder_states.into_data();
            Ok(t.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<anyhow::Result<_>>()?;
    condition_ms.sort_by(f64::total_cmp);

    let decode_s = if codec {
        Some(measure_codec(&model, options.decode_seconds)?)
    } else {
        None
    };
    let steps = Steps {
        label: format!("musicrfm {format}"),
        step_ms_median: median(&step_ms),
        step_ms_p90: step_ms[(0.9 * (step_ms.len() - 1) as f64) as usize],
        bytes_per_step: Some(model.decoder.weight_bytes_per_step(Some(&condition.cross)) as u64),
        bandwidth: Bandwidth { before, after },
        condition_ms: Some(median(&condition_ms)),
        profile: Some((profile, mean_ms)),
        codes,
        peak_mb: peak_mb.max(peak_rss_mb()?),
    };
    Ok((steps, decode_s))
}

/// Each reduced format's guided logits against f32's, step by step through the host decode
/// step (each format's own key/value cache), over the timed run's length: f32 picks its argmax
/// and every other format is made to pick the same codes (`Generation::step_choosing`), so the
/// comparison is of the format alone, not of a free-running sequence that one flipped code
/// sends elsewhere (the greedy agreement above).
fn measure_accuracy(options: &DecodeArgs) -> anyhow::Result<()> {
    let reduced: Vec<WeightFormat> = options
        .dtypes
        .iter()
        .copied()
        .filter(|&f| f != WeightFormat::F32)
        .collect();
    if reduced.is_empty() {
        return Ok(());
    }
    let device = engine::default_device();
    let steps = options.steps as usize;
    let generation_options = GenerationOptions {
        steps: Some(steps),
        guidance: 3.0,
        sampling: Sampling::Greedy,
        ..GenerationOptions::default()
    };
    let load = |format: WeightFormat| {
        MusicGen::load_with(
            &options.model,
            &device,
            LoadOptions {
                weight_format: format,
            },
        )
        .with_context(|| format!("loading {} as --dtype {format}", options.model.display()))
    };
    let f32_model = load(WeightFormat::F32)?;
    let reference = GreedyRun::record(&f32_model, PROMPT, generation_options)?;
    drop(f32_model);
    println!();
    println!(
        "teacher-forced along f32's greedy codes ({} steps with logits, CFG 3): each format's guided \
         logits against f32's at the same step",
        reference.logits.len()
    );
    for format in reduced {
        let model = load(format)?;
        let (error, _) = reference.forced(&model, PROMPT, generation_options)?;
        println!(
            "musicrfm {format}: RMS err {:.2e} of f32's RMS, max abs err {:.2e} of the largest \
             |logit| {:.1}, min cosine {:.6}, argmax as f32 at {} of {} rows ({:.1} %)",
            error.relative_rms_err(),
            error.relative_max_abs_err(),
            error.max_abs_reference,
            error.min_cosine,
            error.same_argmax,
            error.rows,
            100.0 * error.argmax_agreement()
        );
    }
    Ok(())
}

/// Where a step's time goes, per format: mean ms per step in each phase (exclusive: the linear
/// layers inside attention count as linears), and what no phase covers.
fn print_profiles(ours: &[Steps], steps: usize) {
    let phases = [
        Phase::Embed,
        Phase::Linears,
        Phase::Attention,
        Phase::Norms,
        Phase::Steering,
        Phase::LmHeads,
        Phase::Sampling,
    ];
    println!();
    print!("{:<30}", "per-step profile (mean ms)");
    for phase in phases {
        print!(" {:>9}", phase.name());
    }
    println!(" {:>9} {:>9}", "other", "step");
    for s in ours {
        let Some((profile, mean_ms)) = &s.profile else {
            continue;
        };
        let per_step = |ms: f64| ms / steps.max(1) as f64;
        print!("{:<30}", s.label);
        for phase in phases {
            print!(" {:>9.2}", per_step(profile.ms(phase)));
        }
        let covered: f64 = phases.iter().map(|&p| per_step(profile.ms(p))).sum();
        println!(" {:>9.2} {:>9.2}", mean_ms - covered, mean_ms);
    }
    println!(
        "(linears: the blocks' projections and feed-forward, activations in and out, the \
         feed-forward's GELU inside its first product; norms+act: the layer norms; lm heads: \
         final norm + 4 heads; sampling: logits to the host, CFG, picking; other: residual adds, \
         reshapes, the step's glue)"
    );
}

/// Microseconds to read a `[2, 1, width]` activation to the host and make a tensor of the result
/// again, as each host-kernel linear does (median of 2000).
fn measure_round_trip_us(width: usize) -> f64 {
    let device = engine::default_device();
    let values: Vec<f32> = (0..2 * width).map(|i| i as f32).collect();
    let x = Tensor::<3>::from_data(TensorData::new(values, [2, 1, width]), &device);
    let mut times: Vec<f64> = (0..2000)
        .map(|_| {
            let t = Instant::now();
            let data = x.clone().into_data();
            let y = Tensor::<3>::from_data(data, &device);
            std::hint::black_box(y);
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    median(&times)
}

/// Timed EnCodec decodes; the best counts (the same number as `tests/bench/torch_decode.py`):
/// one run moves by a third on a shared machine.
const CODEC_RUNS: usize = 3;

/// Seconds EnCodec takes to decode `seconds` of random codes (after a 1 s warm-up), best of
/// [`CODEC_RUNS`].
fn measure_codec(model: &MusicGen, seconds: f64) -> anyhow::Result<f64> {
    let device = &model.device;
    let frames = (seconds * 50.0).round() as usize;
    let mut rng = engine::Rng::new(0);
    let codes: Vec<i64> = (0..4 * frames)
        .map(|_| (rng.next_u64() % 2048) as i64)
        .collect();
    let warm = Tensor::<3, Int>::from_data(
        TensorData::new(codes[..4 * 50.min(frames)].to_vec(), [1, 4, 50.min(frames)]),
        device,
    );
    let _ = model.audio_encoder.decode(warm).into_data();
    let codes = Tensor::<3, Int>::from_data(TensorData::new(codes, [1, 4, frames]), device);
    let mut best = f64::INFINITY;
    for _ in 0..CODEC_RUNS {
        let t = Instant::now();
        let audio = model.audio_encoder.decode(codes.clone()).into_data();
        best = best.min(t.elapsed().as_secs_f64());
        anyhow::ensure!(
            audio.num_elements() == frames * 640,
            "EnCodec gave {} samples",
            audio.num_elements()
        );
    }
    Ok(best)
}

fn measure_reference(options: &DecodeArgs, threads: usize) -> anyhow::Result<Reference> {
    let script = crate::workspace_root().join("tests/bench/torch_decode.py");
    println!("PyTorch: running {} …", script.display());
    let before = measure_bandwidth_gbs();
    let output = Command::new(&options.python)
        .arg(&script)
        .arg(&options.model)
        .args([
            "--steps",
            &options.steps.to_string(),
            "--threads",
            &threads.to_string(),
        ])
        .args(["--decode-seconds", &options.decode_seconds.to_string()])
        .output()
        .with_context(|| {
            format!(
                "could not run {} (set MUSICRFM_PYTHON or --python)",
                options.python
            )
        })?;
    if !output.status.success() {
        bail!(
            "torch_decode.py failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let after = measure_bandwidth_gbs();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("torch_decode.py printed no JSON")?;
    let json: serde_json::Value = serde_json::from_str(line)?;
    let get = |k: &str| {
        json[k]
            .as_f64()
            .with_context(|| format!("torch_decode.py: no `{k}`"))
    };
    let text = |k: &str| json[k].as_str().unwrap_or("?").to_owned();
    println!(
        "PyTorch: torch {}, transformers {}, f32, {} threads, attention `{}`, eager (no torch.compile), \
         linear layers through {}",
        text("torch"),
        text("transformers"),
        json["threads"],
        text("attention"),
        match text("linears").as_str() {
            "onednn" =>
                "oneDNN (torch.utils.mkldnn; its peak memory includes that copy of the \
                         decoder's weights beside the file's mapped pages)",
            "aten" => "PyTorch's default path (MKL's sgemm)",
            _ => "?",
        }
    );
    if let Some(trial) = json["trial_step_ms"].as_object().filter(|t| !t.is_empty()) {
        let ms = |k: &str| trial.get(k).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
        println!(
            "PyTorch: the faster of two short trials kept (P50 ms a step): default linears {:.2}, \
             oneDNN linears {:.2}",
            ms("aten"),
            ms("onednn")
        );
    }
    Ok(Reference {
        steps: Steps {
            label: "PyTorch f32".to_owned(),
            step_ms_median: get("step_ms_median")?,
            step_ms_p90: get("step_ms_p90")?,
            bytes_per_step: Some(decoder_f32_bytes_per_step(&options.model)?),
            bandwidth: Bandwidth { before, after },
            condition_ms: None,
            profile: None,
            codes: Vec::new(),
            peak_mb: get("peak_rss_mb")?,
        },
        decode_s: get("decode_s")?,
    })
}

/// f32 bytes of the weights one decode step must read: every block's self-attention (4 d²),
/// cross-attention query and output (2 d², keys/values of the text are cached), FFN (2 d·ffn),
/// and the LM heads.
fn decoder_f32_bytes_per_step(model: &Path) -> anyhow::Result<u64> {
    let config = engine::MusicgenConfig::from_file(&model.join("config.json"))?;
    let d = config.decoder.hidden_size as u64;
    let per_block = 6 * d * d + 2 * d * config.decoder.ffn_dim as u64;
    let heads = config.decoder.num_codebooks as u64 * d * config.decoder.vocab_size as u64;
    Ok(4 * (config.decoder.num_hidden_layers as u64 * per_block + heads))
}

/// Read bandwidth of this machine: XOR-fold a 1 GiB buffer on every thread (integer ops that
/// vectorise, so the loop is bound by memory, not by the ALUs), best of 5 passes in each of two
/// patterns: each 512 KiB piece read front to back, and each piece read as four quarters side by
/// side (four streams, as the float kernels read a tile's four weight rows). Which one a machine
/// serves faster varies: on an AMD EPYC (Zen 3, KVM) one stream read 12–18 GB/s while the f32
/// kernels' four rows streamed 17–24, which put f32 "above its floor". The buffer is in the
/// pages the weights live in (`engine::matvec::Pages`: 2 MiB where the kernel gives them), so
/// the floor is what that memory delivers. Returns the best rate.
fn measure_bandwidth_gbs() -> f64 {
    use rayon::prelude::*;
    const PIECE: usize = 1 << 16;
    // 1 GiB as sixteen 64 MiB buffers (the pages' own chunk size), each copied from one reused
    // 64 MiB source: the probe holds 1 GiB and a little beside a loaded model, not 2.
    const PART: usize = 1 << 23;
    let mut source = vec![0u64; PART];
    let data: Vec<engine::matvec::Pages<u64>> = (0..16u64)
        .map(|p| {
            for (i, v) in source.iter_mut().enumerate() {
                *v = p * PART as u64 + i as u64;
            }
            engine::matvec::Pages::copy_of(&source)
        })
        .collect();
    drop(source);
    fn one(c: &[u64]) -> u64 {
        c.iter().fold(0u64, |a, &x| a ^ x)
    }
    fn four(c: &[u64]) -> u64 {
        let q = c.len() / 4;
        let (a, rest) = c.split_at(q);
        let (b, rest) = rest.split_at(q);
        let (c, d) = rest.split_at(q);
        let mut acc = [0u64; 4];
        for i in 0..q {
            acc[0] ^= a[i];
            acc[1] ^= b[i];
            acc[2] ^= c[i];
            acc[3] ^= d[i];
        }
        acc[0] ^ acc[1] ^ acc[2] ^ acc[3] ^ one(&d[q..])
    }
    type Fold = fn(&[u64]) -> u64;
    let mut best = f64::MAX;
    for _ in 0..5 {
        for fold in [one as Fold, four as Fold] {
            let t = Instant::now();
            let folded = data
                .par_iter()
                .flat_map(|part| part.par_chunks(PIECE))
                .map(fold)
                .reduce(|| 0, |a, b| a ^ b);
            std::hint::black_box(folded);
            best = best.min(t.elapsed().as_secs_f64());
        }
    }
    (16 * PART * 8) as f64 / best / 1e9
}

fn rayon_threads() -> usize {
    rayon::current_num_threads()
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
    }
}

/// Start the peak-memory count again from the current resident size (Linux `clear_refs` 5), so
/// each format's peak is its own. Where that is refused the peaks are the process's so far.
fn reset_peak_rss() {
    if std::fs::write("/proc/self/clear_refs", "5").is_err() {
        eprintln!("note: cannot reset the peak-memory count; peaks accumulate across formats");
    }
}

/// Peak resident memory of this process (VmHWM).
fn peak_rss_mb() -> anyhow::Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM in /proc/self/status")?;
    let kb: f64 = line
        .split_whitespace()
        .nth(1)
        .context("VmHWM value")?
        .parse()?;
    Ok(kb / 1024.0)
}
