//! Parity of the tokenizer, T5, the text projection and the decoder LM with the reference
//! (transformers), on both tiny fixture models. Tolerances: T5 and projected
//! states ≤ 1e-4 max abs; decoder logits and block outputs ≤ 1e-3 max abs with per-position
//! cosine ≥ 0.99999.

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use engine::{CaptureBlocks, MusicGen, NoHook};

const PROMPTS: usize = 3;

fn load(model: &str) -> MusicGen {
    MusicGen::load(&model_dir(model), &device()).expect("load fixture model")
}

fn teacher_forced_tokens(reference: &Reference, rows: usize) -> Tensor<3, Int> {
    let (ids, shape) = reference.i64("teacher_forced.input_ids");
    let (codebooks, steps) = (shape[0], shape[1]);
    let mut all = Vec::with_capacity(rows * ids.len());
    for _ in 0..rows {
        all.extend_from_slice(&ids);
    }
    Tensor::from_data(TensorData::new(all, [rows, codebooks, steps]), &device())
}

#[test]
fn tokenizer_t5_and_projection_match_reference() {
    for model in MODELS {
        let musicgen = load(model);
        let reference = Reference::open(model);
        for p in 0..PROMPTS {
            let (expected_ids, _) = reference.i64(&format!("prompt{p}.input_ids"));
            let prompt = prompt_text(model, p);
            let ids = musicgen.tokenize(&prompt).unwrap();
            let ids: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
            assert_eq!(ids, expected_ids, "{model} prompt {p}: tokenizer ids");

            let (t5_ref, _) = reference.f32(&format!("prompt{p}.t5_last_hidden_state"));
            let t5 = to_vec(musicgen.encode_text(&musicgen.tokenize(&prompt).unwrap()));
            let err = max_abs_err(&t5, &t5_ref);
            assert!(err <= 1e-4, "{model} prompt {p}: T5 max abs err {err}");

            let (proj_ref, _) = reference.f32(&format!("prompt{p}.encoder_hidden_states"));
            let condition = musicgen.condition(&prompt, true).unwrap();
            let states = to_vec(condition.encoder_states.clone());
            let n = proj_ref.len();
            let err = max_abs_err(&states[..n], &proj_ref);
            assert!(
                err <= 1e-4,
                "{model} prompt {p}: projected states max abs err {err}"
            );
            assert!(
                states[n..].iter().all(|&x| x == 0.0),
                "{model} prompt {p}: the unconditional row is exactly zero"
            );
        }
    }
}

#[test]
fn teacher_forced_logits_and_blocks_match_reference() {
    for model in MODELS {
        let musicgen = load(model);
        let reference = Reference::open(model);
        let d = musicgen.decoder.d_model();
        let vocab = musicgen.config.decoder.vocab_size;
        for p in 0..PROMPTS {
            let condition = musicgen.condition(&prompt_text(model, p), true).unwrap();
            let tokens = teacher_forced_tokens(&reference, 2);
            let mut capture = CaptureBlocks::default();
            let logits = musicgen
                .decoder
                .forward(tokens, Some(&condition.cross), &mut capture);
            let (logits_ref, _) = reference.f32(&format!("prompt{p}.teacher_forced.logits"));
            let logits = to_vec(logits);
            let err = max_abs_err(&logits, &logits_ref);
            let cos = min_row_cosine(&logits, &logits_ref, vocab);
            println!("{model} prompt {p}: logits max abs err {err:.2e}, min cosine {cos:.8}");
            assert!(err <= 1e-3, "{model} prompt {p}: logits max abs err {err}");
            assert!(
                cos >= 0.99999,
                "{model} prompt {p}: logits min cosine {cos}"
            );

            assert_eq!(capture.outputs.len(), musicgen.decoder.num_blocks());
            for (b, block) in capture.outputs.into_iter().enumerate() {
                let (block_ref, _) = reference.f32(&format!("prompt{p}.teacher_forced.block{b}"));
                let block = to_vec(block);
                let err = max_abs_err(&block, &block_ref);
                let cos = min_row_cosine(&block, &block_ref, d);
                assert!(
                    err <= 1e-3,
                    "{model} prompt {p} block {b}: max abs err {err}"
                );
                assert!(
                    cos >= 0.99999,
                    "{model} prompt {p} block {b}: min cosine {cos}"
                );
            }
        }
    }
}

#[test]
fn cached_steps_equal_full_recompute() {
    for model in MODELS {
        let musicgen = load(model);
        let reference = Reference::open(model);
        let condition = musicgen.condition(&prompt_text(model, 0), true).unwrap();
        let tokens = teacher_forced_tokens(&reference, 2);
        let [rows, codebooks, steps] = tokens.dims();
        let full = to_vec(musicgen.decoder.forward(
            tokens.clone(),
            Some(&condition.cross),
            &mut NoHook,
        ));

        // One position per call, then a prefill of 5 positions followed by single steps.
        for prefill in [1usize, 5] {
            let mut cache = musicgen.decoder.new_cache(rows, steps);
            let mut stepped = vec![Vec::new(); rows * codebooks];
            let mut start = 0;
            while start < steps {
                let len = if start == 0 { prefill } else { 1 };
                let chunk = tokens
                    .clone()
                    .slice([0..rows, 0..codebooks, start..start + len]);
                let logits = musicgen.decoder.forward_cached(
                    chunk,
                    &mut cache,
                    Some(&condition.cross),
                    &mut NoHook,
                );
                let logits = to_vec(logits);
                let per_row = logits.len() / (rows * codebooks);
                for (i, row) in logits.chunks(per_row).enumerate() {
                    stepped[i].extend_from_slice(row);
                }
                start += len;
            }
            let stepped: Vec<f32> = stepped.concat();
            let err = max_abs_err(&stepped, &full);
            assert!(
                err <= 1e-4,
                "{model} prefill {prefill}: cached vs full max abs err {err}"
            );
        }
    }
}

#[test]
fn extraction_protocol_matches_reference() {
    for model in MODELS {
        let musicgen = load(model);
        let reference = Reference::open(model);
        let (codes, shape) = reference.i64("extract.codes");
        let tokens = Tensor::<3, Int>::from_data(
            TensorData::new(codes, [shape[0], shape[1], shape[2]]),
            &device(),
        );
        let mut capture = CaptureBlocks::default();
        musicgen.decoder.hidden(tokens, None, &mut capture);
        for (b, block) in capture.outputs.into_iter().enumerate() {
            let pooled = to_vec(block.mean_dim(1));
            let (pooled_ref, _) = reference.f32(&format!("extract.block{b}.mean"));
            let err = max_abs_err(&pooled, &pooled_ref);
            assert!(
                err <= 1e-4,
                "{model} block {b}: mean-pooled max abs err {err}"
            );
        }
    }
}
