//! An open-ended generation runs exactly its window and then reports that the window is full —
//! an error the caller can act on (the streaming engine slides), never a panic — and sampling is
//! keyed by (seed, step, codebook), so runs of different lengths agree on their common steps.

mod common;

use common::*;
use engine::{GenerateError, Generation, GenerationOptions, MusicGen, NoHook, Sampling};

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
