//! Each reduced weight format against f32 on both tiny fixture models: teacher-forced logits
//! (max abs error and per-position cosine) and greedy codes over the fixtures' 48 steps, with
//! and without guidance. Tolerances (the measured values are printed by `--nocapture`):
//! bf16 logits ≤ 0.05 max abs, cosine ≥ 0.9999; q8 logits ≤ 0.1 max abs, cosine ≥ 0.9995;
//! greedy codes agree with f32 on ≥ 95 % (bf16) / 90 % (q8) of all codes.

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use engine::{
    Generation, GenerationOptions, LoadOptions, MusicGen, NoHook, Sampling, WeightFormat,
};

const PROMPTS: usize = 3;
const STEPS: usize = 48;

fn load(model: &str, format: WeightFormat) -> MusicGen {
    let options = LoadOptions {
        weight_format: format,
    };
    MusicGen::load_with(&model_dir(model), &device(), options).expect("load fixture model")
}

struct Tolerance {
    format: WeightFormat,
    max_abs: f32,
    min_cosine: f64,
    min_code_agreement: f64,
}

const REDUCED: [Tolerance; 2] = [
    Tolerance {
        format: WeightFormat::Bf16,
        max_abs: 0.05,
        min_cosine: 0.9999,
        min_code_agreement: 0.95,
    },
    Tolerance {
        format: WeightFormat::Q8,
        max_abs: 0.1,
        min_cosine: 0.9995,
        min_code_agreement: 0.90,
    },
];

fn teacher_forced_logits(musicgen: &MusicGen, model: &str, p: usize) -> Vec<f32> {
    let reference = Reference::open(model);
    let (ids, shape) = reference.i64("teacher_forced.input_ids");
    let tokens = Tensor::<3, Int>::from_data(
        TensorData::new([ids.clone(), ids].concat(), [2, shape[0], shape[1]]),
        &device(),
    );
    let condition = musicgen.condition(&prompt_text(model, p), true).unwrap();
    to_vec(
        musicgen
            .decoder
            .forward(tokens, Some(&condition.cross), &mut NoHook),
    )
}

fn greedy_codes(musicgen: &MusicGen, prompt: &str, guidance: f32) -> Vec<i64> {
    let options = GenerationOptions {
        steps: Some(STEPS),
        guidance,
        sampling: Sampling::Greedy,
        ..GenerationOptions::default()
    };
    let mut generation = Generation::new(musicgen, prompt, options).unwrap();
    for _ in 0..STEPS {
        generation.step(&mut NoHook).unwrap();
    }
    generation.codes().data
}

#[test]
fn reduced_formats_keep_logits_close_to_f32() {
    for model in MODELS {
        let f32_model = load(model, WeightFormat::F32);
        let vocab = f32_model.config.decoder.vocab_size;
        let expected: Vec<Vec<f32>> = (0..PROMPTS)
            .map(|p| teacher_forced_logits(&f32_model, model, p))
            .collect();
        for tolerance in &REDUCED {
            let format = tolerance.format;
            let reduced = load(model, format);
            for (p, expected) in expected.iter().enumerate() {
                let logits = teacher_forced_logits(&reduced, model, p);
                let err = max_abs_err(&logits, expected);
                let cos = min_row_cosine(&logits, expected, vocab);
                println!(
                    "{model} {format} prompt {p}: logits max abs err {err:.2e}, min cosine {cos:.7}"
                );
                assert!(err > 0.0, "{model} {format}: the weights were reduced");
                assert!(
                    err <= tolerance.max_abs,
                    "{model} {format} prompt {p}: logits max abs err {err}"
                );
                assert!(
                    cos >= tolerance.min_cosine,
                    "{model} {format} prompt {p}: logits min cosine {cos}"
                );
            }
        }
    }
}

#[test]
fn reduced_formats_mostly_pick_the_f32_greedy_codes() {
    for model in MODELS {
        let f32_model = load(model, WeightFormat::F32);
        let prompts: Vec<String> = (0..PROMPTS).map(|p| prompt_text(model, p)).collect();
        let runs = |musicgen: &MusicGen| -> Vec<Vec<i64>> {
            prompts
                .iter()
                .flat_map(|prompt| [3.0, 1.0].map(|g| greedy_codes(musicgen, prompt, g)))
                .collect()
        };
        let expected = runs(&f32_model);
        for tolerance in &REDUCED {
            let format = tolerance.format;
            let got = runs(&load(model, format));
            let (same, total) = got
                .iter()
                .zip(&expected)
                .flat_map(|(a, b)| a.iter().zip(b))
                .fold((0usize, 0usize), |(s, t), (a, b)| {
                    (s + usize::from(a == b), t + 1)
                });
            let agreement = same as f64 / total as f64;
            println!(
                "{model} {format}: {same} of {total} greedy codes as f32 ({:.1} %)",
                100.0 * agreement
            );
            assert!(
                agreement >= tolerance.min_code_agreement,
                "{model} {format}: greedy codes agree with f32 on {:.1} %",
                100.0 * agreement
            );
        }
    }
}
