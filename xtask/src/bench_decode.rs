//! `cargo xtask bench decode`: greedy CFG generation and EnCodec decode on a random-weight model
//! of the real musicgen-small shape, next to PyTorch (`tests/bench/torch_decode.py`) on the same
//! weights and thread count, printed as ratios, with the fraction of the memory-bandwidth floor.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use burn::tensor::{Int, Tensor, TensorData};
use engine::steering::SteeringPlan;
use engine::{Generation, GenerationOptions, MusicGen, Sampling};

const PROMPT: &str = "80s pop track with bassy drums and synth";

/// Greedy CFG decoder steps and EnCodec decode on a random-weight model of the musicgen-small
/// shape, next to PyTorch on the same weights and thread count.
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
    /// Python with torch + transformers for the reference run.
    #[arg(long, env = "MUSICRFM_PYTHON", default_value = "python3")]
    pub python: String,
    /// Skip the PyTorch run.
    #[arg(long = "no-reference")]
    pub skip_reference: bool,
}

pub(crate) fn default_bench_model() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".cache/musicrfm-bench/musicgen-small-random")
}

struct Measured {
    step_ms_median: f64,
    step_ms_p90: f64,
    decode_s: f64,
    peak_mb: f64,
}

pub fn run(options: &DecodeArgs) -> anyhow::Result<()> {
    ensure_model(options)?;
    let threads = rayon_threads();
    println!(
        "model: {} (random weights, musicgen-small shape), {threads} threads",
        options.model.display()
    );

    let ours = measure_ours(options)?;
    let bytes_per_step = decoder_bytes_per_step(&options.model)?;
    let bandwidth = measure_bandwidth_gbs();
    let floor_ms = bytes_per_step as f64 / (bandwidth * 1e9) * 1e3;

    let reference = if options.skip_reference {
        None
    } else {
        Some(measure_reference(options, threads)?)
    };

    println!();
    println!(
        "{:<34} {:>12} {:>12} {:>10}",
        "", "musicrfm", "PyTorch", "ratio"
    );
    let row = |name: &str, a: f64, b: Option<f64>, unit: &str| match b {
        Some(b) => println!(
            "{name:<34} {:>9.2} {unit:<2} {:>9.2} {unit:<2} {:>9.2}×",
            a,
            b,
            b / a
        ),
        None => println!("{name:<34} {:>9.2} {unit:<2} {:>12} {:>10}", a, "-", "-"),
    };
    row(
        "decode step, median",
        ours.step_ms_median,
        reference.as_ref().map(|r| r.step_ms_median),
        "ms",
    );
    row(
        "decode step, p90",
        ours.step_ms_p90,
        reference.as_ref().map(|r| r.step_ms_p90),
        "ms",
    );
    println!(
        "{:<34} {:>12.2} {:>12}",
        "steps/s (real time = 50)",
        1000.0 / ours.step_ms_median,
        reference.as_ref().map_or("-".to_owned(), |r| format!(
            "{:.2}",
            1000.0 / r.step_ms_median
        ))
    );
    row(
        &format!("EnCodec decode of {} s", options.decode_seconds),
        ours.decode_s,
        reference.as_ref().map(|r| r.decode_s),
        "s",
    );
    row(
        "peak memory",
        ours.peak_mb,
        reference.as_ref().map(|r| r.peak_mb),
        "MB",
    );
    println!();
    println!(
        "bandwidth floor: {:.2} GB of f32 weights per step at {bandwidth:.1} GB/s (measured) = {floor_ms:.1} ms; \
         musicrfm reaches {:.0} %{}",
        bytes_per_step as f64 / 1e9,
        100.0 * floor_ms / ours.step_ms_median,
        reference.as_ref().map_or(String::new(), |r| format!(
            ", PyTorch {:.0} %",
            100.0 * floor_ms / r.step_ms_median
        ))
    );
    println!("(ratio = PyTorch / musicrfm: above 1 means musicrfm is faster or smaller)");
    Ok(())
}

pub(crate) fn ensure_model(options: &DecodeArgs) -> anyhow::Result<()> {
    if options.model.join("config.json").is_file() {
        return Ok(());
    }
    let script = workspace_root().join("tests/bench/make_bench_model.py");
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

fn measure_ours(options: &DecodeArgs) -> anyhow::Result<Measured> {
    let device = engine::default_device();
    let t0 = Instant::now();
    let model = MusicGen::load(&options.model, &device)?;
    println!("musicrfm: loaded in {:.1} s", t0.elapsed().as_secs_f64());
    let run = |steps: usize| -> anyhow::Result<Vec<f64>> {
        let generation_options = GenerationOptions {
            steps: Some(steps),
            guidance: 3.0,
            sampling: Sampling::Greedy,
            ..GenerationOptions::default()
        };
        let mut generation = Generation::new(&model, PROMPT, generation_options)?;
        let mut plan = SteeringPlan::new(0, 0, 0, &device);
        let mut times = Vec::with_capacity(steps);
        for _ in 0..steps {
            let t = Instant::now();
            generation.step_steered(&mut plan)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        Ok(times)
    };
    run(4)?; // warm-up
    let mut step_ms = run(options.steps as usize)?;
    // Leave out the first step, as the reference does (its clock starts after it).
    step_ms.remove(0);
    step_ms.sort_by(f64::total_cmp);

    let frames = (options.decode_seconds * 50.0).round() as usize;
    let mut rng = engine::Rng::new(0);
    let codes: Vec<i64> = (0..4 * frames)
        .map(|_| (rng.next_u64() % 2048) as i64)
        .collect();
    let warm = Tensor::<3, Int>::from_data(
        TensorData::new(codes[..4 * 50.min(frames)].to_vec(), [1, 4, 50.min(frames)]),
        &device,
    );
    let _ = model.audio_encoder.decode(warm).into_data();
    let codes = Tensor::<3, Int>::from_data(TensorData::new(codes, [1, 4, frames]), &device);
    let t = Instant::now();
    let audio = model.audio_encoder.decode(codes).into_data();
    let decode_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        audio.num_elements() == frames * 640,
        "EnCodec gave {} samples",
        audio.num_elements()
    );

    Ok(Measured {
        step_ms_median: median(&step_ms),
        step_ms_p90: step_ms[(0.9 * (step_ms.len() - 1) as f64) as usize],
        decode_s,
        peak_mb: peak_rss_mb()?,
    })
}

fn measure_reference(options: &DecodeArgs, threads: usize) -> anyhow::Result<Measured> {
    let script = workspace_root().join("tests/bench/torch_decode.py");
    println!("PyTorch: running {} …", script.display());
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
    Ok(Measured {
        step_ms_median: get("step_ms_median")?,
        step_ms_p90: get("step_ms_p90")?,
        decode_s: get("decode_s")?,
        peak_mb: get("peak_rss_mb")?,
    })
}

/// f32 bytes of the weights one decode step must read: every block's self-attention (4 d²),
/// cross-attention query and output (2 d², keys/values of the text are cached), FFN (2 d·ffn),
/// and the LM heads.
fn decoder_bytes_per_step(model: &Path) -> anyhow::Result<u64> {
    let config = engine::MusicgenConfig::from_file(&model.join("config.json"))?;
    let d = config.decoder.hidden_size as u64;
    let per_block = 6 * d * d + 2 * d * config.decoder.ffn_dim as u64;
    let heads = config.decoder.num_codebooks as u64 * d * config.decoder.vocab_size as u64;
    Ok(4 * (config.decoder.num_hidden_layers as u64 * per_block + heads))
}

/// Read bandwidth of this machine: XOR-fold a 1 GiB buffer on every thread (integer ops that
/// vectorise, so the loop is bound by memory, not by the ALUs), best of 5.
fn measure_bandwidth_gbs() -> f64 {
    use rayon::prelude::*;
    let data: Vec<u64> = (0..1u64 << 27).collect();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let folded = data
            .par_chunks(1 << 16)
            .map(|c| c.iter().fold(0u64, |a, &x| a ^ x))
            .reduce(|| 0, |a, b| a ^ b);
        std::hint::black_box(folded);
        best = best.min(t.elapsed().as_secs_f64());
    }
    (data.len() * 8) as f64 / best / 1e9
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

pub(crate) fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}
