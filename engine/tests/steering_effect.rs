//! Sign and site: a large strength along the direction an LM head reads for one code makes the
//! model emit that code, the opposite sign does not; and a vector is added to the output of the
//! block named (checked against the reference's block outputs), not to its input, not before
//! block 0 and not after the final norm.

mod common;

use std::path::Path;

use burn::tensor::{Int, Tensor, TensorData};
use common::host::head_direction;
use common::*;
use directions::DirectionsFile;
use engine::steering::{LayerWeights, Schedule, SteeringPlan};
use engine::{
    BlockHook, CaptureBlocks, Generation, GenerationOptions, LoadOptions, MusicGen, Sampling,
    WeightFormat,
};

const TARGET: usize = 1234;
const STEPS: usize = 40;

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

/// In every weight format: steering acts on the activations, which stay f32.
#[test]
fn a_head_direction_raises_its_code_and_the_sign_matters() {
    for format in WeightFormat::ALL {
        let options = LoadOptions {
            weight_format: format,
        };
        let model = MusicGen::load_with(&model_dir("musicgen-tiny"), &device(), options).unwrap();
        let file = head_direction(&model, TARGET);
        let last = model.decoder.num_blocks() - 1;
        let frames = STEPS - 3;
        let baseline = count(&model, &file, 0.0, &[last]);
        let pushed = count(&model, &file, 40.0, &[last]);
        let pulled = count(&model, &file, -40.0, &[last]);
        println!(
            "{format}: code {TARGET} in codebook 0: unsteered {baseline}, +40 → {pushed}, −40 → {pulled} of {frames} frames"
        );
        assert!(
            baseline <= frames / 4,
            "{format}: the target code is not already dominant ({baseline})"
        );
        assert!(
            pushed >= frames * 9 / 10,
            "{format}: a positive strength makes it dominate ({pushed}/{frames})"
        );
        assert_eq!(
            pulled, 0,
            "{format}: a negative strength never makes it appear"
        );
    }
}

/// Adds `vector` to block `block`'s output and records what every block handed the hook.
struct AddAt {
    block: usize,
    vector: Tensor<3>,
    seen: Vec<Tensor<3>>,
}

impl BlockHook for AddAt {
    fn after_block(&mut self, block: usize, hidden: Tensor<3>) -> Tensor<3> {
        self.seen.push(hidden.clone());
        if block == self.block {
            hidden + self.vector.clone()
        } else {
            hidden
        }
    }
}

#[test]
fn a_vector_is_added_to_the_output_of_the_block_named() {
    let model_name = "musicgen-tiny";
    let model = MusicGen::load(&model_dir(model_name), &device()).unwrap();
    let reference = Reference::open(model_name);
    let d = model.decoder.d_model();
    let last = model.decoder.num_blocks() - 1;
    let condition = model.condition(&prompt_text(model_name, 0), true).unwrap();
    let (ids, shape) = reference.i64("teacher_forced.input_ids");
    let tokens = || {
        let rows: Vec<i64> = ids.iter().chain(&ids).copied().collect();
        Tensor::<3, Int>::from_data(TensorData::new(rows, [2, shape[0], shape[1]]), &device())
    };
    // A fixed vector of norm 4, comparable to a block output's.
    let values: Vec<f32> = (0..d).map(|i| (i as f32 * 1.7).sin()).collect();
    let norm = values.iter().map(|x| x * x).sum::<f32>().sqrt();
    let values: Vec<f32> = values.iter().map(|x| 4.0 * x / norm).collect();
    let vector = Tensor::<1>::from_data(TensorData::new(values, [d]), &device()).reshape([1, 1, d]);

    let mut plain = CaptureBlocks::default();
    let unsteered = model
        .decoder
        .forward(tokens(), Some(&condition.cross), &mut plain);
    let unsteered_logits = to_vec(unsteered.clone());
    let block_ref = |b: usize| reference.f32(&format!("prompt0.teacher_forced.block{b}")).0;

    for block in [0, last] {
        let mut hook = (
            AddAt {
                block,
                vector: vector.clone(),
                seen: Vec::new(),
            },
            CaptureBlocks::default(),
        );
        let steered = model
            .decoder
            .forward(tokens(), Some(&condition.cross), &mut hook);
        let (add, after) = hook;
        // The hook at `block` is handed that block's output: the reference's, untouched by the
        // addition (a hook called before the block would see its input instead).
        let err = max_abs_err(&to_vec(add.seen[block].clone()), &block_ref(block));
        assert!(
            err <= 1e-3,
            "block {block}: the hook sees the block output ({err})"
        );
        // What flows on is that output plus the vector.
        let expected = to_vec(plain.outputs[block].clone() + vector.clone());
        let err = max_abs_err(&to_vec(after.outputs[block].clone()), &expected);
        assert!(
            err <= 1e-5,
            "block {block}: output + vector flows on ({err})"
        );
        let steered = to_vec(steered);
        let moved = max_abs_err(&steered, &unsteered_logits);
        assert!(moved > 0.1, "block {block}: the logits move ({moved})");
        if block == 0 {
            // Block 1 sees block 0's steered output.
            let moved = max_abs_err(&to_vec(add.seen[1].clone()), &block_ref(1));
            assert!(moved > 0.1, "block 1 sees the steered block 0 ({moved})");
        } else {
            // Added before the final norm: exactly the norm and heads of the steered output.
            let expected = to_vec(
                model
                    .decoder
                    .logits(plain.outputs[last].clone() + vector.clone()),
            );
            let err = max_abs_err(&steered, &expected);
            assert!(
                err <= 1e-4,
                "last block: norm and heads of output + vector ({err})"
            );
            // Added after the final norm, the heads would read the vector unnormalised.
            let after_norm = after_final_norm(&model, unsteered.clone(), &vector);
            let apart = max_abs_err(&steered, &after_norm);
            assert!(
                apart > 0.1,
                "steering is not applied after the final norm ({apart})"
            );
        }
    }
}

/// The logits had `vector` been added after the final norm: each head's logits plus the head
/// applied to the vector.
fn after_final_norm(model: &MusicGen, logits: Tensor<4>, vector: &Tensor<3>) -> Vec<f32> {
    let [_, codebooks, _, vocab] = logits.dims();
    let d = model.decoder.d_model();
    let per_codebook: Vec<Tensor<4>> = (0..codebooks)
        .map(|k| {
            let head = model.decoder.lm_head_weight(k); // [d, vocab]
            vector
                .clone()
                .reshape([1, d])
                .matmul(head)
                .reshape([1, 1, 1, vocab])
        })
        .collect();
    to_vec(logits + Tensor::cat(per_codebook, 1))
}
