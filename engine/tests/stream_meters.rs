//! Live concept meters: a slot whose directions file has a multiclass probe beside it (as
//! `train-probes` writes them) publishes that probe's class probabilities on the mean of the
//! last 100 steps' hidden states at the probe's block, every 10 steps; a slot without one has
//! no meter. The published scores equal the probe evaluated on an offline run's hidden states.

mod common;

use std::sync::Arc;
use std::time::Duration;

use burn::tensor::Tensor;
use common::host::*;
use common::*;
use directions::faer::Mat;
use engine::stream::{Clock, ControlFrame, EngineConfig, GenerationSettings, SlotDirection};
use engine::{CaptureBlocks, Generation, GenerationOptions, MusicGen, Sampling};

const PROMPT: &str = "jazz trio";
const BLOCK: usize = 1;
const STEPS: u64 = 160;

#[test]
fn a_slot_with_a_probe_beside_its_file_is_metered_on_the_stream() {
    let model = Arc::new(MusicGen::load(&model_dir("musicgen-tiny"), &device()).unwrap());
    let scratch = temp_dir("meters");
    let dir = scratch.path();
    let metered = head_direction_file(&model, 55, &dir.join("chords.safetensors"));
    let plain = head_direction_file(&model, 66, &dir.join("plain.safetensors"));
    let probe = common::host::test_probe(model.decoder.d_model(), 0);
    probe.save(&dir.join("chords.probe.safetensors")).unwrap();
    let report = format!(
        r#"{{"concept": "test", "probe": {{"file": "chords.probe.safetensors", "block": {BLOCK}, "kind": "multiclass"}}}}"#
    );
    std::fs::write(dir.join("chords.report.json"), report).unwrap();

    let settings = GenerationSettings {
        sampling: Sampling::Greedy,
        guidance: 3.0,
        seed: 0,
    };
    let config = EngineConfig {
        sample_rate: 32_000,
        clock: Clock::Timeline,
        window: 256,
        reprompt_frames: 64,
        ..EngineConfig::default()
    };
    let slot = |file: &std::path::Path| SlotDirection {
        file: file.to_owned(),
        class: "0".into(),
        layers: None,
        gate: 1.0,
    };
    let (handle, mut endpoint) = start(&model, config, PROMPT, settings, Some(slot(&metered)));
    handle.set_slot(1, Some(slot(&plain))).unwrap();
    let latency = latency(&endpoint);
    // Strength 0: the steered hidden states are the unsteered ones, which an offline run gives.
    // Popping STEPS steps' worth of samples pushes the controls of exactly STEPS steps.
    let samples = STEPS as usize * 640;
    assert!(latency > 0);
    bounce(
        &mut endpoint,
        32_000,
        STEPS,
        samples,
        &[512],
        ControlFrame::silent,
    );
    for _ in 0..WAIT.as_millis() {
        if endpoint.status().step == STEPS {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(endpoint.status().step, STEPS);
    assert!(handle.last_error().is_empty(), "{}", handle.last_error());
    assert_eq!(
        handle.meter(1),
        None,
        "no probe beside plain.safetensors: no meter"
    );
    let (scores, updates) = handle.meter(0).expect("slot 0 is metered");
    assert_eq!(updates, STEPS / 10, "one publication every 10 steps");
    assert_eq!(scores.len(), 3);
    let total: f32 = scores.iter().sum();
    assert!((total - 1.0).abs() < 1e-4, "probabilities sum to {total}");

    // Offline: the same steps, block BLOCK's conditional row of the last 100 positions.
    let options = GenerationOptions {
        steps: None,
        window: 256,
        guidance: settings.guidance,
        sampling: settings.sampling,
        seed: settings.seed,
    };
    let mut generation = Generation::new(&model, PROMPT, options).unwrap();
    let mut rows: Vec<Tensor<1>> = Vec::new();
    let d = model.decoder.d_model();
    for _ in 0..STEPS {
        let mut capture = CaptureBlocks::default();
        generation.step(&mut capture).unwrap();
        let hidden = capture.outputs.swap_remove(BLOCK);
        rows.push(hidden.slice([0..1, 0..1, 0..d]).reshape([d]));
    }
    let last: Vec<Tensor<1>> = rows[rows.len() - 100..].to_vec();
    let mean = to_vec(Tensor::stack::<2>(last, 0).mean_dim(0));
    let z = Mat::<f32>::from_fn(1, d, |_, j| mean[j]);
    let expected = probe.predict_proba(z.as_ref()).unwrap().remove(0);
    for (c, (got, want)) in scores.iter().zip(&expected).enumerate() {
        assert!(
            (*got as f64 - want).abs() < 1e-4,
            "class {c}: meter {got}, offline {want}"
        );
    }
    assert!(
        expected.iter().any(|&p| (p - 1.0 / 3.0).abs() > 1e-3),
        "the probe discriminates: {expected:?}"
    );
}
