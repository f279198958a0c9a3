//! Past the window the stream re-prompts with its last frames and goes on: after several slides
//! the codes equal an offline run doing the same re-prompting with `Generation` directly, the
//! codec stream stays continuous (the audio is the one-shot decode of all the codes) and
//! nothing is NaN. Three minutes of steered streaming: dozens of slides, no NaN, no silent gap,
//! memory flat, and the codes across the first slides equal the offline run's. Prompt changes at
//! every step while windows slide, through the engine and on a session driven directly: the
//! stream slides on and its audio stays whole.

mod common;

use std::sync::Arc;

use common::host::*;
use common::*;
use engine::render::decode_audio;
use engine::steering::{Schedule, SteerArg, SteeringPlan};
use engine::stream::{
    Clock, ControlFrame, EngineConfig, GenerationSettings, Session, SessionOptions, SlotDirection,
    Stepper,
};
use engine::{Codes, GenerateError, Generation, GenerationOptions, MusicGen, StepOutput};

const WINDOW: usize = 24;
const KEEP: usize = 12;
const PROMPT: &str = "slow ambient pads";

/// Window after window: each generation runs its window; the next continues its last `keep`
/// complete frames on the global clock. Every step is steered by `plan` with steer 0's value
/// `external(global step)`. Per codebook rows of the frames.
fn offline(
    model: &MusicGen,
    settings: GenerationSettings,
    (window, keep): (usize, usize),
    frames: usize,
    plan: &mut SteeringPlan,
    external: impl Fn(u64) -> f32,
) -> Vec<Vec<i64>> {
    let options = GenerationOptions {
        steps: None,
        window,
        guidance: settings.guidance,
        sampling: settings.sampling,
        seed: settings.seed,
    };
    let k = model.config.decoder.num_codebooks;
    let mut rows: Vec<Vec<i64>> = vec![Vec::new(); k];
    let mut generation = Generation::new(model, PROMPT, options).unwrap();
    let mut base = 0;
    loop {
        while generation.steps_done() < generation.capacity() {
            if !plan.is_empty() {
                plan.set_external(0, external(generation.global_step() as u64));
            }
            generation.step_steered(plan).unwrap();
        }
        let codes = generation.codes();
        let known = rows[0].len() - base;
        for (c, row) in rows.iter_mut().enumerate() {
            row.extend_from_slice(&codes.data[c * codes.frames + known..(c + 1) * codes.frames]);
        }
        if rows[0].len() >= frames {
            return rows;
        }
        let first = codes.frames - keep;
        let prefix = Codes {
            data: (0..k)
                .flat_map(|c| codes.data[c * codes.frames + first..(c + 1) * codes.frames].to_vec())
                .collect(),
            codebooks: k,
            frames: keep,
        };
        base += first;
        generation = Generation::new(model, PROMPT, options)
            .unwrap()
            .starting_at(base)
            .with_prefix(prefix);
    }
}

#[test]
fn slides_reprompt_like_the_offline_run_and_keep_the_codec_stream_continuous() {
    let model = Arc::new(MusicGen::load(&model_dir("musicgen-tiny"), &device()).unwrap());
    let seed = 3;
    let (handle, codes) = stream_70_steps(&model, seed, |_| {});
    let settings = GenerationSettings {
        seed,
        ..GenerationSettings::default()
    };
    let mut unsteered = SteeringPlan::new(1, 1, 0, &model.device);
    let window = (WINDOW, KEEP);
    let expected = offline(
        &model,
        settings,
        window,
        codes.frames,
        &mut unsteered,
        |_| 0.0,
    );
    for (c, row) in expected.iter().enumerate() {
        let got = &codes.data[c * codes.frames..(c + 1) * codes.frames];
        assert_eq!(got, &row[..codes.frames], "codebook {c}");
    }
    assert!(handle.last_error().is_empty(), "{}", handle.last_error());
}

/// musicgen-tiny streamed for 70 steps (55 frames of audio) in windows of WINDOW re-prompting
/// with KEEP frames, seed `seed`, after `commands`: the first slide at step 24, then one every
/// 24 − 12 − 3 = 9 steps. Checks that the audio is finite and is the one-shot decode of the
/// codes (the codec stream continuous), and returns the handle and the codes.
fn stream_70_steps(
    model: &Arc<MusicGen>,
    seed: u64,
    commands: impl FnOnce(&engine::stream::EngineHandle),
) -> (engine::stream::EngineHandle, Codes) {
    let settings = GenerationSettings {
        seed,
        ..GenerationSettings::default()
    };
    let config = EngineConfig {
        sample_rate: 32_000,
        clock: Clock::Timeline,
        window: WINDOW,
        reprompt_frames: KEEP,
        ..EngineConfig::default()
    };
    let (handle, mut endpoint) = start(model, config, PROMPT, settings, None);
    commands(&handle);
    let latency = latency(&endpoint);
    let out = bounce(
        &mut endpoint,
        32_000,
        70,
        latency + 55 * 640,
        &[777],
        ControlFrame::silent,
    );
    assert!(
        out.iter().all(|x| x.is_finite()),
        "NaN or inf in the stream"
    );
    let codes = handle.codes().unwrap().unwrap();
    assert!(codes.frames >= 60, "{} frames", codes.frames);
    assert!(endpoint.status().slides >= 4, "{:?}", endpoint.status());
    let whole = decode_audio(model, &codes).unwrap();
    let err = max_abs_err(&out[latency..], &whole[..out.len() - latency]);
    assert!(err <= 1e-5, "codec stream across slides: max abs err {err}");
    (handle, codes)
}

/// A prompt change at every step from 20 to 60, while windows slide (re-prompting with half of
/// each window): each change first runs the generation work earlier steps left (a successor's
/// replays, a new window catching up after the swap) with the prompt those steps had. That used
/// to let a successor complete the frame its own successor starts from before it took over, so
/// that the next slide found none ("window 24 leaves no frames to re-prompt with"); now the
/// stream slides on, every change is taken at its step, and the audio is the one-shot decode of
/// the codes.
#[test]
fn prompt_changes_while_sliding_keep_the_codec_stream_continuous() {
    let model = Arc::new(MusicGen::load(&model_dir("musicgen-tiny"), &device()).unwrap());
    let (handle, _) = stream_70_steps(&model, 4, |handle| {
        for step in 20..=60u64 {
            let prompt = if step % 2 == 0 { "fast techno" } else { PROMPT };
            handle.set_prompt(prompt, step).unwrap();
        }
    });
    let times = handle.step_times().unwrap();
    let prompted = times.iter().filter(|t| t.prompt).count();
    assert_eq!(prompted, 41, "every change taken at its step");
    assert!(handle.last_error().is_empty(), "{}", handle.last_error());
}

/// Steps without steering, for a session driven directly.
struct Unsteered(SteeringPlan);

impl Stepper for Unsteered {
    fn step(
        &mut self,
        generation: &mut Generation<'_>,
        _fresh: bool,
    ) -> Result<StepOutput, GenerateError> {
        generation.step_steered(&mut self.0)
    }

    fn step_together(
        &mut self,
        window: &mut Generation<'_>,
        successor: &mut Generation<'_>,
    ) -> Result<(StepOutput, StepOutput), GenerateError> {
        window.step_together(successor, &mut |_, _, hidden| hidden)
    }
}

/// The same prompt changes on a session driven directly, with no idle time (the engine thread
/// runs deferred work while it waits, which can leave a change nothing to run first): the
/// session slides on through them, and its audio (frames decoded beside the steps, those the
/// last step completed waiting through each change) is the one-shot decode of its codes.
#[test]
fn a_session_changing_prompts_while_sliding_slides_on_with_its_audio_whole() {
    let model = MusicGen::load(&model_dir("musicgen-tiny"), &device()).unwrap();
    assert!(
        engine::stream::decodes_beside(&model),
        "the codec runs beside the steps here"
    );
    let options = SessionOptions {
        start_step: 0,
        settings: GenerationSettings {
            seed: 6,
            ..GenerationSettings::default()
        },
        window: WINDOW,
        reprompt_frames: KEEP,
        decode_chunk_frames: 1,
        sample_rate: 32_000,
        cushion_steps: 2,
    };
    let mut session = Session::new(&model, PROMPT, options).unwrap();
    let mut plans = Unsteered(SteeringPlan::new(0, 0, 0, &model.device));
    let mut out = Vec::new();
    for step in 0..70u64 {
        if (20..=60).contains(&step) {
            let prompt = if step % 2 == 0 { "fast techno" } else { PROMPT };
            session.set_prompt(prompt, &mut plans, &mut out).unwrap();
        }
        session.step(&mut plans, &mut out).unwrap();
    }
    assert!(session.slides() >= 4, "{} slides", session.slides());
    let whole = decode_audio(&model, &session.codes()).unwrap();
    assert!(out.len() > 50 * 640, "{} samples", out.len());
    let err = max_abs_err(&out, &whole[..out.len()]);
    assert!(err <= 1e-5, "audio across the changes: max abs err {err}");
}

/// Resident memory of this process in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn three_minutes_of_steered_streaming_slide_on_without_gaps_or_growth() {
    let model = Arc::new(MusicGen::load(&model_dir("musicgen-tiny"), &device()).unwrap());
    let scratch = temp_dir("soak");
    let path = head_direction_file(&model, 777, &scratch.path().join("head.safetensors"));
    let (window, keep) = (500, 200);
    let (gate, seed) = (0.5, 5);
    let settings = GenerationSettings {
        seed,
        ..GenerationSettings::default()
    };
    let config = EngineConfig {
        sample_rate: 48_000,
        clock: Clock::Timeline,
        window,
        reprompt_frames: keep,
        // The timeline cache keeps up to its limit of the stream's audio by design (its own
        // test checks the bound); without it, anything that grows is a leak.
        timeline_cache_seconds: 0,
        ..EngineConfig::default()
    };
    let slot = SlotDirection {
        file: path.clone(),
        class: "0".into(),
        layers: None,
        gate,
    };
    // A slow sine on slot 0: steering goes on across every slide on the timeline's clock.
    let external = |s: u64| 4.0 * (s as f32 * 0.01).sin();
    let control = |s: u64| {
        let mut frame = ControlFrame::silent(s);
        frame.slots[0] = external(s);
        frame
    };
    let (handle, mut endpoint) = start(&model, config, PROMPT, settings, Some(slot));
    let latency = latency(&endpoint);
    let minute = 60 * 48_000;
    let steps = 3 * 60 * 50 + 64;
    let mut rss_after = Vec::new();
    // One buffer for every minute, so the test's own allocations do not count as growth.
    let mut chunk = vec![0.0f32; minute];
    for m in 0..3 {
        // One minute's bounce: the helper pushes the controls of the steps in its range.
        bounce_into(
            &mut endpoint,
            48_000,
            m * 3000,
            steps,
            &mut chunk,
            &[480],
            control,
        );
        assert!(
            chunk.iter().all(|x| x.is_finite()),
            "NaN or inf in minute {m}"
        );
        // No silent gap: every 10 ms after the latency has signal.
        let skip = if m == 0 { latency.div_ceil(480) } else { 0 };
        for (i, block) in chunk.chunks_exact(480).enumerate().skip(skip) {
            assert!(
                block.iter().any(|&x| x != 0.0),
                "silence at {:.2} s",
                (m as usize * minute + i * 480) as f64 / 48_000.0
            );
        }
        rss_after.push(rss());
    }
    let status = handle.status();
    assert!(handle.last_error().is_empty(), "{}", handle.last_error());
    assert!(status.slides >= 5, "{} slides in 3 minutes", status.slides);
    // Memory flat: minute 3 holds no more than minute 1 plus a small allowance for the
    // allocator's slack (measured: 0–1 MB).
    let growth = rss_after[2] as i64 - rss_after[0] as i64;
    eprintln!(
        "rss after minute 1, 2, 3: {:?} MB; {} slides",
        rss_after.iter().map(|b| b / (1 << 20)).collect::<Vec<_>>(),
        status.slides
    );
    assert!(growth < 4 << 20, "resident memory grew by {growth} bytes");
    // The codes across the first slides equal an offline run doing the same re-prompting.
    let codes = handle.codes().unwrap().unwrap();
    let frames = 1500;
    let mut plan = SteeringPlan::new(
        model.decoder.num_blocks(),
        model.decoder.d_model(),
        seed,
        &model.device,
    );
    let arg = SteerArg {
        file: path,
        class: "0".into(),
        strength: 1.0,
        schedule: Schedule::External,
    };
    plan.add_from_file(&arg, None, gate).unwrap();
    let expected = offline(
        &model,
        settings,
        (window, keep),
        frames,
        &mut plan,
        external,
    );
    for (c, row) in expected.iter().enumerate() {
        let got = &codes.data[c * codes.frames..c * codes.frames + frames];
        assert_eq!(got, &row[..frames], "codebook {c}");
    }
}
