//! Past the window the stream re-prompts with its last frames and goes on: after several slides
//! the codes equal an offline run doing the same re-prompting with `Generation` directly, the
//! codec stream stays continuous (the audio is the one-shot decode of all the codes) and
//! nothing is NaN.

mod common;

use std::sync::Arc;

use common::host::*;
use common::*;
use engine::render::decode_audio;
use engine::stream::{Clock, ControlFrame, EngineConfig, GenerationSettings};
use engine::{Codes, Generation, GenerationOptions, MusicGen, NoHook};

const WINDOW: usize = 24;
const KEEP: usize = 12;
const PROMPT: &str = "slow ambient pads";

/// Window after window: each generation runs its window; the next continues its last KEEP
/// complete frames on the global clock. Frame-major frames, per codebook rows at the end.
fn offline(model: &MusicGen, settings: GenerationSettings, frames: usize) -> Vec<Vec<i64>> {
    let options = GenerationOptions {
        steps: None,
        window: WINDOW,
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
            generation.step(&mut NoHook).unwrap();
        }
        let codes = generation.codes();
        let known = rows[0].len() - base;
        for (c, row) in rows.iter_mut().enumerate() {
            row.extend_from_slice(&codes.data[c * codes.frames + known..(c + 1) * codes.frames]);
        }
        if rows[0].len() >= frames {
            return rows;
        }
        let first = codes.frames - KEEP;
        let prefix = Codes {
            data: (0..k)
                .flat_map(|c| codes.data[c * codes.frames + first..(c + 1) * codes.frames].to_vec())
                .collect(),
            codebooks: k,
            frames: KEEP,
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
    let settings = GenerationSettings {
        seed: 3,
        ..GenerationSettings::default()
    };
    let config = EngineConfig {
        sample_rate: 32_000,
        clock: Clock::Timeline,
        window: WINDOW,
        reprompt_frames: KEEP,
        ..EngineConfig::default()
    };
    let (handle, mut endpoint) = start(&model, config, PROMPT, settings, None);
    let latency = latency(&endpoint);
    // 70 steps: the first slide at step 24, then one every 24 − 12 − 3 = 9 steps.
    let steps = 70;
    let out = bounce(
        &mut endpoint,
        32_000,
        steps,
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
    let expected = offline(&model, settings, codes.frames);
    for (c, row) in expected.iter().enumerate() {
        let got = &codes.data[c * codes.frames..(c + 1) * codes.frames];
        assert_eq!(got, &row[..codes.frames], "codebook {c}");
    }
    let whole = decode_audio(&model, &codes).unwrap();
    let err = max_abs_err(&out[latency..], &whole[..out.len() - latency]);
    assert!(err <= 1e-5, "codec stream across slides: max abs err {err}");
    assert!(handle.last_error().is_empty(), "{}", handle.last_error());
}
