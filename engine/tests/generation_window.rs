//! An open-ended generation runs exactly its window and then reports that the window is full —
//! an error the caller can act on (the streaming engine slides), never a panic — and sampling is
//! keyed by (seed, step, codebook), so runs of different lengths agree on their common steps.
//! A step whose caller chooses its codes (`step_choosing`) and chooses badly gets an error too,
//! and can be taken again.

mod common;

use burn::tensor::Tensor;
use common::*;
use engine::{
    Codes, GenerateError, Generation, GenerationOptions, LoadOptions, MusicGen, NoHook, Sampling,
    WeightFormat,
};

#[test]
fn open_ended_generation_stops_with_an_error_at_the_window() {
    let model = MusicGen::load(&model_dir("musicgen-tiny"), &device()).unwrap();
    let default = GenerationOptions::default();
    assert_eq!((default.steps, default.window), (None, 1500));
    let options = GenerationOptions {
        window: 12,
        ..default
    };
    let mut generation = Generation::new(&model, "80s pop", options).unwrap();
    assert_eq!(generation.capacity(), 12);
    for step in 0..12 {
        assert_eq!(generation.step(&mut NoHook).unwrap().step, step);
    }
    let err = generation.step(&mut NoHook).unwrap_err();
    assert_eq!(
        err,
        GenerateError::WindowFull {
            step: 12,
            capacity: 12
        }
    );
    assert!(err.to_string().contains("full"), "{err}");
    // Still usable: the codes so far are there, the failed step changed nothing.
    assert_eq!(generation.steps_done(), 12);
    assert_eq!(generation.codes().frames, 12 - 3);
}

#[test]
fn sampled_codes_do_not_depend_on_the_run_length() {
    let model = MusicGen::load(&model_dir("musicgen-tiny"), &device()).unwrap();
    let run = |steps: Option<usize>, seed: u64| {
        let options = GenerationOptions {
            steps,
            window: 20,
            sampling: Sampling::MUSICGEN_DEFAULT,
            seed,
            ..GenerationOptions::default()
        };
        let mut generation = Generation::new(&model, "80s pop", options).unwrap();
        for _ in 0..20 {
            generation.step(&mut NoHook).unwrap();
        }
        (0..16)
            .map(|f| generation.frame(f).unwrap())
            .collect::<Vec<_>>()
    };
    let open = run(None, 5);
    assert_eq!(open, run(None, 5), "same seed, same codes");
    assert_ne!(open, run(None, 6), "the seed matters");
    // A run of known length pads only its own tail, so its first frames are the open run's.
    assert_eq!(run(Some(20), 5)[..16], open[..16]);
}

/// A generation continuing a prefix runs the steps whose codes the prefix fixes without its
/// LM heads (nothing is sampled there), and goes on exactly as the generation that sampled
/// those codes: the same cache, the same keyed draws, the same codes after the prefix. A
/// different prefix changes what follows, so the prefix is what the steps saw.
#[test]
fn a_continued_prefix_goes_on_as_the_generation_that_sampled_it() {
    for weight_format in [WeightFormat::F32, WeightFormat::Q4] {
        let model = MusicGen::load_with(
            &model_dir("musicgen-tiny"),
            &device(),
            LoadOptions { weight_format },
        )
        .unwrap();
        let frames = |g: &Generation| (0..16).map(|f| g.frame(f).unwrap()).collect::<Vec<_>>();
        let sampled = |seed: u64| {
            let mut g = Generation::new(&model, "80s pop", window_of_20(seed)).unwrap();
            for _ in 0..20 {
                g.step(&mut NoHook).unwrap();
            }
            frames(&g)
        };
        let continued = |prefix: &[Vec<u32>]| {
            let codebooks = prefix[0].len();
            let codes = Codes {
                data: (0..codebooks)
                    .flat_map(|c| prefix.iter().map(move |frame| i64::from(frame[c])))
                    .collect(),
                codebooks,
                frames: prefix.len(),
            };
            let mut g = Generation::new(&model, "80s pop", window_of_20(5))
                .unwrap()
                .with_prefix(codes);
            for _ in 0..20 {
                g.step(&mut NoHook).unwrap();
            }
            frames(&g)
        };
        let own = sampled(5);
        assert_eq!(continued(&own[..8]), own, "{weight_format}");
        let other = sampled(6);
        let after_other = continued(&other[..8]);
        assert_eq!(after_other[..8], other[..8], "{weight_format}");
        assert_ne!(
            after_other[8..],
            own[8..],
            "{weight_format}: prefix ignored"
        );
    }
}

/// Two generations stepped together (a window and its successor share each pass through the
/// weights) give what they give stepped in turn, hooks included: the same codes, step after
/// step, with each generation's own cache, prompt, seed and hook.
#[test]
fn generations_stepped_together_equal_generations_stepped_in_turn() {
    for name in MODELS {
        for weight_format in [WeightFormat::F32, WeightFormat::Q8] {
            let model =
                MusicGen::load_with(&model_dir(name), &device(), LoadOptions { weight_format })
                    .unwrap();
            let new = |prompt: &str, seed: u64| {
                Generation::new(&model, prompt, window_of_20(seed)).unwrap()
            };
            // Each generation's residual stream is scaled after its first block, by its own
            // factor (a shift of every value would not matter: the next layer norm removes it).
            let mut hook = |which: usize, block: usize, hidden: Tensor<3>| match (which, block) {
                (0, 0) => hidden.mul_scalar(1.5),
                (1, 0) => hidden.mul_scalar(0.6),
                _ => hidden,
            };
            let frames = |g: &Generation| (0..16).map(|f| g.frame(f).unwrap()).collect::<Vec<_>>();

            let (mut a, mut b) = (new("80s pop", 3), new("lofi piano", 4));
            for _ in 0..20 {
                a.step(&mut Hook(0, &mut hook)).unwrap();
                b.step(&mut Hook(1, &mut hook)).unwrap();
            }
            let (mut a2, mut b2) = (new("80s pop", 3), new("lofi piano", 4));
            for step in 0..20 {
                let (first, second) = a2.step_together(&mut b2, &mut hook).unwrap();
                assert_eq!((first.step, second.step), (step, step));
            }
            assert_eq!(frames(&a2), frames(&a), "{name} {weight_format}: first");
            assert_eq!(frames(&b2), frames(&b), "{name} {weight_format}: second");
            // The hooks act: unhooked, the first generation's codes differ.
            let mut plain = new("80s pop", 3);
            for _ in 0..20 {
                plain.step(&mut NoHook).unwrap();
            }
            assert_ne!(
                frames(&plain),
                frames(&a),
                "{name} {weight_format}: hook ignored"
            );
        }
    }
}

struct Hook<'h, F>(usize, &'h mut F);

impl<F: FnMut(usize, usize, Tensor<3>) -> Tensor<3> + Send> engine::BlockHook for Hook<'_, F> {
    fn after_block(&mut self, block: usize, hidden: Tensor<3>) -> Tensor<3> {
        (self.1)(self.0, block, hidden)
    }
}

/// Sampled (MusicGen's defaults) with `seed`, in a window of 20 steps.
fn window_of_20(seed: u64) -> GenerationOptions {
    GenerationOptions {
        window: 20,
        sampling: Sampling::MUSICGEN_DEFAULT,
        seed,
        ..GenerationOptions::default()
    }
}

/// A choice that is not one code per codebook below the vocabulary size is an error naming
/// the step, and leaves the generation as it was: the step taken again with a good choice gives
/// what a run without the bad one gives.
#[test]
fn a_bad_choice_is_an_error_and_the_step_can_be_taken_again() {
    let model = MusicGen::load(&model_dir("musicgen-tiny"), &device()).unwrap();
    let vocab = model.config.decoder.vocab_size;
    let options = GenerationOptions {
        steps: Some(10),
        sampling: Sampling::Greedy,
        ..GenerationOptions::default()
    };
    let argmax = |logits: &[f32]| -> Vec<u32> {
        logits.chunks(vocab).map(engine::sampling::argmax).collect()
    };
    let mut clean = Generation::new(&model, "80s pop", options).unwrap();
    let mut retried = Generation::new(&model, "80s pop", options).unwrap();
    for step in 0..10 {
        clean.step_choosing(&mut |l| argmax(l)).unwrap();
        if step == 4 {
            for bad in [vec![1, 2, 3], vec![0, 0, vocab as u32, 0]] {
                let err = retried.step_choosing(&mut |_| bad.clone()).unwrap_err();
                assert!(
                    matches!(err, GenerateError::InvalidChoice { step: 4, .. }),
                    "{err}"
                );
                assert!(err.to_string().contains("step 4"), "{err}");
                assert_eq!(retried.steps_done(), 4);
            }
        }
        retried.step_choosing(&mut |l| argmax(l)).unwrap();
    }
    assert_eq!(retried.codes(), clean.codes());
}
