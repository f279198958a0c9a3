//! The built plugin plays: bounced headless through the one CLAP host (`xtask::clap_host`, the
//! host behind `cargo xtask bounce`) on the tiny model fixture, it equals `render` with the same
//! model, prompt, seed, sampling and steering; it is identical whatever the block sizes; an
//! automation point or a MIDI note acts from the step the timeline puts it on and on nothing
//! before; its latency is the engine's; its state round-trips; transport stops, loops and
//! starts anywhere; bad inputs give silence and the host lives.
//!
//! The plugin file is `$MUSICRFM_CLAP` (`cargo xtask test` sets it to the release bundle), or
//! else the `libmusicrfm.so` beside this test binary's profile directory.

#[path = "../../engine/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use clap::Parser;
use common::host::{head_direction, head_direction_file, latency};
use common::{max_abs_err, model_dir};
use directions::DirectionsFile;
use engine::MusicGen;
use engine::stream::{Engine, EngineConfig, GenerationSettings, ModelSource};
use xtask::bounce::{BounceArgs, bounce, configure};
use xtask::clap_host::{
    self, HostEvent, Instance, Playback, TimedEvent, TransportState, clap_param_id, clap_value,
};
use xtask::render::RenderArgs;

const PROMPT: &str = "80s pop with synths";
/// Codebook 0's code the test directions point at.
const TARGET: usize = 1234;

#[derive(Parser)]
struct BounceCli {
    #[command(flatten)]
    args: BounceArgs,
}

#[derive(Parser)]
struct RenderCli {
    #[command(flatten)]
    args: RenderArgs,
}

fn tiny_dir() -> String {
    model_dir("musicgen-tiny").display().to_string()
}

fn tiny() -> &'static Arc<MusicGen> {
    static MODEL: OnceLock<Arc<MusicGen>> = OnceLock::new();
    MODEL.get_or_init(|| {
        Arc::new(MusicGen::load(&model_dir("musicgen-tiny"), &common::device()).unwrap())
    })
}

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("musicrfm-plays-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A one-class directions file toward codebook 0's code `code`.
fn head_file(dir: &Path, code: usize) -> PathBuf {
    head_direction_file(tiny(), code, &dir.join(format!("head{code}.safetensors")))
}

/// A 12-class "notes" directions file: class p points toward code TARGET + p.
fn notes_file(dir: &Path) -> PathBuf {
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

fn bounce_args(cli: &[&str]) -> BounceArgs {
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

fn bounced(cli: &[&str]) -> Vec<f32> {
    bounce(&bounce_args(cli), &[]).unwrap().samples
}

fn bits(samples: &[f32]) -> Vec<u32> {
    samples.iter().map(|x| x.to_bits()).collect()
}

/// An instance of the plugin configured as `cli` would configure a bounce.
fn configured(cli: &[&str]) -> Instance {
    let (entry, id) = clap_host::load_entry(&clap_host::test_plugin()).unwrap();
    let mut instance = clap_host::instantiate(&entry, &id).unwrap();
    configure(&mut instance, &bounce_args(cli)).unwrap();
    // The entry must outlive the instance: leak it (one per test process and configuration).
    std::mem::forget(entry);
    instance
}

/// Play `instance` offline in blocks of `block` for `samples`, with `events` and `transport`.
fn play(
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
    }
    .run(instance)
    .unwrap();
    (played.channels[0][..samples].to_vec(), played.latency)
}

#[test]
fn bounce_equals_render_for_greedy_and_seeded_top_k() {
    let dir = temp_dir("render");
    let file = head_file(&dir, TARGET);
    let slot = format!("1={}:code{TARGET}", file.display());
    let steer = format!("{}:code{TARGET}=1.5@rise:0:10", file.display());
    let steps = 28; // 25 frames: 0.5 s
    for (set, sampling) in [
        (&["--set", "top-k=1"][..], &["--greedy"][..]),
        (&[][..], &["--top-k", "250", "--temperature", "1"][..]),
    ] {
        let mut cli = vec![
            "--seconds",
            "0.5",
            "--sample-rate",
            "32000",
            "--seed",
            "7",
            "--slot",
            &slot,
            "--set",
            "slot1-strength=1.5",
            "--set",
            "slot1-shape=rise",
            "--set",
            "slot1-length=0.2",
        ];
        cli.extend_from_slice(set);
        let plugin = bounced(&cli);

        let out = dir.join("render.wav");
        let (model, out_text, steps_text) =
            (tiny_dir(), out.display().to_string(), steps.to_string());
        let mut argv = vec![
            "render",
            "--model",
            &model,
            "--prompt",
            PROMPT,
            "--steps",
            &steps_text,
            "--window",
            "1500",
            "--out",
            &out_text,
            "--seed",
            "7",
            "--guidance",
            "3",
            "--steer",
            &steer,
            "--layers",
            "power:0.95",
            "--gate",
            "0.3",
        ];
        argv.extend_from_slice(sampling);
        xtask::render::run(&RenderCli::try_parse_from(argv).unwrap().args).unwrap();
        let (render, rate) = engine::audio::read_wav_mono(&out).unwrap();
        assert_eq!(rate, 32_000);
        assert_eq!(render.len(), (steps - 3) * 640);

        // The streamed decode equals the one-shot decode but for the frames whose look-ahead
        // is still open at the render's end.
        let settled = (steps - 3 - 7) * 640;
        let err = max_abs_err(&plugin[..settled], &render[..settled]);
        assert!(err <= 1e-4, "{sampling:?}: max abs err {err}");
        assert!(
            render[..settled].iter().any(|&x| x.abs() > 1e-3),
            "{sampling:?}: the render is not silence"
        );
    }
}

#[test]
fn bounces_are_identical_for_any_block_sizes_and_runs() {
    let dir = temp_dir("blocks");
    let file = head_file(&dir, TARGET);
    let slot = format!("1={}:code{TARGET}", file.display());
    let bounce_with = |block: &str| {
        bounced(&[
            "--seconds",
            "0.6",
            "--sample-rate",
            "48000",
            "--seed",
            "3",
            "--slot",
            &slot,
            "--set",
            "slot1-strength=1",
            "--set",
            "slot1-shape=sine",
            "--set",
            "slot1-length=0.3",
            "--block",
            block,
        ])
    };
    let reference = bounce_with("512");
    assert!(reference.iter().any(|&x| x.abs() > 1e-3), "not silence");
    assert_eq!(
        bits(&bounce_with("512")),
        bits(&reference),
        "a second bounce"
    );
    for block in ["64", "4096", "random"] {
        assert_eq!(
            bits(&bounce_with(block)),
            bits(&reference),
            "blocks of {block}"
        );
    }
}

/// Bounce with slot 1's strength 0 until sample `at`, 2 from there (gate 1).
fn kicked_at(rate: u32, at: Option<u64>, slot: &str) -> Vec<f32> {
    let rate_text = rate.to_string();
    let args = bounce_args(&[
        "--seconds",
        "0.5",
        "--sample-rate",
        &rate_text,
        "--seed",
        "5",
        "--slot",
        slot,
        "--set",
        "gate=1",
        "--block",
        "300",
    ]);
    let (entry, id) = clap_host::load_entry(&clap_host::test_plugin()).unwrap();
    let mut instance = clap_host::instantiate(&entry, &id).unwrap();
    let value = clap_value(&mut instance, "slot1-strength", 2.0).unwrap();
    drop(instance);
    let events: Vec<TimedEvent> = at
        .map(|sample| TimedEvent {
            sample,
            event: HostEvent::Param {
                param: clap_param_id("slot1-strength"),
                value,
            },
        })
        .into_iter()
        .collect();
    bounce(&args, &events).unwrap().samples
}

#[test]
fn an_automation_point_changes_its_step_and_nothing_before() {
    let dir = temp_dir("automation");
    let file = head_file(&dir, TARGET);
    let slot = format!("1={}:code{TARGET}", file.display());
    let lookahead = tiny().audio_encoder.streaming_decoder(1).lookahead_frames() as u64;
    for rate in [44_100u32, 48_000] {
        let fs = u64::from(rate);
        let s = 9u64;
        let start = |step: u64| (step * fs).div_ceil(50);
        let plain = kicked_at(rate, None, &slot);
        let earliest = kicked_at(rate, Some(start(s - 1) + 1), &slot);
        let latest = kicked_at(rate, Some(start(s)), &slot);
        let next = kicked_at(rate, Some(start(s) + 1), &slot);
        assert_eq!(
            bits(&earliest),
            bits(&latest),
            "{rate} Hz: points in (start(s-1), start(s)] all drive step {s}"
        );
        assert_ne!(
            bits(&latest),
            bits(&next),
            "{rate} Hz: start(s) + 1 drives step s + 1"
        );
        let first_change = plain
            .iter()
            .zip(&latest)
            .position(|(a, b)| a != b)
            .expect("the kick changes the audio");
        // Step s samples codebook k of frame s - k; the codec reaches `lookahead` frames back.
        let frame = first_change as u64 * 50 / fs;
        assert!(
            frame + 3 + lookahead >= s,
            "{rate} Hz: audio of frame {frame} changed, before step {s} could reach"
        );
    }
}

#[test]
fn reported_latency_is_the_engines() {
    let model = tiny().clone();
    for rate in [32_000u32, 44_100, 48_000] {
        let config = EngineConfig {
            sample_rate: rate,
            ..EngineConfig::default()
        };
        let (handle, endpoint) = Engine::spawn(config).unwrap();
        handle
            .load_model(ModelSource::Loaded(model.clone()))
            .unwrap();
        handle
            .set_generation(GenerationSettings::default())
            .unwrap();
        handle.set_prompt(PROMPT, 0).unwrap();
        let engine_latency = latency(&endpoint);
        let mut instance = configured(&["--seconds", "1"]);
        let (_, reported) = play(&mut instance, f64::from(rate), 1024, 512, &[], None);
        assert_eq!(reported as usize, engine_latency, "{rate} Hz");
        assert!(engine_latency > 0);
    }
}

#[test]
fn state_round_trips_with_eight_slots_and_plays_the_same_after_reload() {
    let dir = temp_dir("state");
    let slots: Vec<String> = (0..8)
        .map(|k| format!("{}={}:0", k + 1, head_file(&dir, TARGET + 10 * k).display()))
        .collect();
    let strengths: Vec<String> = (0..8)
        .map(|k| format!("slot{}-strength={}", k + 1, 0.25 * (k as f64 + 1.0) - 1.0))
        .collect();
    let mut cli = vec!["--seconds", "0.4", "--seed", "9"];
    for (slot, strength) in slots.iter().zip(&strengths) {
        cli.extend_from_slice(&["--slot", slot, "--set", strength]);
    }
    let mut first = configured(&cli);
    let saved = clap_host::save_state(&mut first).unwrap();
    let json = clap_host::state_json(&saved).unwrap();
    let files: serde_json::Value =
        serde_json::from_str(json["fields"]["slots"].as_str().unwrap()).unwrap();
    assert_eq!(
        files
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["file"] != "")
            .count(),
        8,
        "eight filled slots: {files}"
    );

    let (entry, id) = clap_host::load_entry(&clap_host::test_plugin()).unwrap();
    let mut second = clap_host::instantiate(&entry, &id).unwrap();
    clap_host::load_state(&mut second, &saved).unwrap();
    let saved_again = clap_host::save_state(&mut second).unwrap();
    assert_eq!(saved, saved_again, "save → load → save");

    let (before, _) = play(&mut first, 48_000.0, 24_000, 512, &[], None);
    let (after, _) = play(&mut second, 48_000.0, 24_000, 512, &[], None);
    assert!(before.iter().any(|&x| x.abs() > 1e-3), "not silence");
    assert_eq!(bits(&before), bits(&after), "a bounce after reload");
}

#[test]
fn bad_inputs_give_silence_and_the_host_lives() {
    let dir = temp_dir("bad");
    let corrupt = dir.join("corrupt.safetensors");
    std::fs::write(&corrupt, b"not a safetensors file").unwrap();
    let good = head_file(&dir, TARGET);
    let missing_model = dir.join("no-such-model").display().to_string();
    let corrupt_slot = format!("1={}:0", corrupt.display());
    let no_class = format!("1={}:no-such-class", good.display());
    let cases: [(&str, Vec<&str>); 3] = [
        ("missing model", vec!["--model", &missing_model]),
        ("corrupt directions file", vec!["--slot", &corrupt_slot]),
        ("class not in the file", vec!["--slot", &no_class]),
    ];
    for (what, extra) in cases {
        let mut cli = vec!["--seconds", "0.3"];
        cli.extend_from_slice(&extra);
        let out = bounced(&cli);
        assert!(out.iter().all(|&x| x == 0.0), "{what}: silence");
    }
    // A state saved by a newer musicrfm (a larger state format) is not applied.
    let mut instance = configured(&["--seconds", "0.3"]);
    let mut json = clap_host::state_json(&clap_host::save_state(&mut instance).unwrap()).unwrap();
    clap_host::set_field(&mut json, "format", &serde_json::json!(2));
    clap_host::load_state(&mut instance, &clap_host::state_bytes(&json)).unwrap();
    let (out, _) = play(&mut instance, 48_000.0, 14_400, 512, &[], None);
    assert!(out.iter().all(|&x| x == 0.0), "newer state: silence");
    // The host goes on: the same process bounces a good configuration.
    let out = bounced(&["--seconds", "0.3"]);
    assert!(
        out.iter().any(|&x| x.abs() > 1e-3),
        "a good bounce after the bad ones"
    );
}

#[test]
fn a_midi_note_steers_its_class_from_its_step_with_its_velocity() {
    let dir = temp_dir("midi");
    let notes = notes_file(&dir);
    let rate = 48_000u32;
    let at = (11 * u64::from(rate)).div_ceil(50) - 100; // inside step 10: drives step 11
    let common = [
        "--seconds",
        "0.5",
        "--seed",
        "4",
        "--set",
        "gate=1",
        "--block",
        "256",
    ];

    // Slot 1 in MIDI notes mode, strength 2: E (pitch class 4) at velocity 0.75 → η 1.5.
    let mut midi = configured(&common);
    let mut json = clap_host::state_json(&clap_host::save_state(&mut midi).unwrap()).unwrap();
    let mut slots = vec![serde_json::json!({"file": "", "class": ""}); 8];
    slots[0] = serde_json::json!({"file": notes.display().to_string(), "class": "", "midi": true});
    clap_host::set_field(&mut json, "slots", &serde_json::Value::Array(slots));
    clap_host::set_param(&mut json, "slot1-strength", "2").unwrap();
    clap_host::load_state(&mut midi, &clap_host::state_bytes(&json)).unwrap();
    let note = [TimedEvent {
        sample: at,
        event: HostEvent::NoteOn {
            key: 64,
            velocity: 0.75,
        },
    }];
    let (played, _) = play(&mut midi, f64::from(rate), 24_000, 256, &note, None);

    // The same class as a plain slot whose strength an automation point sets to 1.5 there.
    let class = format!("1={}:E", notes.display());
    let mut cli = common.to_vec();
    cli.extend_from_slice(&["--slot", &class]);
    let mut plain = configured(&cli);
    let value = clap_value(&mut plain, "slot1-strength", 1.5).unwrap();
    let point = [TimedEvent {
        sample: at,
        event: HostEvent::Param {
            param: clap_param_id("slot1-strength"),
            value,
        },
    }];
    let (automated, _) = play(&mut plain, f64::from(rate), 24_000, 256, &point, None);
    let (unsteered, _) = play(
        &mut configured(&cli),
        f64::from(rate),
        24_000,
        256,
        &[],
        None,
    );

    assert_eq!(
        bits(&played),
        bits(&automated),
        "the note is the automation point"
    );
    assert_ne!(bits(&played), bits(&unsteered), "the note steers");
}

/// A transport that plays `first` samples from song sample `from`, looping every `loop_len`,
/// stops for `pause` samples, then plays on from song sample `resume`.
fn play_stop_play(
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

#[test]
fn transport_stops_loops_and_starts_anywhere() {
    let rate = 48_000u64;
    let dir = temp_dir("transport");
    let slot = format!("1={}:0", head_file(&dir, TARGET).display());
    let cli = [
        "--seconds",
        "1",
        "--seed",
        "2",
        "--slot",
        &slot,
        "--set",
        "slot1-strength=1",
    ];
    let pass = 19_200u64; // 0.4 s
    let (start, block) = (48_000u64 * 3, 480usize);
    // Play [start, start + pass) twice (a loop), stop for a while, then play from a position
    // inside step 7 (so from step 8 on).
    let jump = (7 * rate).div_ceil(50) + 300;
    let transport = play_stop_play(start, pass, 2 * pass, 4800, start + jump);
    let total = (2 * pass + 4800 + pass) as usize;
    let mut instance = configured(&cli);
    let (out, _) = play(
        &mut instance,
        rate as f64,
        total,
        block,
        &[],
        Some(&transport),
    );
    let pass = pass as usize;
    assert!(
        out[..pass].iter().any(|&x| x.abs() > 1e-3),
        "the first pass plays"
    );
    assert_eq!(
        bits(&out[..pass]),
        bits(&out[pass..2 * pass]),
        "the loop replays"
    );
    assert!(
        out[2 * pass..2 * pass + 4800].iter().all(|&x| x == 0.0),
        "stopped: silence"
    );

    // From the jump: silent until step 8 starts (and then the latency's pre-roll), then the
    // step-8 stream; a start exactly at step 8 gives the same song-aligned audio.
    let resumed = &out[2 * pass + 4800..];
    let step8 = (8 * rate).div_ceil(50) as usize - jump as usize;
    assert!(
        resumed[..step8].iter().all(|&x| x == 0.0),
        "nothing before step 8"
    );
    let aligned = play_stop_play(start, 960, 960, 4800, start + (8 * rate).div_ceil(50));
    let mut other = configured(&cli);
    let (exact, _) = play(
        &mut other,
        rate as f64,
        960 + 4800 + pass,
        block,
        &[],
        Some(&aligned),
    );
    let exact = &exact[960 + 4800..];
    assert!(
        exact.iter().any(|&x| x.abs() > 1e-3),
        "the step-8 stream plays"
    );
    assert_eq!(bits(&resumed[step8..]), bits(&exact[..pass - step8]));
}

#[test]
fn a_host_that_switches_to_offline_without_reactivating_gets_the_exact_bounce() {
    let dir = temp_dir("switch");
    let slot = format!("1={}:0", head_file(&dir, TARGET).display());
    let cli = [
        "--seconds",
        "0.6",
        "--seed",
        "6",
        "--slot",
        &slot,
        "--set",
        "slot1-strength=1",
    ];
    let (expected, _) = play(&mut configured(&cli), 48_000.0, 28_800, 512, &[], None);
    // Activated in real time, then switched with `render.set` only (this host ignores the
    // plugin's restart request, as some DAWs do).
    let mut switched = configured(&cli);
    let blocks = vec![512; 28_800usize.div_ceil(512)];
    let played = Playback {
        sample_rate: 48_000.0,
        blocks: &blocks,
        events: &[],
        transport: None,
        offline_after_activation: true,
    }
    .run(&mut switched)
    .unwrap();
    assert!(expected.iter().any(|&x| x.abs() > 1e-3), "not silence");
    assert_eq!(bits(&played.channels[0][..28_800]), bits(&expected));
}
