//! `cargo xtask bench stream`: the streaming engine in real-time terms — steps/s against the 50
//! a second real time needs, step-time percentiles, the worst step while a window slides,
//! latency at the host rate — on the committed tiny model and on the musicgen-small-shape bench
//! model, each with and without a live concept meter (the meter's cost side by side), and once
//! more with a prompt typed half way (when the stream takes it, what the steps around it cost).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use directions::faer::Mat;
use directions::{ConceptKind, DirectionsFile, KernelParams, Probe, ProbeKind};
use engine::MusicGen;
use engine::features::{ProbeReport, beside};
use engine::render::{SamplingChoice, default_guidance};
use engine::steering::{Schedule, SteerArg};
use engine::stream::GenerationSettings;

use crate::bench_decode::{DecodeArgs, default_bench_model, ensure_model};
use crate::model_source::DtypeFlag;
use crate::stream::{StreamReport, StreamSetup, bounce};
use crate::workspace_root;

/// Streaming speed and latency, with and without a concept meter, on the tiny and the
/// musicgen-small-shape models.
#[derive(Debug, clap::Args)]
pub struct StreamBenchArgs {
    /// The musicgen-small-shape bench model (made as `bench decode` makes it).
    #[arg(long, default_value_os_t = default_bench_model())]
    pub model: PathBuf,
    /// Seconds of audio streamed on the bench model.
    #[arg(long, default_value_t = 4.0)]
    pub seconds: f64,
    /// Decoder positions per window on the bench model: small, so the run includes slides.
    #[arg(long, default_value_t = 150)]
    pub window: usize,
    /// Seconds of audio streamed on the tiny model (window 500, re-prompt 200).
    #[arg(long, default_value_t = 60.0)]
    pub tiny_seconds: f64,
    /// Host sample rate in Hz.
    #[arg(long, default_value_t = 48_000)]
    pub rate: u32,
    /// Python with torch + transformers, to make the bench model on first use.
    #[arg(long, env = "MUSICRFM_PYTHON", default_value = "python3")]
    pub python: String,
    #[command(flatten)]
    pub dtype: DtypeFlag,
}

const PROMPT: &str = "80s pop track with bassy drums and synth";
const CHANGED_PROMPT: &str = "slow classical piano with strings";

pub fn run(args: &StreamBenchArgs) -> anyhow::Result<()> {
    ensure_model(&DecodeArgs {
        model: args.model.clone(),
        steps: 3,
        decode_seconds: 1.0,
        python: args.python.clone(),
        skip_reference: true,
        skip_accuracy: true,
        dtypes: vec![args.dtype.dtype],
    })?;
    println!(
        "{} threads, {} Hz, blocks of 512, decoder weights {}, sampled (top-k 250) with CFG 3, \
         slot 0 steered by a sine of strength 2",
        rayon::current_num_threads(),
        args.rate,
        args.dtype.dtype
    );
    let tiny = workspace_root().join("tests/fixtures/musicgen-tiny");
    let runs = [
        ("musicgen-tiny", tiny.as_path(), args.tiny_seconds, 500, 200),
        (
            "musicgen-small shape (random weights)",
            args.model.as_path(),
            args.seconds,
            args.window,
            engine::stream::reprompt_frames_for(args.window),
        ),
    ];
    for (name, dir, seconds, window, reprompt) in runs {
        println!("\n== {name}: {seconds} s, window {window}, re-prompt {reprompt} frames");
        let model = Arc::new(
            MusicGen::load_with(dir, &engine::default_device(), args.dtype.load_options())
                .with_context(|| format!("loading {}", dir.display()))?,
        );
        println!(
            "EnCodec decodes {} frame(s) a run (the engine's default here)",
            engine::stream::default_decode_chunk(&model)
        );
        let scratch =
            std::env::temp_dir().join(format!("musicrfm-bench-stream-{}", std::process::id()));
        std::fs::create_dir_all(&scratch)?;
        let plain = write_directions(&model, &scratch.join("plain.safetensors"))?;
        let metered = write_directions(&model, &scratch.join("metered.safetensors"))?;
        write_probe(&model, &metered)?;
        let settings = GenerationSettings {
            sampling: SamplingChoice::default().resolve(&model.generation_config),
            guidance: default_guidance(&model.generation_config),
            seed: 0,
        };
        let mut reports: Vec<StreamReport> = Vec::new();
        // The third run is sent a new prompt half way, as the plugin sends one typed while
        // playing.
        let change = (CHANGED_PROMPT, seconds / 2.0);
        let variants = [
            (&plain, None, "no meter".to_owned()),
            (&metered, None, "with a live meter".to_owned()),
            (
                &plain,
                Some(change),
                format!("no meter, a prompt change at {:.1} s", change.1),
            ),
        ];
        for (file, prompt_change, label) in variants {
            let steers = [SteerArg {
                file: file.clone(),
                class: "0".into(),
                strength: 2.0,
                schedule: Schedule::Sine { period: 200.0 },
            }];
            let setup = StreamSetup {
                prompt: PROMPT,
                seconds,
                rate: args.rate,
                block: 512,
                settings,
                window,
                reprompt_frames: reprompt,
                decode_chunk_frames: None,
                steers: &steers,
                layers: None,
                gate: 1.0,
                prompt_change,
            };
            let report = bounce(model.clone(), &setup)?;
            println!("-- {label}");
            report.print(args.rate);
            reports.push(report);
        }
        let (a, b) = (&reports[0], &reports[1]);
        println!(
            "meter: {} publications; steps/s with / without {:.3} (1 = free)",
            b.meter_updates,
            b.steps_per_second() / a.steps_per_second()
        );
        let rt = a.realtime_factor(args.rate);
        println!(
            "real time: {:.2}× ({})",
            rt,
            if rt >= 1.0 {
                "keeps up".to_owned()
            } else {
                format!(
                    "{:.1}× too slow for live playback; offline bounces stay exact",
                    1.0 / rt
                )
            }
        );
        let _ = std::fs::remove_dir_all(&scratch);
    }
    instances_memory(&args.model, args.rate, args.dtype)?;
    plugin_instances_memory(&args.model, args.rate, args.dtype)?;
    println!(
        "\nlatency budget: codebook delay (K−1 steps) + codec look-ahead + cushion (2 steps), \
         20 ms a step, plus the resampler's delay; a step must finish in 20 ms on average, and \
         the cushion absorbs a late one"
    );
    Ok(())
}

/// One class of random unit vectors over every block, as a directions file.
fn write_directions(model: &MusicGen, path: &Path) -> anyhow::Result<PathBuf> {
    let (d, n) = (model.decoder.d_model(), model.decoder.num_blocks());
    let mut rng = directions::Rng::keyed(7, &[d as u64]);
    let directions = (0..n)
        .map(|_| {
            let v: Vec<f32> = (0..d).map(|_| rng.normal() as f32).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / norm).collect()
        })
        .collect();
    DirectionsFile {
        concept: "bench".into(),
        classes: vec!["bench".into()],
        kind: ConceptKind::Binary,
        metric: "auc".into(),
        model: "bench".into(),
        d_model: d,
        n_layers_model: n,
        pooling: "mean".into(),
        site: "block_output".into(),
        layers: (0..n as i64).collect(),
        directions: vec![directions],
        scores: vec![vec![1.0; n]],
    }
    .write(path)?;
    Ok(path.to_owned())
}

/// A 12-class probe of the model's width with 600 centers beside `directions`, read at the
/// middle block: the size of a SynTheory notes probe.
fn write_probe(model: &MusicGen, directions: &Path) -> anyhow::Result<()> {
    let d = model.decoder.d_model();
    let mut rng = directions::Rng::keyed(11, &[d as u64]);
    let mut normal = |_: usize, _: usize| rng.normal() as f32;
    let probe = Probe::new(
        ProbeKind::Multiclass { n_classes: 12 },
        KernelParams {
            bandwidth: 10.0,
            exponent: 1.0,
        },
        1e-3,
        false,
        Mat::<f32>::from_fn(d, d, |i, j| if i == j { 1.0 } else { 0.0 }),
        Mat::<f32>::from_fn(600, d, &mut normal),
        Mat::<f32>::from_fn(600, 12, &mut normal),
        0.0,
        1.0,
    )?;
    let probe_path = beside(directions, ".probe.safetensors");
    probe.save(&probe_path)?;
    let report = serde_json::json!({
        "probe": ProbeReport {
            file: probe_path.file_name().unwrap_or_default().to_string_lossy().into_owned(),
            block: model.decoder.num_blocks() / 2,
            kind: "multiclass".into(),
        }
    });
    std::fs::write(beside(directions, ".report.json"), report.to_string())?;
    Ok(())
}

/// This process's resident set in MB.
fn rss_mb() -> anyhow::Result<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: f64 = statm.split_whitespace().nth(1).context("statm")?.parse()?;
    Ok(pages * 4096.0 / (1 << 20) as f64)
}

/// Resident memory with one and with three engines streaming the same model directory (the
/// plugin's instances share one copy of the weights).
fn instances_memory(dir: &Path, rate: u32, dtype: DtypeFlag) -> anyhow::Result<()> {
    use engine::stream::{Clock, Engine, EngineConfig, ModelSource};
    let before = rss_mb()?;
    let mut engines = Vec::new();
    let mut after = Vec::new();
    for _ in 0..3 {
        let config = EngineConfig {
            sample_rate: rate,
            clock: Clock::Timeline,
            ..EngineConfig::default()
        };
        let (handle, endpoint) = Engine::spawn(config)?;
        let source = ModelSource::Path(dir.to_string_lossy().into_owned());
        handle.load_model_with(source, dtype.load_options())?;
        handle.set_prompt(PROMPT, 0)?;
        let started = std::time::Instant::now();
        while !endpoint.status().running {
            if !handle.last_error().is_empty() || started.elapsed().as_secs() > 600 {
                anyhow::bail!("engine did not start: {}", handle.last_error());
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        engines.push((handle, endpoint));
        after.push(rss_mb()? - before);
    }
    println!(
        "\n== memory (this process's resident set, above {before:.0} MB): 1 engine {:.0} MB, \
         3 engines on the same model {:.0} MB ({} copy of the weights: {:.0} MB per extra engine)",
        after[0],
        after[2],
        engine::stream::models::resident(),
        (after[2] - after[0]) / 2.0
    );
    Ok(())
}

/// The same through the built plugin (`$MUSICRFM_CLAP`, else the target directory's bundle):
/// one and three instances in this host, each with the model and the weight format set,
/// activated and past their first offline block.
fn plugin_instances_memory(dir: &Path, rate: u32, dtype: DtypeFlag) -> anyhow::Result<()> {
    use crate::clap_host::{self, Playback};
    let plugin = crate::bounce::default_plugin();
    let library = crate::bounce::library(&plugin);
    if !library.is_file() {
        println!(
            "\n== plugin instances: no bundle at {} (run `cargo xtask bundle musicrfm --release`)",
            plugin.display()
        );
        return Ok(());
    }
    let (entry, id) = clap_host::load_entry(&library)?;
    let before = rss_mb()?;
    let mut instances = Vec::new();
    let mut after = Vec::new();
    for _ in 0..3 {
        let mut instance = clap_host::instantiate(&entry, &id)?;
        let mut state = clap_host::state_json(&clap_host::save_state(&mut instance)?)?;
        let model = dir.to_string_lossy();
        clap_host::set_field(&mut state, "model", &serde_json::json!(model));
        clap_host::set_field(&mut state, "prompt", &serde_json::json!(PROMPT));
        clap_host::set_param(&mut state, "weights", dtype.dtype.name())?;
        clap_host::load_state(&mut instance, &clap_host::state_bytes(&state))?;
        clap_host::set_offline(&mut instance)?;
        Playback {
            sample_rate: f64::from(rate),
            blocks: &[512],
            ..Default::default()
        }
        .run(&mut instance)?;
        let report = clap_host::param_text(&mut instance, "engine")?;
        if !report.contains("running=true") {
            anyhow::bail!("a plugin instance did not start its engine: {report}");
        }
        instances.push(instance);
        after.push(rss_mb()? - before);
    }
    println!(
        "== memory through the plugin ({}): 1 instance {:.0} MB, 3 instances {:.0} MB \
         ({:.0} MB per extra instance: its own KV cache, stream and timeline cache)",
        plugin.display(),
        after[0],
        after[2],
        (after[2] - after[0]) / 2.0
    );
    drop(instances);
    drop(entry);
    Ok(())
}
