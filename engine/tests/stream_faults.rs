//! Faults never stop the audio side: a failed model load, a bad directions file and a panic in
//! a step show up in the status (code and message) while the endpoint outputs silence and the
//! engine takes the next command; an underrun outputs silence, is counted and does not shift
//! the timeline; dropping the handle stops the thread.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::host::*;
use common::*;
use engine::MusicGen;
use engine::stream::{
    AudioEndpoint, Clock, ControlFrame, Engine, EngineConfig, ErrorCode, GenerationSettings,
    ModelSource, SlotDirection,
};

fn config(clock: Clock) -> EngineConfig {
    EngineConfig {
        sample_rate: 32_000,
        clock,
        window: 64,
        reprompt_frames: 16,
        ..EngineConfig::default()
    }
}

fn wait_error(endpoint: &AudioEndpoint, code: ErrorCode) {
    for _ in 0..WAIT.as_millis() {
        if endpoint.status().error == code {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("no {code:?}: {:?}", endpoint.status());
}

#[test]
fn faults_are_reported_and_the_engine_goes_on() {
    let model = Arc::new(MusicGen::load(&model_dir("musicgen-tiny"), &device()).unwrap());
    let (handle, mut endpoint) = Engine::spawn(config(Clock::Live)).unwrap();
    handle.set_prompt("techno", 0).unwrap();
    handle
        .load_model(ModelSource::Path("/nonexistent/musicgen-dir".into()))
        .unwrap();
    wait_error(&endpoint, ErrorCode::ModelLoad);
    assert!(
        handle.last_error().contains("/nonexistent/musicgen-dir"),
        "{}",
        handle.last_error()
    );
    let mut block = [1.0f32; 256];
    assert_eq!(endpoint.pop(&mut block), 0);
    assert!(
        block.iter().all(|&x| x == 0.0),
        "silence while nothing runs"
    );
    assert_eq!(endpoint.status().underruns, 0, "no stream, no underrun");

    // The next command works.
    handle
        .load_model(ModelSource::Loaded(model.clone()))
        .unwrap();
    latency(&endpoint);
    assert!(endpoint.wait_for(640, WAIT));

    // A bad directions file: reported, the stream keeps running.
    let scratch = temp_dir("faults");
    let bad = SlotDirection {
        file: scratch.path().join("missing.safetensors"),
        class: "0".into(),
        layers: None,
        gate: 1.0,
    };
    handle.set_slot(0, Some(bad)).unwrap();
    wait_error(&endpoint, ErrorCode::Directions);
    assert!(
        handle.last_error().contains("missing.safetensors"),
        "{}",
        handle.last_error()
    );
    assert!(endpoint.status().running);
    let before = endpoint.status().step;
    // Live mode holds at most the latency's worth: pop all of it, then only new steps give more.
    let mut big = vec![0.0f32; endpoint.status().latency_samples as usize];
    endpoint.pop(&mut big);
    assert!(endpoint.wait_for(640, WAIT));
    assert!(endpoint.status().step > before, "still stepping");

    // A panic inside a step: reported, silence, and a seek starts a new stream.
    handle.inject_step_panic().unwrap();
    endpoint.pop(&mut big);
    wait_error(&endpoint, ErrorCode::Step);
    assert!(
        handle.last_error().contains("panicked"),
        "{}",
        handle.last_error()
    );
    assert!(!endpoint.status().running);
    let underruns = endpoint.status().underruns;
    endpoint.pop(&mut block);
    assert!(block.iter().all(|&x| x == 0.0));
    assert_eq!(
        endpoint.status().underruns,
        underruns,
        "a stopped stream does not underrun"
    );
    handle.seek(0).unwrap();
    latency(&endpoint);
    assert!(endpoint.wait_for(640, WAIT));

    drop(handle);
    assert!(endpoint.engine_stopped());
    endpoint.pop(&mut block);
}

#[test]
fn an_underrun_outputs_silence_and_keeps_the_timeline() {
    let model = Arc::new(MusicGen::load(&model_dir("musicgen-tiny"), &device()).unwrap());
    let settings = GenerationSettings::default();
    let clean = {
        let (_handle, mut endpoint) =
            start(&model, config(Clock::Timeline), "jazz", settings, None);
        let latency = latency(&endpoint);
        bounce(
            &mut endpoint,
            32_000,
            40,
            latency + 20 * 640,
            &[320],
            ControlFrame::silent,
        )
    };
    let (_handle, mut endpoint) = start(&model, config(Clock::Timeline), "jazz", settings, None);
    let latency = latency(&endpoint);
    let mut out = vec![0.0f32; latency + 20 * 640];
    // The first block pops past the pre-roll before any control was pushed: an underrun.
    let gap = latency + 1280;
    assert!(endpoint.wait_for(latency, WAIT));
    assert_eq!(endpoint.pop(&mut out[..gap]), latency);
    assert_eq!(endpoint.status().underruns, 1);
    let (mut t, mut next) = (gap, 0u64);
    while t < out.len() {
        let n = 320.min(out.len() - t);
        while next < 40 && next * 640 < (t + n) as u64 {
            assert!(endpoint.push_control(ControlFrame::silent(next)));
            next += 1;
        }
        assert!(endpoint.wait_for(n, WAIT));
        assert_eq!(endpoint.pop(&mut out[t..t + n]), n);
        t += n;
    }
    assert!(
        out[latency..gap].iter().all(|&x| x == 0.0),
        "the gap is silence"
    );
    assert!(
        out[gap..] == clean[gap..],
        "the audio after the gap is where it would have been"
    );
    assert_eq!(endpoint.status().underruns, 1);
}
