//! At host rates other than the model's, the stream is the offline resampling
//! (`engine::audio::resample`) of the model-rate stream, bit for bit, after a pre-roll that
//! counts the resampler's delay; and the output does not depend on the host's block sizes.

mod common;

use std::sync::Arc;

use common::host::*;
use common::*;
use engine::MusicGen;
use engine::audio::resample;
use engine::stream::{Clock, ControlFrame, EngineConfig, GenerationSettings};

const STEPS: u64 = 30;
const FRAMES: usize = 12;

fn run(model: &Arc<MusicGen>, rate: u32, blocks: &[usize]) -> (Vec<f32>, usize) {
    let config = EngineConfig {
        sample_rate: rate,
        clock: Clock::Timeline,
        window: 64,
        reprompt_frames: 16,
        ..EngineConfig::default()
    };
    let settings = GenerationSettings::default();
    let (_handle, mut endpoint) = start(model, config, "techno", settings, None);
    let latency = latency(&endpoint);
    let samples = latency + (FRAMES as u64 * u64::from(rate)).div_ceil(50) as usize;
    let out = bounce(
        &mut endpoint,
        rate,
        STEPS,
        samples,
        blocks,
        ControlFrame::silent,
    );
    (out, latency)
}

#[test]
fn resampled_streams_are_block_size_independent_and_equal_offline_resampling() {
    let model = Arc::new(MusicGen::load(&model_dir("musicgen-tiny"), &device()).unwrap());
    let (model_rate, base_latency) = run(&model, 32_000, &[640]);
    let model_audio = &model_rate[base_latency..];
    let random: Vec<usize> = (0..61).map(|i| 1 + (i * 104_729 + 7) % 2000).collect();
    let patterns: [&[usize]; 4] = [&[1], &[64], &[4096], &random];
    for rate in [32_000u32, 44_100, 48_000] {
        let mut first: Option<Vec<u32>> = None;
        for blocks in patterns {
            let (out, latency) = run(&model, rate, blocks);
            let bits: Vec<u32> = out.iter().map(|x| x.to_bits()).collect();
            match &first {
                None => first = Some(bits),
                Some(first) => assert!(*first == bits, "{rate} Hz, blocks {:?}", &blocks[..1]),
            }
            // The host-rate stream is the offline resampling of the model-rate stream.
            let offline = resample(model_audio, 32_000, rate).unwrap();
            let n = out.len() - latency;
            let settled = n.min(offline.len() - 64);
            assert!(
                out[latency..latency + settled] == offline[..settled],
                "{rate} Hz vs offline"
            );
            assert!(
                latency >= base_latency * rate as usize / 32_000,
                "{rate} Hz latency {latency}"
            );
        }
    }
}
