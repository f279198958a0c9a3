//! The streaming EnCodec decoder gives the one-shot decode's audio: fed one frame at a time or
//! in chunks, every frame but the last `lookahead_frames()` is emitted as it becomes final and
//! matches `render::decode_audio` of the whole sequence within 1e-5; `finish` emits the rest,
//! also matching, and nothing is emitted twice.

mod common;

use common::*;
use engine::render::decode_audio;
use engine::{Codes, MusicGen};

const FRAMES: usize = 60;

/// Deterministic codes over the whole codebook, frame-major.
fn codes(codebooks: usize, seed: u64) -> Vec<u32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..FRAMES * codebooks)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 2048) as u32
        })
        .collect()
}

fn one_shot(model: &MusicGen, frame_major: &[u32], codebooks: usize) -> Vec<f32> {
    let frames = frame_major.len() / codebooks;
    let mut data = vec![0i64; frame_major.len()];
    for f in 0..frames {
        for c in 0..codebooks {
            data[c * frames + f] = i64::from(frame_major[f * codebooks + c]);
        }
    }
    decode_audio(
        model,
        &Codes {
            data,
            codebooks,
            frames,
        },
    )
    .unwrap()
}

#[test]
fn streamed_audio_equals_the_one_shot_decode_but_the_look_ahead_tail() {
    for name in MODELS {
        let model = MusicGen::load(&model_dir(name), &device()).unwrap();
        let codec = &model.audio_encoder;
        let k = codec.num_quantizers();
        let hop = codec.hop_length();
        let codes = codes(k, 7);
        let whole = one_shot(&model, &codes, k);
        assert_eq!(whole.len(), FRAMES * hop);
        for (piece, chunk_frames) in [(1, 1), (7, 1), (1, 3), (7, 4)] {
            let mut stream = codec.streaming_decoder(chunk_frames);
            let lookahead = stream.lookahead_frames();
            assert!(lookahead > 3, "{name}: look-ahead {lookahead}");
            let mut audio = Vec::new();
            for (i, frames) in codes.chunks(piece * k).enumerate() {
                let emitted = stream.push(codec, frames, &mut audio);
                let pushed = ((i + 1) * piece).min(FRAMES);
                assert_eq!(audio.len(), stream.frames_out() * hop);
                // Every frame with its look-ahead in is out; none is out before it.
                assert!(stream.frames_out() + lookahead >= pushed, "{name}: lags");
                assert!(
                    stream.frames_out() + 3 <= pushed || emitted == 0,
                    "{name}: early"
                );
            }
            let settled = audio.len();
            assert!(settled >= (FRAMES - lookahead) * hop, "{name}: {settled}");
            let err = max_abs_err(&audio, &whole[..settled]);
            assert!(
                err <= 1e-5,
                "{name}, pieces of {piece}, chunks of {chunk_frames}: max abs err {err}"
            );
            stream.finish(codec, &mut audio);
            assert_eq!(audio.len(), whole.len());
            let err = max_abs_err(&audio, &whole);
            assert!(err <= 1e-5, "{name}: after finish, max abs err {err}");
        }
    }
}
