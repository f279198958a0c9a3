//! The streaming EnCodec decoder gives the one-shot decode's audio: fed one frame at a time or
//! in chunks, every frame but the last `lookahead_frames()` is emitted as it becomes final and
//! matches `render::decode_audio` of the whole sequence within 1e-5; `finish` emits the rest,
//! also matching, and nothing is emitted twice. With a reduced decoder format, the codec's
//! LSTM and transposed convs are bf16 in both decodes, which still agree, and stay close to f32.

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use engine::config::PadMode;
use engine::encodec::{EncodecModel, StreamingDecoder};
use engine::render::decode_audio;
use engine::{Codes, EncodecConfig, LoadOptions, MusicGen, MusicgenConfig, WeightFormat, Weights};

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

fn load(name: &str, weight_format: WeightFormat) -> MusicGen {
    MusicGen::load_with(&model_dir(name), &device(), LoadOptions { weight_format }).unwrap()
}

#[test]
fn streamed_audio_equals_the_one_shot_decode_but_the_look_ahead_tail() {
    for (name, format) in MODELS
        .iter()
        .map(|&name| (name, WeightFormat::F32))
        .chain([(MODELS[0], WeightFormat::Q4)])
    {
        let model = load(name, format);
        let codec = &model.audio_encoder;
        let k = codec.num_quantizers();
        let hop = codec.hop_length();
        let codes = codes(k, 7);
        let whole = one_shot(&model, &codes, k);
        assert_eq!(whole.len(), FRAMES * hop);
        for (piece, chunk_frames) in [(1, 1), (7, 1), (1, 3), (7, 4), (2, 1), (13, 1), (2, 5)] {
            let mut stream = codec.streaming_decoder(chunk_frames);
            let lookahead = stream.lookahead_frames();
            assert!(lookahead > 3, "{name}: look-ahead {lookahead}");
            let mut audio = Vec::new();
            // The look-ahead is the largest lag, not just a bound: some push reaches it.
            let mut reached = false;
            for (i, frames) in codes.chunks(piece * k).enumerate() {
                let emitted = stream.push(codec, frames, &mut audio);
                let pushed = ((i + 1) * piece).min(FRAMES);
                assert_eq!(audio.len(), stream.frames_out() * hop);
                // Every frame with its look-ahead in is out; none is out before it.
                assert!(stream.frames_out() + lookahead >= pushed, "{name}: lags");
                reached |= stream.frames_out() + lookahead == pushed;
                assert!(
                    stream.frames_out() + 3 <= pushed || emitted == 0,
                    "{name}: early"
                );
            }
            if piece == 1 {
                assert!(
                    reached,
                    "{name}, chunks of {chunk_frames}: look-ahead never reached"
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

/// One-shot decode of frame-major codes by the codec itself.
fn decode(codec: &EncodecModel, frame_major: &[u32]) -> Vec<f32> {
    let k = codec.num_quantizers();
    let frames = frame_major.len() / k;
    let mut data = vec![0i64; frame_major.len()];
    for f in 0..frames {
        for c in 0..k {
            data[c * frames + f] = i64::from(frame_major[f * k + c]);
        }
    }
    let codes = Tensor::<3, Int>::from_data(TensorData::new(data, [1, k, frames]), &device());
    to_vec(codec.decode(codes))
}

/// Push `codes` in pieces of `piece` frames, then finish; checks on the way that no frame
/// lags more than the look-ahead, and returns the audio.
fn stream_all(
    codec: &EncodecModel,
    stream: &mut StreamingDecoder,
    codes: &[u32],
    piece: usize,
) -> Vec<f32> {
    let k = codec.num_quantizers();
    let lookahead = stream.lookahead_frames();
    let mut audio = Vec::new();
    for frames in codes.chunks(piece * k) {
        stream.push(codec, frames, &mut audio);
        assert!(
            stream.frames_out() + lookahead >= stream.frames_in(),
            "lags"
        );
        assert_eq!(audio.len(), stream.frames_out() * codec.hop_length());
    }
    stream.finish(codec, &mut audio);
    audio
}

/// The fixtures' codecs with the paddings and trims a config may ask for, which the fixtures
/// themselves (non-causal, reflect) leave out: each layer's streamed start and end follow
/// the one-shot decode for every combination, down to sequences shorter than the look-ahead
/// (where a first conv with reflect padding takes the reference's short-input rule).
#[test]
fn every_padding_streams_exactly_including_sequences_shorter_than_the_look_ahead() {
    let variants: [(bool, PadMode, f64); 4] = [
        (false, PadMode::Reflect, 1.0),
        (false, PadMode::Constant, 1.0),
        (true, PadMode::Reflect, 1.0),
        (true, PadMode::Constant, 0.5),
    ];
    for name in MODELS {
        let dir = model_dir(name);
        let base = MusicgenConfig::from_file(&dir.join("config.json"))
            .unwrap()
            .audio_encoder;
        let weights = Weights::open_dir(&dir).unwrap();
        for (causal, pad_mode, trim_right_ratio) in variants {
            let config = EncodecConfig {
                use_causal_conv: causal,
                pad_mode,
                trim_right_ratio,
                ..base.clone()
            };
            let codec = EncodecModel::load(&weights, "audio_encoder", &config, &device()).unwrap();
            let k = codec.num_quantizers();
            let all = codes(k, 11);
            let lookahead = codec.streaming_decoder(1).lookahead_frames();
            let what = format!("{name}, causal {causal}, {pad_mode:?}, trim {trim_right_ratio}");
            for frames in [1, 2, 3, 5, lookahead, lookahead + 1, 23] {
                let codes = &all[..frames * k];
                let whole = decode(&codec, codes);
                for (piece, chunk) in [(1, 1), (2, 1), (1, 3), (5, 2)] {
                    let mut stream = codec.streaming_decoder(chunk);
                    let audio = stream_all(&codec, &mut stream, codes, piece);
                    let err = max_abs_err(&audio, &whole);
                    assert!(
                        err <= 1e-5,
                        "{what}: {frames} frames in pieces of {piece}, chunks of {chunk}: \
                         max abs err {err}"
                    );
                }
            }
        }
    }
}

/// Every layer's carried state belongs to the stream: a decoder reset mid-stream decodes the
/// next sequence as a fresh one does, and a clone taken mid-stream continues exactly as the
/// original (any state left behind or shared would show in either).
#[test]
fn reset_and_clone_carry_the_whole_state() {
    let model = MusicGen::load(&model_dir("musicgen-tiny"), &device()).unwrap();
    let codec = &model.audio_encoder;
    let k = codec.num_quantizers();
    let (first, second) = (codes(k, 3), codes(k, 5));

    let mut fresh = codec.streaming_decoder(1);
    let expected = stream_all(codec, &mut fresh, &second, 1);

    let mut reused = codec.streaming_decoder(1);
    let mut audio = Vec::new();
    for frame in first[..33 * k].chunks(k) {
        reused.push(codec, frame, &mut audio);
    }
    assert!(reused.frames_out() > 0);
    let mut clone = reused.clone();
    let (mut rest, mut rest_clone) = (audio.clone(), audio);
    for frame in first[33 * k..].chunks(k) {
        reused.push(codec, frame, &mut rest);
        clone.push(codec, frame, &mut rest_clone);
    }
    reused.finish(codec, &mut rest);
    clone.finish(codec, &mut rest_clone);
    assert_eq!(rest, rest_clone, "a clone continues as the original");
    assert!(max_abs_err(&rest, &decode(codec, &first)) <= 1e-5);

    // Reset halfway through a stream, then the second sequence.
    let mut reused = codec.streaming_decoder(1);
    let mut audio = Vec::new();
    for frame in first[..33 * k].chunks(k) {
        reused.push(codec, frame, &mut audio);
    }
    reused.reset(codec);
    assert_eq!((reused.frames_in(), reused.frames_out()), (0, 0));
    let after_reset = stream_all(codec, &mut reused, &second, 1);
    assert_eq!(
        after_reset, expected,
        "a reset decoder decodes as a fresh one"
    );
}

/// A reduced decoder format takes a reduced codec (`WeightFormat::codec`: the LSTM and
/// transposed convs in bf16, the LSTM's recurrence in q8 next to q8 and q4): its audio differs
/// from the f32 codec's by about bf16's rounding (6–8 × 10⁻⁴ of the RMS on the fixtures, the q8
/// recurrence adding under 1 % to that) and no more.
#[test]
fn a_reduced_format_decodes_close_to_the_f32_codec() {
    for name in MODELS {
        let exact = load(name, WeightFormat::F32);
        let k = exact.audio_encoder.num_quantizers();
        let codes = codes(k, 11);
        let reference = one_shot(&exact, &codes, k);
        let rms = (reference.iter().map(|v| v * v).sum::<f32>() / reference.len() as f32).sqrt();
        for format in [WeightFormat::Bf16, WeightFormat::Q8, WeightFormat::Q4] {
            let audio = one_shot(&load(name, format), &codes, k);
            let err = max_abs_err(&audio, &reference);
            assert!(err > 0.0, "{name} {format}: the codec is still f32");
            assert!(
                err <= 2e-3 * rms,
                "{name} {format}: max abs err {err} against rms {rms}"
            );
        }
    }
}
