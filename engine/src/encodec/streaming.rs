//! Exact streaming decode: codes in one frame (or a few) at a time, audio out as soon as it can
//! no longer change, equal to the one-shot [`EncodecModel::decode`] of the whole sequence.
//!
//! The SEANet decoder is `first conv → LSTM → upsampling layers` (per stage: ELU, transposed
//! conv, residual blocks; then ELU and the last conv). Every layer runs streamed, each with its
//! own state, and hands the next layer exactly the outputs that became final:
//!
//! - a stride-1 conv (the first and last convs, a residual block's dilated conv) carries the
//!   `left + right` input samples its next outputs read, and gives out output `t` once input
//!   `t + right` is in — a non-causal conv delays by its right reach;
//! - a residual block carries its input through its dilated conv's window, so the skip is
//!   delayed with the branch;
//! - a transposed conv (kernel 2 · stride) carries its last input, which overlaps its next
//!   outputs, and gives out `stride` samples per input, less the `trim_left` it holds back
//!   until the end;
//! - the LSTM carries `(h, c)`.
//!
//! The signal's ends are the whole signal's: a conv adds its left padding once its input is
//! longer than its padding (reflect padding reads that many samples; an input no longer than it
//! takes the reference's short-input rule, which only the whole input decides, so it waits for
//! the end), and its right padding at [`StreamingDecoder::finish`]; the transposed convs give
//! out their held-back samples there. So a frame costs one frame of every layer plus each conv's
//! few samples of context, where the previous design re-ran the upsampling layers over the
//! frame plus a halo of context frames on both sides (3 frames with musicgen-small) and the
//! first conv over 7.
//!
//! On the CPU, the first conv and the transposed convs that a streamed frame gives few
//! positions (a frame's first two stages) take the host matrix kernel
//! ([`crate::matvec::HostMatrix`]) over weights packed at load, where burn-flex's conv runs
//! such products far from the memory-bandwidth floor (see `conv.rs`); the layers after the
//! LSTM stream on host rows, on the row layers of the one-shot decode (`rows.rs`), with the
//! same carried state ([`super::conv::Signal`]), where burn-flex's convs, copies and memsets
//! had taken most of a frame's time in those layers.
//!
//! Look-ahead: frame `f`'s audio is final once frame `f + lookahead_frames()` is in — the first
//! conv's right reach (3 frames), plus the samples the upsampling layers hold back in all
//! (482 with musicgen-small: the transposed convs' left trims and the convs' right reaches,
//! each scaled up by the strides after it), rounded up to a frame, plus `chunk − 1`. That is
//! 4 frames for musicgen-small at chunk 1, as with the halo design (3 + a 1-frame halo).
//!
//! `chunk_frames` only batches: pushed frames wait until that many are pending, then run
//! together (fewer, larger products: the weights are read once per run instead of once per
//! frame), at the cost of `chunk − 1` frames of latency.
//!
//! Measured 2026-12-01 with `encodec_decode_bench` (10 s, musicgen-small's codec shape with
//! random weights) on the 2-core Xeon (AVX-512), shared with another job (load average 3–4),
//! the previous design and this one run alternately, twice each:
//!
//! | ms per frame | one-shot | streamed, chunk 1 | streamed, chunk 8 |
//! | --- | --- | --- | --- |
//! | halo design | 4.0, 4.2 | 26.1, 27.5 | 10.8, 10.7 |
//! | per-layer state | 3.7, 4.2 | 10.2, 10.4 | 4.8, 5.5 |
//!
//! Of the 10 ms at chunk 1 (timed per layer), the LSTM takes 4.7 (67 MB of f32 weights read per
//! step), the first transposed conv 2.1 (33.5 MB), the first conv 0.25, and all the rest 2.5;
//! the weight reads put the floor near 7 ms on this machine. At chunk 8 the LSTM's input
//! projection and the convs read their weights once per 8 frames, which leaves the recurrent
//! weights (32 MB per frame) as the largest part.

use burn::tensor::{Int, Tensor, TensorData};

use super::EncodecModel;
use super::conv::StreamedInput;
use super::lstm::LstmState;
use super::rows::Rows;
use super::seanet::UpsampleState;
use crate::nn::into_host_vec;

/// The state of one streaming decode. Holds no model: every call takes the codec, so the
/// thread that owns the model can own this too.
#[derive(Debug, Clone)]
pub struct StreamingDecoder {
    codebooks: usize,
    hop_length: usize,
    /// Frames per run: pushed frames wait until this many are pending.
    chunk: usize,
    /// Frames that follow a frame before its audio is out, `chunk` aside (see `lookahead`).
    delay_frames: usize,
    /// Codes pushed but not yet run, frame-major.
    pending: Vec<u32>,
    /// The first conv's carried input (summed code embeddings).
    first_conv: StreamedInput,
    lstm_state: LstmState,
    /// The carried inputs of the layers after the LSTM.
    upsample: Tail,
    /// Final audio samples (channels interleaved) short of a whole frame.
    partial: Vec<f32>,
    /// Frames pushed / decoded to audio.
    frames_in: usize,
    frames_out: usize,
}

impl EncodecModel {
    /// A streaming decoder that runs the codec once per `chunk_frames` (≥ 1) pushed frames:
    /// 1 gives the least latency; more batches the per-run overhead over more frames (the
    /// per-frame work is the same either way, see the module doc).
    pub fn streaming_decoder(&self, chunk_frames: usize) -> StreamingDecoder {
        let first_conv = self.decoder.first_conv_input();
        StreamingDecoder {
            codebooks: self.num_quantizers(),
            hop_length: self.hop_length,
            chunk: chunk_frames.max(1),
            delay_frames: self.delay_frames(&first_conv),
            pending: Vec::new(),
            first_conv,
            lstm_state: self.decoder.lstm_zero_state(),
            upsample: if self.decoder.streams_rows() {
                Tail::Rows(self.decoder.upsample_state())
            } else {
                Tail::Tensors(Box::new(self.decoder.upsample_state()))
            },
            partial: Vec::new(),
            frames_in: 0,
            frames_out: 0,
        }
    }

    /// The most frames that can follow a frame before its audio is whole, pushing one frame at
    /// a time: after `n` frames, the first conv has finished `n − reach` of them (none until
    /// its reflect padding can be added), and the upsampling layers have given out all but a
    /// fixed number of their samples (fewer at the start, while one waits for its padding).
    /// Counted from the layers' own rules, up to the frame from which every layer is past
    /// its start and the count no longer changes.
    fn delay_frames(&self, first_conv: &StreamedInput) -> usize {
        let mut most = 0;
        for n in 1.. {
            let (lstm_frames, first_started) = first_conv.outputs_final(n);
            let (samples, started) = self.decoder.upsample_samples_final(lstm_frames);
            most = most.max(n - samples / self.hop_length);
            if first_started && started {
                break;
            }
        }
        most
    }
}

impl StreamingDecoder {
    /// Frames that must follow a frame before its audio is final (and emitted): the first
    /// conv's reach ahead (3 frames for kernel 7), the samples the upsampling layers hold
    /// back, rounded up to a frame (1 frame for musicgen-small: 482 samples), and the chunk.
    /// Part of the stream's latency.
    pub fn lookahead_frames(&self) -> usize {
        self.delay_frames + self.chunk - 1
    }

    /// Frames pushed so far.
    pub fn frames_in(&self) -> usize {
        self.frames_in
    }

    /// Frames whose audio has been emitted.
    pub fn frames_out(&self) -> usize {
        self.frames_out
    }

    /// Samples per frame per channel (640 at 32 kHz).
    pub fn hop_length(&self) -> usize {
        self.hop_length
    }

    /// Start a new stream (the codec is the same; all state is dropped).
    pub fn reset(&mut self, codec: &EncodecModel) {
        *self = codec.streaming_decoder(self.chunk);
    }

    /// Append frames of codes, frame-major (`frames × codebooks`: frame f's codebook c at
    /// `f · codebooks + c`), and append to `out` the audio that became final: whole frames,
    /// `hop_length` samples each (channels interleaved). Returns the frames emitted.
    ///
    /// # Panics
    /// If `codes.len()` is not a multiple of the codebook count, or a code is not below the
    /// codebook size: codes come from the decoder LM, whose heads cannot produce one.
    pub fn push(&mut self, codec: &EncodecModel, codes: &[u32], out: &mut Vec<f32>) -> usize {
        let k = self.codebooks;
        assert_eq!(
            codes.len() % k,
            0,
            "{} codes for {k} codebooks",
            codes.len()
        );
        self.pending.extend_from_slice(codes);
        self.frames_in += codes.len() / k;
        if self.pending.len() < self.chunk * k {
            return 0;
        }
        self.advance(codec, false, out)
    }

    /// Treat the frames pushed so far as the whole sequence: emit the rest of the audio, as the
    /// one-shot decode ends it. Returns the frames emitted; the stream is complete afterwards.
    pub fn finish(&mut self, codec: &EncodecModel, out: &mut Vec<f32>) -> usize {
        self.advance(codec, true, out)
    }

    /// Run the pending frames through every layer, each giving the next what became final;
    /// `end`: no frames follow.
    fn advance(&mut self, codec: &EncodecModel, end: bool, out: &mut Vec<f32>) -> usize {
        let decoder = &codec.decoder;
        let embeddings = (!self.pending.is_empty()).then(|| {
            let (k, n) = (self.codebooks, self.pending.len() / self.codebooks);
            let mut by_codebook = vec![0i64; k * n];
            for (f, frame) in self.pending.chunks_exact(k).enumerate() {
                for (c, &code) in frame.iter().enumerate() {
                    by_codebook[c * n + f] = i64::from(code);
                }
            }
            self.pending.clear();
            let data = TensorData::new(by_codebook, [1, k, n]);
            codec
                .quantizer
                .decode(Tensor::<3, Int>::from_data(data, codec.device()))
        });
        let lstm = decoder
            .first_conv_streamed(&mut self.first_conv, embeddings, end)
            .map(|x| decoder.lstm(x, &mut self.lstm_state));
        if lstm.is_none() && !end {
            return 0;
        }
        let audio = match &mut self.upsample {
            Tail::Tensors(state) => decoder
                .upsample_streamed(state, lstm, end)
                .map(|audio| (audio.dims()[1], frame_major(audio))),
            Tail::Rows(state) => {
                // One signal (the stream's batch of 1): `[1, channels, frames]` as rows.
                let rows = lstm.map(|x| Rows {
                    channels: x.dims()[1],
                    values: into_host_vec(x.swap_dims(1, 2)),
                });
                decoder
                    .upsample_streamed_rows(state, rows, end)
                    .map(|audio| (audio.channels, audio.values))
            }
        };
        let Some((channels, audio)) = audio else {
            return 0;
        };
        let frame = self.hop_length * channels;
        self.partial.extend(audio);
        let whole = self.partial.len() / frame;
        out.extend(self.partial.drain(..whole * frame));
        self.frames_out += whole;
        whole
    }
}

/// What the layers after the LSTM carry: host rows where the decoder has row layers (the CPU),
/// burn tensors elsewhere.
#[derive(Debug, Clone)]
enum Tail {
    /// Boxed: burn's tensors make it several times the rows' size.
    Tensors(Box<UpsampleState>),
    Rows(UpsampleState<Rows>),
}

/// `[1, channels, len]` → `len × channels` values, time-major.
fn frame_major(x: Tensor<3>) -> Vec<f32> {
    into_host_vec(x.swap_dims(1, 2))
}
