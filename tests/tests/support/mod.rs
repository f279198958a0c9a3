//! What the plugin tests share: the tiny model fixture and directions files made from it, the
//! `cargo xtask bounce` and `render` command lines, and playing an instance through the one CLAP
//! host (`xtask::clap_host`).
#![allow(dead_code)]

#[path = "../../../engine/tests/common/mod.rs"]
pub mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use clap::Parser;
use common::host::{head_direction, head_direction_file};
use common::model_dir;
use directions::DirectionsFile;
use engine::MusicGen;
use xtask::bounce::{BounceArgs, bounce, configure};
use xtask::clap_host::{self, Instance, Playback, TimedEvent, TransportState};
use xtask::render::RenderArgs;

pub const PROMPT: &str = "80s pop with synths";
/// Codebook 0's code the test directions point at.
pub const TARGET: usize = 1234;

#[derive(Parser)]
pub struct BounceCli {
    #[command(flatten)]
    pub args: BounceArgs,
}

#[derive(Parser)]
pub struct RenderCli {
    #[command(flatten)]
    pub args: RenderArgs,
}

pub fn tiny_dir() -> String {
    model_dir("musicgen-tiny").display().to_string()
}

pub fn tiny() -> &'static Arc<MusicGen> {
    static MODEL: OnceLock<Arc<MusicGen>> = OnceLock::new();
    MODEL.get_or_init(|| {
        Arc::new(MusicGen::load(&model_dir("musicgen-tiny"), &common::device()).unwrap())
    })
}

pub use common::temp_dir;

/// A one-class directions file toward codebook 0's code `code`.
pub fn head_file(dir: &Path, code: usize) -> PathBuf {
    head_direction_file(tiny(), code, &dir.join(format!("head{code}.safetensors")))
}

/// A 12-class "notes" directions file: class p points toward code TARGET + p.
pub fn notes_file(dir: &Path) -> PathBuf {
    let mut file: DirectionsFile = head_direction(tiny(), TARGET);
    file.concept = "notes".into();
    file.classes = [
        "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B",
    ]
    .map(String::from)
    .to_vec();
    file.directions = (0..12)
        .map(|p| head_direction(tiny(), TARGET + p).directions.remove(0))
        .collect();
    file.scores = vec![file.scores[0].clone(); 12];
    let path = dir.join("notes.safetensors");
    file.write(&path).unwrap();
    path
}

pub fn bounce_args(cli: &[&str]) -> BounceArgs {
    let plugin = clap_host::test_plugin().display().to_string();
    let model = tiny_dir();
    // `bounce()` returns the samples; `--out` is for the CLI's `run`.
    let mut argv = vec![
        "bounce",
        "--plugin",
        &plugin,
        "--prompt",
        PROMPT,
        "--out",
        "unused.wav",
    ];
    if !cli.contains(&"--model") {
        argv.extend_from_slice(&["--model", &model]);
    }
    argv.extend_from_slice(cli);
    BounceCli::try_parse_from(argv).unwrap().args
}

pub fn bounced(cli: &[&str]) -> Vec<f32> {
    bounce(&bounce_args(cli), &[]).unwrap().samples
}

pub fn bits(samples: &[f32]) -> Vec<u32> {
    samples.iter().map(|x| x.to_bits()).collect()
}

/// An instance of the plugin configured as `cli` would configure a bounce.
pub fn configured(cli: &[&str]) -> Instance {
    let (entry, id) = clap_host::load_entry(&clap_host::test_plugin()).unwrap();
    let mut instance = clap_host::instantiate(&entry, &id).unwrap();
    configure(&mut instance, &bounce_args(cli)).unwrap();
    // The entry must outlive the instance: leak it (one per test process and configuration).
    std::mem::forget(entry);
    instance
}

/// Play `instance` offline in blocks of `block` for `samples`, with `events` and `transport`.
pub fn play(
    instance: &mut Instance,
    rate: f64,
    samples: usize,
    block: usize,
    events: &[TimedEvent],
    transport: Option<&dyn Fn(u64) -> TransportState>,
) -> (Vec<f32>, u32) {
    clap_host::set_offline(instance).unwrap();
    let blocks = vec![block; samples.div_ceil(block)];
    let played = Playback {
        sample_rate: rate,
        blocks: &blocks,
        events,
        transport,
        offline_after_activation: false,
        ..Default::default()
    }
    .run(instance)
    .unwrap();
    (played.channels[0][..samples].to_vec(), played.latency)
}

/// A transport that plays `first` samples from song sample `from`, looping every `loop_len`,
/// stops for `pause` samples, then plays on from song sample `resume`.
pub fn play_stop_play(
    from: u64,
    loop_len: u64,
    first: u64,
    pause: u64,
    resume: u64,
) -> impl Fn(u64) -> TransportState {
    move |t| {
        if t < first {
            TransportState {
                playing: true,
                position: from + t % loop_len,
            }
        } else if t < first + pause {
            TransportState {
                playing: false,
                position: from,
            }
        } else {
            TransportState {
                playing: true,
                position: resume + (t - first - pause),
            }
        }
    }
}
