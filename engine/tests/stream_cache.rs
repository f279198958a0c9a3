//! The timeline cache: playing a section again with the same automation replays the recorded
//! audio, identical sample for sample, without decoder steps; automation changed from step s
//! replays up to s and continues exactly as a fresh stream with the new automation would; a
//! changed slot makes the recording stale. Pre-generated while stopped, a section plays at once
//! and goes on from where the pre-generation got to, without running a step twice.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::host::*;
use common::*;
use engine::stream::{
    AudioEndpoint, Clock, ControlFrame, EngineConfig, EngineHandle, GenerationSettings,
    SlotDirection,
};
use engine::{MusicGen, Sampling};

const PROMPT: &str = "dub techno";
const STEPS: u64 = 90;

fn config() -> EngineConfig {
    EngineConfig {
        sample_rate: 44_100,
        clock: Clock::Timeline,
        window: 48,
        reprompt_frames: 20,
        ..EngineConfig::default()
    }
}

/// Seek to the origin and wait until the new stream runs there.
fn replay_from_start(handle: &EngineHandle, endpoint: &AudioEndpoint) {
    let runs_before = endpoint.status();
    handle.seek(0).unwrap();
    for _ in 0..WAIT.as_millis() {
        let status = endpoint.status();
        if status.running && status.step == 0 && status != runs_before {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("the seek did not take: {:?}", endpoint.status());
}

#[test]
fn unchanged_automation_replays_without_steps_and_changed_automation_continues_exactly() {
    let model = Arc::new(MusicGen::load(&model_dir("musicgen-tiny"), &device()).unwrap());
    let scratch = temp_dir("cache");
    let path = head_direction_file(&model, 321, &scratch.path().join("head.safetensors"));
    let slot = SlotDirection {
        file: path.clone(),
        class: "0".into(),
        layers: None,
        gate: 0.5,
    };
    let settings = GenerationSettings {
        sampling: Sampling::MUSICGEN_DEFAULT,
        guidance: 3.0,
        seed: 9,
    };
    let first = |s: u64| {
        let mut frame = ControlFrame::silent(s);
        frame.slots[0] = 3.0 * (s as f32 * 0.2).sin();
        frame
    };
    let edited = |s: u64| {
        let mut frame = first(s);
        if s >= 40 {
            frame.slots[0] = 6.0; // an automation point at step 40
        }
        frame
    };
    let (handle, mut endpoint) = start(&model, config(), PROMPT, settings, Some(slot.clone()));
    let latency = latency(&endpoint);
    let samples = latency + 70 * 882;
    let blocks = [441, 1024, 97];
    let a = bounce(&mut endpoint, 44_100, STEPS, samples, &blocks, first);
    // The bounce pushed the controls of the steps that start before its last sample.
    let pushed = (samples as u64 - 1) / 882 + 1;
    settle(&endpoint, pushed);
    let steps = endpoint.status().steps_done;
    assert!(steps >= 70, "{steps} decoder steps");

    replay_from_start(&handle, &endpoint);
    let b = bounce(&mut endpoint, 44_100, STEPS, samples, &[512], first);
    settle(&endpoint, pushed);
    let status = endpoint.status();
    assert!(a == b, "the replay is not the recorded audio");
    assert_eq!(status.steps_done, steps, "the replay ran no decoder step");
    assert!(
        status.cached_steps >= 70,
        "{} steps replayed",
        status.cached_steps
    );

    replay_from_start(&handle, &endpoint);
    let c = bounce(&mut endpoint, 44_100, STEPS, samples, &[256], edited);
    assert!(
        endpoint.status().steps_done > steps,
        "the edited part is generated"
    );
    let (fresh, mut fresh_endpoint) = start(&model, config(), PROMPT, settings, Some(slot.clone()));
    latency_of(&fresh_endpoint, latency);
    let d = bounce(&mut fresh_endpoint, 44_100, STEPS, samples, &[256], edited);
    assert!(c == d, "replayed up to step 40, then not the fresh stream");
    assert!(a != c, "the automation point does not change the music");
    // The point's step is heard a latency after its start, the codec's look-ahead before it:
    // everything up to the latency (12 steps) before it is the first pass's audio.
    let before = latency + ((40 - 12) * 44_100usize).div_ceil(50);
    assert!(a[..before] == c[..before], "audio before the point changed");
    assert!(handle.last_error().is_empty(), "{}", handle.last_error());
    drop(fresh);

    // Another directions file in the slot: the recording is stale and is not replayed.
    let cached = endpoint.status().cached_steps;
    let other = head_direction_file(&model, 99, &scratch.path().join("other.safetensors"));
    handle
        .set_slot(
            0,
            Some(SlotDirection {
                file: other,
                ..slot
            }),
        )
        .unwrap();
    replay_from_start(&handle, &endpoint);
    let e = bounce(&mut endpoint, 44_100, STEPS, samples, &[512], edited);
    assert_eq!(endpoint.status().cached_steps, cached, "nothing replayed");
    assert!(c != e, "another direction, the same music");
}

#[test]
fn a_section_pregenerated_while_stopped_plays_at_once_and_goes_on() {
    let model = Arc::new(MusicGen::load(&model_dir("musicgen-tiny"), &device()).unwrap());
    let scratch = temp_dir("pregen");
    let path = head_direction_file(&model, 222, &scratch.path().join("head.safetensors"));
    let slot = SlotDirection {
        file: path,
        class: "0".into(),
        layers: None,
        gate: 1.0,
    };
    let settings = GenerationSettings {
        sampling: Sampling::MUSICGEN_DEFAULT,
        guidance: 3.0,
        seed: 4,
    };
    // The automation as it stands: a shape the plugin computes per step from its parameters.
    let automation = |s: u64| {
        let mut frame = ControlFrame::silent(s);
        frame.slots[0] = 2.0 + (s as f32 * 0.1).cos();
        frame
    };
    let (handle, mut endpoint) = start(&model, config(), PROMPT, settings, Some(slot.clone()));
    let latency = latency(&endpoint);
    let ahead = 60;
    handle.pregenerate(0, ahead, automation).unwrap();
    for _ in 0..WAIT.as_millis() {
        if endpoint.status().steps_done >= ahead {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let generated = endpoint.status().steps_done;
    // Play from the start: the first 60 steps are replayed, the session goes on from there.
    replay_from_start(&handle, &endpoint);
    let samples = latency + 100 * 882;
    let played = bounce(&mut endpoint, 44_100, 200, samples, &[512], automation);
    let pushed = (samples as u64 - 1) / 882 + 1;
    settle(&endpoint, pushed);
    let status = endpoint.status();
    assert_eq!(
        status.cached_steps, ahead,
        "the pre-generated steps are replayed"
    );
    assert_eq!(
        status.steps_done - generated,
        pushed - ahead,
        "only the steps past the pre-generation run, none twice"
    );
    let (_fresh, mut fresh_endpoint) = start(&model, config(), PROMPT, settings, Some(slot));
    latency_of(&fresh_endpoint, latency);
    let expected = bounce(
        &mut fresh_endpoint,
        44_100,
        200,
        samples,
        &[512],
        automation,
    );
    assert!(
        played == expected,
        "not the audio a stream played from the start makes"
    );
    assert!(handle.last_error().is_empty(), "{}", handle.last_error());
}

/// Wait until the stream has run its steps up to `step`.
fn settle(endpoint: &AudioEndpoint, step: u64) {
    for _ in 0..WAIT.as_millis() {
        if endpoint.status().step >= step {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("stuck at step {}", endpoint.status().step);
}

fn latency_of(endpoint: &AudioEndpoint, expected: usize) {
    assert_eq!(latency(endpoint), expected);
}
