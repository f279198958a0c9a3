//! Engines that load the same model directory share one copy of the weights, each with its own
//! stream; the copy is freed with the last engine. (Its own test binary: the registry is
//! process-wide.)

mod common;

use std::sync::Arc;

use common::host::*;
use common::*;
use engine::stream::models::{load_shared, resident};
use engine::stream::{Clock, ControlFrame, Engine, EngineConfig, GenerationSettings, ModelSource};
use engine::{LoadOptions, WeightFormat};

#[test]
fn three_engines_on_one_model_share_its_weights() {
    let dir = model_dir("musicgen-tiny");
    let name = dir.to_string_lossy().into_owned();
    let f32 = LoadOptions::default();
    let a = load_shared(&name, f32).unwrap();
    // The same directory by another spelling is the same model.
    let b = load_shared(&format!("{name}/."), f32).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(resident(), 1);
    // Another weight format is another copy.
    let q8 = LoadOptions {
        weight_format: WeightFormat::Q8,
    };
    let c = load_shared(&name, q8).unwrap();
    assert!(!Arc::ptr_eq(&a, &c));
    assert_eq!(resident(), 2);
    drop((a, b, c));
    assert_eq!(resident(), 0, "freed with its last user");

    let config = EngineConfig {
        sample_rate: 32_000,
        clock: Clock::Timeline,
        window: 64,
        reprompt_frames: 16,
        ..EngineConfig::default()
    };
    let mut outs = Vec::new();
    let mut handles = Vec::new();
    for seed in [1, 2, 3] {
        let (handle, mut endpoint) = Engine::spawn(config.clone()).unwrap();
        handle.load_model(ModelSource::Path(name.clone())).unwrap();
        let settings = GenerationSettings {
            seed,
            ..GenerationSettings::default()
        };
        handle.set_generation(settings).unwrap();
        handle.set_prompt("drums", 0).unwrap();
        let latency = latency(&endpoint);
        let out = bounce(
            &mut endpoint,
            32_000,
            40,
            latency + 20 * 640,
            &[256],
            ControlFrame::silent,
        );
        assert!(handle.last_error().is_empty(), "{}", handle.last_error());
        outs.push(out[latency..].to_vec());
        handles.push((handle, endpoint));
    }
    assert_eq!(resident(), 1, "three engines, one copy of the weights");
    assert_ne!(outs[0], outs[1], "each engine streams its own music");
    assert_ne!(outs[1], outs[2]);
    drop(handles);
    assert_eq!(resident(), 0, "the last engine frees the model");
}
