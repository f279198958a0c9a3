//! Sign and site: a large strength along the direction an LM head reads for one code makes the
//! model emit that code; the opposite sign does not; steering an early block moves the music
//! less directly than the last block (the addition really happens at the block named).

mod common;

use std::path::Path;

use burn::tensor::Tensor;
use common::*;
use directions::{ConceptKind, DirectionsFile};
use engine::steering::{LayerWeights, Schedule, SteeringPlan};
use engine::{Generation, GenerationOptions, MusicGen, Sampling};

const TARGET: usize = 1234;
const STEPS: usize = 40;

/// The unit vector codebook 0's head reads for `code`, as a one-class directions file.
fn head_direction(model: &MusicGen, code: usize) -> DirectionsFile {
    let d = model.decoder.d_model();
    let n = model.decoder.num_blocks();
    let w: Tensor<2> = model.decoder.lm_head_weight(0); // [d, vocab]
    let column = to_vec(w.slice([0..d, code..code + 1]));
    let norm = column.iter().map(|x| x * x).sum::<f32>().sqrt();
    let unit: Vec<f32> = column.iter().map(|x| x / norm).collect();
    DirectionsFile {
        concept: "code".into(),
        classes: vec![format!("code{code}")],
        kind: ConceptKind::Binary,
        metric: "auc".into(),
        model: "musicgen-tiny".into(),
        d_model: d,
        n_layers_model: n,
        pooling: "mean".into(),
        site: "block_output".into(),
        layers: (0..n as i64).collect(),
        directions: vec![vec![unit; n]],
        scores: vec![vec![1.0; n]],
    }
}

/// How often codebook 0 emits `code` over a greedy run, steered at `blocks` with `strength`.
fn count(model: &MusicGen, file: &DirectionsFile, strength: f32, blocks: &[usize]) -> usize {
    let options = GenerationOptions {
        steps: Some(STEPS),
        guidance: 3.0,
        sampling: Sampling::Greedy,
        ..Default::default()
    };
    let mut generation =
        Generation::new(model, "A relaxing jazz song with piano", options).unwrap();
    let mut plan = SteeringPlan::new(
        model.decoder.num_blocks(),
        model.decoder.d_model(),
        0,
        &model.device,
    );
    if strength != 0.0 {
        plan.add(
            file,
            Path::new("head"),
            0,
            strength,
            Schedule::Constant,
            &LayerWeights::List(blocks.to_vec()),
            1.0,
        )
        .unwrap();
    }
    for _ in 0..STEPS {
        generation.step_steered(&mut plan).unwrap();
    }
    let codes = generation.codes();
    codes.data[..codes.frames]
        .iter()
        .filter(|&&c| c == TARGET as i64)
        .count()
}

#[test]
fn a_head_direction_raises_its_code_and_the_sign_matters() {
    let model = MusicGen::load(&model_dir("musicgen-tiny"), &device()).unwrap();
    let file = head_direction(&model, TARGET);
    let last = model.decoder.num_blocks() - 1;
    let frames = STEPS - 3;
    let baseline = count(&model, &file, 0.0, &[last]);
    let pushed = count(&model, &file, 40.0, &[last]);
    let pulled = count(&model, &file, -40.0, &[last]);
    println!(
        "code {TARGET} in codebook 0: unsteered {baseline}, +40 → {pushed}, −40 → {pulled} of {frames} frames"
    );
    assert!(
        baseline <= frames / 4,
        "the target code is not already dominant ({baseline})"
    );
    assert!(
        pushed >= frames * 9 / 10,
        "a positive strength makes it dominate ({pushed}/{frames})"
    );
    assert_eq!(pulled, 0, "a negative strength never makes it appear");
}
