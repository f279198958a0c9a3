//! Greedy generation reproduces the reference's codes exactly, for every prompt, with and
//! without classifier-free guidance, over the whole sequence (48 steps → 45 frames).

mod common;

use common::*;
use engine::{Generation, GenerationOptions, MusicGen, NoHook, Sampling};

#[test]
fn greedy_codes_match_reference() {
    for model in MODELS {
        let musicgen = MusicGen::load(&model_dir(model), &device()).unwrap();
        let reference = Reference::open(model);
        for p in 0..3 {
            for guidance in [3.0f32, 1.0] {
                let key = format!("prompt{p}.greedy_g{guidance}");
                let (expected, shape) = reference.i64(&format!("{key}.codes"));
                let options = GenerationOptions {
                    steps: Some(48),
                    guidance,
                    sampling: Sampling::Greedy,
                    ..GenerationOptions::default()
                };
                let mut generation =
                    Generation::new(&musicgen, &prompt_text(model, p), options).unwrap();
                let mut completed = Vec::new();
                for _ in 0..48 {
                    if let Some(f) = generation.step(&mut NoHook).unwrap().completed_frame {
                        completed.push(f);
                    }
                }
                let generated = generation.codes();
                assert_eq!(generated.shape().to_vec(), shape, "{model} {key}: shape");
                let codes = generated.data;
                assert_eq!(
                    completed,
                    (0..45).collect::<Vec<_>>(),
                    "{model} {key}: frames complete in order"
                );
                if codes != expected {
                    let first = codes
                        .iter()
                        .zip(&expected)
                        .position(|(a, b)| a != b)
                        .unwrap();
                    let (margins, _) = reference.f32(&format!("{key}.margins"));
                    let (c, f) = (first / shape[1], first % shape[1]);
                    panic!(
                        "{model} {key}: first differing code at codebook {c}, frame {f} (step {}); reference margin there {}",
                        f + c,
                        margins[(f + c) * 4 + c]
                    );
                }
                assert_eq!(
                    generation.frame(0).unwrap(),
                    (0..4).map(|c| expected[c * 45] as u32).collect::<Vec<_>>()
                );
            }
        }
    }
}
