//! The built plugin plays: bounced headless through the one CLAP host (`xtask::clap_host`, the
//! host behind `cargo xtask bounce`) on the tiny model fixture, it equals `render` with the same
//! model, prompt, seed, sampling and steering; it is identical whatever the block sizes; an
//! automation point acts from the step the timeline puts it on and on nothing before; its
//! latency is the engine's; a host that switches to offline without re-activating still gets
//! the exact bounce; the `context` parameter sets the model's window.
//!
//! The plugin file is `$MUSICRFM_CLAP` (`cargo xtask test` sets it to the release bundle), or
//! else the `libmusicrfm.so` beside this test binary's profile directory.

mod support;

use clap::Parser;
use engine::stream::{Engine, EngineConfig, GenerationSettings, ModelSource};
use support::common::host::latency;
use support::common::max_abs_err;
use support::*;
use xtask::bounce::bounce;
use xtask::clap_host::{
    self, HostEvent, Playback, TimedEvent, clap_param_id, clap_value, engine_counter,
};

#[test]
fn bounce_equals_render_for_greedy_and_seeded_top_k() {
    let scratch = temp_dir("render");
    let dir = scratch.path();
    let file = head_file(dir, TARGET);
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
            // The plugin's `weights` parameter is `auto`: q8 on the CPU.
            "--dtype",
            "q8",
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
    let scratch = temp_dir("blocks");
    let dir = scratch.path();
    let file = head_file(dir, TARGET);
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

/// The bounce of the automation test: slot 1 = `slot`, gate 1, `extra` flags.
fn kick_args(rate: u32, slot: &str, extra: &[&str]) -> xtask::bounce::BounceArgs {
    let rate_text = rate.to_string();
    let mut cli = vec![
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
    ];
    cli.extend_from_slice(extra);
    bounce_args(&cli)
}

/// Bounce with slot 1's strength 0 until sample `at`, 2 from there (gate 1).
fn kicked_at(rate: u32, at: Option<u64>, slot: &str) -> Vec<f32> {
    let args = kick_args(rate, slot, &[]);
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
    let scratch = temp_dir("automation");
    let dir = scratch.path();
    let file = head_file(dir, TARGET);
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
        // The same point as a CSV lane of `cargo xtask bounce --automation`.
        let lane = dir.join(format!("lane{rate}.csv"));
        let x = start(s) as f64 / rate as f64;
        let before = (start(s) - 1) as f64 / rate as f64;
        std::fs::write(&lane, format!("seconds,value\n0,0\n{before},0\n{x},2\n")).unwrap();
        let automation = format!("slot1-strength={}", lane.display());
        let from_csv = bounce(&kick_args(rate, &slot, &["--automation", &automation]), &[])
            .unwrap()
            .samples;
        assert_eq!(bits(&from_csv), bits(&latest), "{rate} Hz: the CSV lane");
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
fn a_host_that_switches_to_offline_without_reactivating_gets_the_exact_bounce() {
    let scratch = temp_dir("switch");
    let dir = scratch.path();
    let slot = format!("1={}:0", head_file(dir, TARGET).display());
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
        ..Default::default()
    }
    .run(&mut switched)
    .unwrap();
    assert!(expected.iter().any(|&x| x.abs() > 1e-3), "not silence");
    assert_eq!(bits(&played.channels[0][..28_800]), bits(&expected));
}

/// `context` sets the model's window: with 5 s of context the window slides within 7 s of
/// audio, which plays on through the slide; with the default 30 s it does not slide.
#[test]
fn the_context_parameter_sets_the_window() {
    let seconds = 7;
    for (set, slides) in [(None, false), (Some("context=5"), true)] {
        let mut cli = vec!["--seconds", "7"];
        cli.extend(set.map(|set| ["--set", set]).into_iter().flatten());
        let mut instance = configured(&cli);
        let samples = seconds * 48_000;
        let (out, _) = play(&mut instance, 48_000.0, samples, 512, &[], None);
        let tail = &out[samples - 48_000..];
        assert!(
            tail.iter().any(|&v| v != 0.0),
            "{set:?}: the last second plays"
        );
        // The engine link thread publishes the counters every few milliseconds.
        let mut slid = 0;
        for _ in 0..100 {
            slid = engine_counter(&mut instance, "slides").unwrap();
            if slid > 0 || !slides {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(slid > 0, slides, "{set:?}: {slid} slides");
    }
}
