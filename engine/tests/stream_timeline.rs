//! Timeline mode at the model rate: a stream driven by the controls a render's schedule
//! computes gives the render's codes exactly and its audio within 1e-5 (but the look-ahead
//! tail), whatever the host's block sizes; a control for step s changes step s and nothing
//! before it; a prompt change at step s conditions step s on, as an offline run re-conditioned
//! there; live mode runs ahead of the controls only up to the latency.

mod common;

use std::sync::Arc;

use common::host::*;
use common::*;
use engine::render::{decode_audio, generate_codes};
use engine::steering::{Schedule, SteerArg, SteeringPlan};
use engine::stream::{
    AudioEndpoint, Clock, ControlFrame, Engine, EngineConfig, EngineHandle, GenerationSettings,
    ModelSource, SlotDirection, default_decode_chunk,
};
use engine::{Codes, GenerationOptions, MusicGen, Sampling};

const PROMPT: &str = "80s pop with synths";
const STEPS: usize = 24;
const TARGET: usize = 1234;

/// The window equals the render's step count: the KV cache's capacity sets the layout burn's
/// attention runs on, so equal capacities make the two bit-identical (a near-tie in a draw can
/// otherwise fall the other way).
fn config(clock: Clock) -> EngineConfig {
    EngineConfig {
        sample_rate: 32_000,
        clock,
        window: STEPS,
        reprompt_frames: 16,
        ..EngineConfig::default()
    }
}

/// A timeline stream with slot 0 set, started; and its latency.
fn timeline(
    model: &Arc<MusicGen>,
    settings: GenerationSettings,
    slot: &SlotDirection,
) -> (EngineHandle, AudioEndpoint, usize) {
    let config = config(Clock::Timeline);
    let (handle, endpoint) = start(model, config, PROMPT, settings, Some(slot.clone()));
    let latency = latency(&endpoint);
    (handle, endpoint, latency)
}

/// musicgen-tiny and a directions file toward code TARGET in a temp dir named for `test` (kept
/// while the returned guard lives).
fn tiny_with_head(test: &str) -> (Arc<MusicGen>, std::path::PathBuf, tempfile::TempDir) {
    let model = Arc::new(MusicGen::load(&model_dir("musicgen-tiny"), &device()).unwrap());
    let scratch = temp_dir(test);
    let path = head_direction_file(&model, TARGET, &scratch.path().join("head.safetensors"));
    (model, path, scratch)
}

/// Frames of codes that follow a frame before its audio is final, at one frame per codec run:
/// the least lag. The engine's runs of two frames on the CPU may hold the audio back a frame
/// longer, so a bounce up to `frames - codec_lookahead` frames of audio waits until at least
/// `frames` frames of codes are made (and so does not depend on how far the engine ran ahead).
fn codec_lookahead(model: &MusicGen) -> usize {
    model.audio_encoder.streaming_decoder(1).lookahead_frames()
}

/// Frames `0..frames` of every codebook.
fn head(codes: &Codes, frames: usize) -> Vec<i64> {
    (0..codes.codebooks)
        .flat_map(|c| codes.data[c * codes.frames..c * codes.frames + frames].to_vec())
        .collect()
}

#[test]
fn stream_reproduces_the_render_for_any_block_sizes() {
    let (model, path, _scratch) = tiny_with_head("timeline");
    let schedule = Schedule::LinearRise { t0: 3, t1: 15 };
    let (eta, gate, seed) = (6.0, 0.5, 11);
    let settings = GenerationSettings {
        sampling: Sampling::MUSICGEN_DEFAULT,
        guidance: 3.0,
        seed,
    };
    let arg = SteerArg {
        file: path.clone(),
        class: "0".into(),
        strength: eta,
        schedule,
    };
    let mut plan = SteeringPlan::new(
        model.decoder.num_blocks(),
        model.decoder.d_model(),
        seed,
        &model.device,
    );
    plan.add_from_file(&arg, None, gate).unwrap();
    // Open-ended over a window of STEPS: a run of known length pads the delay pattern's tail
    // (its last steps are fed pad ids), which a stream that goes on never does.
    let options = GenerationOptions {
        steps: None,
        window: STEPS,
        guidance: settings.guidance,
        sampling: settings.sampling,
        seed,
    };
    let offline = generate_codes(&model, PROMPT, options, &mut plan, |_| {}).unwrap();
    let frames = offline.frames;
    assert_eq!(frames, STEPS - 3);
    let offline_audio = decode_audio(&model, &offline).unwrap();
    let slot = SlotDirection {
        file: path,
        class: "code1234".into(),
        layers: None,
        gate,
    };
    let control = |s: u64| {
        let mut frame = ControlFrame::silent(s);
        frame.slots[0] = schedule.coefficient(eta, s as usize, 0.0);
        frame
    };
    let random: Vec<usize> = (0..97).map(|i| 1 + (i * 7919 + 13) % 1500).collect();
    let patterns: [&[usize]; 5] = [&[1], &[64], &[512], &[4096], &random];
    // Bit for bit the same whatever the blocks: a host that waits in small blocks leaves the
    // engine idle between steps (the codec then decodes in the idle time), a large one keeps it
    // stepping (the codec decodes beside the next step, `engine::stream::decodes_beside`).
    let mut first: Option<Vec<f32>> = None;
    for blocks in patterns {
        let (handle, mut endpoint, latency) = timeline(&model, settings, &slot);
        // The codec's look-ahead is still open at the end: the stream stops at `frames` frames.
        let settled = frames - codec_lookahead(&model);
        let samples = latency + settled * 640;
        let steps = (STEPS + 16) as u64;
        let out = bounce(&mut endpoint, 32_000, steps, samples, blocks, control);
        assert!(
            out[..latency].iter().all(|&x| x == 0.0),
            "pre-roll is silent"
        );
        let codes = handle.codes().unwrap().expect("a stream runs");
        assert!(codes.frames >= frames, "{} frames", codes.frames);
        assert_eq!(
            head(&codes, frames),
            head(&offline, frames),
            "codes, blocks {:?}",
            &blocks[..1]
        );
        let err = max_abs_err(&out[latency..], &offline_audio[..settled * 640]);
        assert!(err <= 1e-5, "blocks {:?}: max abs err {err}", &blocks[..1]);
        match &first {
            None => first = Some(out),
            Some(first) => assert!(
                first
                    .iter()
                    .map(|x| x.to_bits())
                    .eq(out.iter().map(|x| x.to_bits())),
                "blocks {:?}: not the audio of blocks of 1, bit for bit",
                &blocks[..1]
            ),
        }
        assert_eq!(endpoint.status().underruns, 0);
        assert!(handle.last_error().is_empty(), "{}", handle.last_error());
    }
}

#[test]
fn a_control_changes_its_step_and_nothing_before() {
    let (model, path, _scratch) = tiny_with_head("control");
    let settings = GenerationSettings {
        sampling: Sampling::Greedy,
        guidance: 3.0,
        seed: 0,
    };
    let slot = SlotDirection {
        file: path,
        class: "0".into(),
        layers: None,
        gate: 1.0,
    };
    let s = 9u64;
    let run = |kick: f32| {
        let (handle, mut endpoint, latency) = timeline(&model, settings, &slot);
        let control = |step: u64| {
            let mut frame = ControlFrame::silent(step);
            if step == s {
                frame.slots[0] = kick;
            }
            frame
        };
        bounce(
            &mut endpoint,
            32_000,
            30,
            latency + 10 * 640, // 10 frames of audio: 10 + the look-ahead of codes
            &[256],
            control,
        );
        handle.codes().unwrap().unwrap()
    };
    let (plain, kicked) = (run(0.0), run(40.0));
    let frames = plain.frames.min(kicked.frames);
    assert!(frames > s as usize + 3);
    for c in 0..plain.codebooks {
        for f in 0..frames {
            let (a, b) = (
                plain.data[c * plain.frames + f],
                kicked.data[c * kicked.frames + f],
            );
            if f + c < s as usize {
                assert_eq!(a, b, "codebook {c} frame {f}, sampled before step {s}");
            }
        }
    }
    let at = |codes: &Codes| codes.data[s as usize];
    assert_ne!(at(&plain), TARGET as i64);
    assert_eq!(
        at(&kicked),
        TARGET as i64,
        "the kick at step {s} makes codebook 0 emit the target"
    );
}

/// The frames EnCodec waits for to decode them in one run count in the reported latency: the
/// default on the CPU, 2, is one frame (640 samples at the model's rate) more than 1, and 4 three.
#[test]
fn the_codec_frames_per_run_count_in_the_latency() {
    let model = Arc::new(MusicGen::load(&model_dir("musicgen-tiny"), &device()).unwrap());
    assert_eq!(default_decode_chunk(&model), 2, "a model on the CPU");
    let latency_at = |decode_chunk_frames| {
        let config = EngineConfig {
            decode_chunk_frames,
            ..config(Clock::Timeline)
        };
        let settings = GenerationSettings::default();
        let (handle, endpoint) = start(&model, config, PROMPT, settings, None);
        let latency = latency(&endpoint);
        assert!(handle.last_error().is_empty());
        latency
    };
    let one = latency_at(Some(1));
    assert_eq!(latency_at(None), one + 640);
    assert_eq!(latency_at(Some(4)), one + 3 * 640);
}

#[test]
fn live_mode_runs_ahead_only_up_to_the_latency() {
    let model = Arc::new(MusicGen::load(&model_dir("musicgen-tiny"), &device()).unwrap());
    let settings = GenerationSettings::default();
    let (handle, mut endpoint) = start(&model, config(Clock::Live), PROMPT, settings, None);
    let latency = latency(&endpoint);
    // No control was pushed: live mode runs on the held values until the ring holds the latency.
    assert!(endpoint.wait_for(latency, WAIT));
    let status = endpoint.status();
    let bound = latency.div_ceil(640) as u64 + 1;
    assert!(
        status.step <= bound,
        "ran {} steps ahead, bound {bound}",
        status.step
    );
    let mut out = vec![0.0; latency];
    assert_eq!(endpoint.pop(&mut out), latency);
    // Popped: it runs on, again up to the latency.
    assert!(endpoint.wait_for(latency / 2, WAIT));
    assert!(endpoint.status().step > status.step);
    assert!(handle.last_error().is_empty());
}

/// musicgen-tiny sampling with guidance and `seed`.
fn tiny_sampled(seed: u64) -> (Arc<MusicGen>, GenerationSettings) {
    let model = Arc::new(MusicGen::load(&model_dir("musicgen-tiny"), &device()).unwrap());
    let settings = GenerationSettings {
        sampling: Sampling::MUSICGEN_DEFAULT,
        guidance: 3.0,
        seed,
    };
    (model, settings)
}

/// The first `frames` frames `streamed` equal those of an offline run of STEPS steps of
/// PROMPT re-conditioned on `other` before step `at`, which differ from those of the run
/// without the change; returns both offline runs' codes.
fn assert_conditioned_like_offline(
    streamed: &Codes,
    frames: usize,
    (model, settings): (&MusicGen, GenerationSettings),
    at: usize,
    other: &str,
) -> (Codes, Codes) {
    let options = GenerationOptions {
        steps: None,
        window: STEPS,
        guidance: settings.guidance,
        sampling: settings.sampling,
        seed: settings.seed,
    };
    let mut generation = engine::Generation::new(model, PROMPT, options).unwrap();
    let mut plan = SteeringPlan::new(0, 0, 0, &model.device);
    for step in 0..STEPS {
        if step == at {
            generation.set_prompt(other).unwrap();
        }
        generation.step_steered(&mut plan).unwrap();
    }
    let offline = generation.codes();
    let unchanged = generate_codes(model, PROMPT, options, &mut plan, |_| {}).unwrap();
    assert_eq!(head(streamed, frames), head(&offline, frames));
    assert_ne!(
        head(&offline, frames),
        head(&unchanged, frames),
        "the new prompt changes the music"
    );
    (offline, unchanged)
}

/// Bounce STEPS + 16 steps, until the audio of the offline run's complete frames is out (STEPS
/// + 1 − K: the last K − 1 steps leave theirs incomplete): the audio and those frames.
fn bounce_offline_frames(endpoint: &mut AudioEndpoint, model: &MusicGen) -> (Vec<f32>, usize) {
    let latency = latency(endpoint);
    let frames = STEPS + 1 - model.config.decoder.num_codebooks;
    let out = bounce(
        endpoint,
        32_000,
        (STEPS + 16) as u64,
        latency + (frames - codec_lookahead(model)) * 640,
        &[333],
        ControlFrame::silent,
    );
    (out, frames)
}

#[test]
fn a_prompt_change_at_a_step_conditions_that_step_on_like_an_offline_run() {
    let (model, settings) = tiny_sampled(5);
    let (s, other) = (9usize, "slow classical piano");

    // Streamed: the prompt command is queued before any control, so it lands at step s.
    let (handle, mut endpoint) = start(&model, config(Clock::Timeline), PROMPT, settings, None);
    handle.set_prompt(other, s as u64).unwrap();
    let (out, frames) = bounce_offline_frames(&mut endpoint, &model);
    let streamed = handle.codes().unwrap().expect("a stream runs");
    let (offline, unchanged) =
        assert_conditioned_like_offline(&streamed, frames, (&model, settings), s, other);
    // Codes sampled before step s (codebook c of frame f is sampled at step f + c) are the
    // unchanged prompt's.
    for c in 0..offline.codebooks {
        for f in (0..frames).filter(|f| f + c < s) {
            assert_eq!(
                offline.data[c * offline.frames + f],
                unchanged.data[c * unchanged.frames + f],
                "codebook {c} frame {f}"
            );
        }
    }
    assert!(out.iter().all(|x| x.is_finite()));
    assert_eq!(endpoint.status().underruns, 0);
    assert!(handle.last_error().is_empty(), "{}", handle.last_error());
}

/// A prompt for step s sent before the stream has a prompt to start with (no session yet) waits
/// for step s, as one sent while it runs.
#[test]
fn a_prompt_for_a_later_step_sent_before_the_stream_starts_waits_for_its_step() {
    let (model, settings) = tiny_sampled(5);
    let (s, other) = (9usize, "slow classical piano");
    let (handle, mut endpoint) = Engine::spawn(config(Clock::Timeline)).unwrap();
    handle
        .load_model(ModelSource::Loaded(model.clone()))
        .unwrap();
    handle.set_generation(settings).unwrap();
    handle.set_prompt(other, s as u64).unwrap();
    handle.set_prompt(PROMPT, 0).unwrap();
    let (_, frames) = bounce_offline_frames(&mut endpoint, &model);
    let streamed = handle.codes().unwrap().expect("a stream runs");
    assert_conditioned_like_offline(&streamed, frames, (&model, settings), s, other);
    assert!(handle.last_error().is_empty(), "{}", handle.last_error());
}

/// A prompt typed while playing (a command for the steps already due, as the plugin sends it)
/// is encoded beside the steps and taken at the first step after: the stream reports that step,
/// and its codes are those of an offline run re-conditioned there.
#[test]
fn a_prompt_asked_while_playing_conditions_the_step_it_reports_on_like_an_offline_run() {
    let (model, settings) = tiny_sampled(7);
    let other = "slow classical piano";
    let (handle, mut endpoint) = start(&model, config(Clock::Timeline), PROMPT, settings, None);
    let latency = latency(&endpoint);
    let asked_before = 8u64;
    let frames = STEPS - 8;
    let mut out = vec![0.0f32; latency + (frames - codec_lookahead(&model)) * 640];
    let split = engine::stream::offline::step_start(asked_before, 32_000) as usize;
    bounce_into(
        &mut endpoint,
        32_000,
        0,
        asked_before,
        &mut out[..split],
        &[333],
        ControlFrame::silent,
    );
    let asked_at = endpoint.status().step;
    assert_eq!(endpoint.status().prompt_step, 0);
    handle.set_prompt(other, 0).unwrap();
    bounce_into(
        &mut endpoint,
        32_000,
        asked_before,
        (STEPS + 16) as u64,
        &mut out[split..],
        &[333],
        ControlFrame::silent,
    );
    let status = endpoint.status();
    let taken = status.prompt_step as usize;
    assert!(!status.prompt_pending);
    assert!(
        (asked_at as usize..STEPS - 8).contains(&taken),
        "asked at step {asked_at}, taken at {taken}"
    );
    let times = handle.step_times().unwrap();
    assert_eq!(times.iter().filter(|t| t.prompt).count(), 1);
    assert!(times[taken].prompt, "step {taken} took the prompt");

    let streamed = handle.codes().unwrap().expect("a stream runs");
    assert_conditioned_like_offline(&streamed, frames, (&model, settings), taken, other);
    // The codec stream went on unbroken through the change: the audio is the one-shot decode
    // of the codes.
    let whole = decode_audio(&model, &streamed).unwrap();
    let err = max_abs_err(&out[latency..], &whole[..out.len() - latency]);
    assert!(
        err <= 1e-5,
        "audio across the prompt change: max abs err {err}"
    );
    assert!(out.iter().all(|x| x.is_finite()));
    assert!(handle.last_error().is_empty(), "{}", handle.last_error());
}

#[test]
fn a_note_steers_its_pitch_class_from_its_step() {
    let model = Arc::new(MusicGen::load(&model_dir("musicgen-tiny"), &device()).unwrap());
    // A 12-class "notes" file: class p points at codebook 0's head for code 100 + 37 p.
    let target = |p: usize| 100 + 37 * p;
    let mut notes = head_direction(&model, target(0));
    notes.concept = "notes".into();
    notes.classes = (0..12).map(|p| format!("pc{p}")).collect();
    notes.directions = (0..12)
        .map(|p| head_direction(&model, target(p)).directions.remove(0))
        .collect();
    notes.scores = vec![notes.scores[0].clone(); 12];
    let scratch = temp_dir("notes");
    let path = scratch.path().join("notes.safetensors");
    notes.write(&path).unwrap();
    let settings = GenerationSettings {
        sampling: Sampling::Greedy,
        guidance: 3.0,
        seed: 0,
    };
    let spec = SlotDirection {
        file: path,
        class: String::new(),
        layers: None,
        gate: 1.0,
    };
    let s = 7u64;
    let run = |pitch: Option<usize>| {
        let config = config(Clock::Timeline);
        let (handle, mut endpoint) = start(&model, config, PROMPT, settings, None);
        handle.set_notes(Some(spec.clone())).unwrap();
        let latency = latency(&endpoint);
        let control = |step: u64| {
            let mut frame = ControlFrame::silent(step);
            if let Some(p) = pitch.filter(|_| step >= s) {
                frame.notes[p] = 40.0; // held from step s on
            }
            frame
        };
        bounce(
            &mut endpoint,
            32_000,
            30,
            latency + 6 * 640,
            &[200],
            control,
        );
        assert!(handle.last_error().is_empty(), "{}", handle.last_error());
        handle.codes().unwrap().unwrap()
    };
    let plain = run(None);
    for p in [0, 4, 11] {
        let played = run(Some(p));
        // Codebook 0 is sampled at step f for frame f: before s it is the plain stream's.
        let row = |codes: &Codes| codes.data[..codes.frames.min(s as usize + 3)].to_vec();
        let (a, b) = (row(&plain), row(&played));
        assert_eq!(
            a[..s as usize],
            b[..s as usize],
            "pitch class {p}: before step {s}"
        );
        for (f, &code) in b.iter().enumerate().skip(s as usize) {
            assert_eq!(code, target(p) as i64, "pitch class {p}, frame {f}");
        }
        assert_ne!(a[s as usize], target(p) as i64);
    }
}
