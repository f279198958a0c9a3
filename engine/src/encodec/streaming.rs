//! Exact streaming decode: codes in one frame (or a few) at a time, audio out as soon as it can
//! no longer change, equal to the one-shot [`EncodecModel::decode`] of the whole sequence.
//!
//! The SEANet decoder is `first conv → LSTM → upsampling layers`. The first conv reads
//! `reach().1` frames ahead (3 for kernel 7), the LSTM only looks back (its state is carried
//! from piece to piece), and everything after it is local: a piece of LSTM output with
//! `halo_frames` of context on each side gives the whole signal's samples in its middle, which
//! is how the offline decoder already runs that part (`SeanetDecoder::forward`). So frame f's
//! audio is final once frame `f + lookahead_frames()` has arrived, and each frame costs the
//! same: one first-conv window, one LSTM step, one upsampling window — never a re-decode of
//! the past.

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::EncodecModel;
use super::lstm::LstmState;

/// The state of one streaming decode. Holds no model: every call takes the codec, so the
/// thread that owns the model can own this too.
#[derive(Debug, Clone)]
pub struct StreamingDecoder {
    codebooks: usize,
    hop_length: usize,
    /// Frames the first conv reads before and after an output frame.
    conv_before: usize,
    conv_after: usize,
    /// Frames of LSTM output the upsampling layers need before and after a piece.
    halo: (usize, usize),
    /// The fewest frames one upsampling run emits (its cost is `chunk + 2 · halo` frames).
    chunk: usize,
    /// Summed code embeddings of the frames the first conv still needs.
    embeddings: FrameBuffer,
    /// LSTM outputs (skip included) of the frames the upsampling layers still need.
    lstm_out: FrameBuffer,
    lstm_state: LstmState,
    /// Frames pushed / through the LSTM / decoded to audio.
    frames_in: usize,
    frames_lstm: usize,
    frames_out: usize,
}

impl EncodecModel {
    /// A streaming decoder that decodes at least `chunk_frames` (≥ 1) frames per upsampling
    /// run: 1 gives the least latency; more costs less per frame.
    pub fn streaming_decoder(&self, chunk_frames: usize) -> StreamingDecoder {
        let (conv_before, conv_after) = self.decoder.first_conv_reach();
        StreamingDecoder {
            codebooks: self.num_quantizers(),
            hop_length: self.hop_length,
            conv_before,
            conv_after,
            halo: self.decoder.halo_frames(),
            chunk: chunk_frames.max(1),
            embeddings: FrameBuffer::default(),
            lstm_out: FrameBuffer::default(),
            lstm_state: self.decoder.lstm_zero_state(),
            frames_in: 0,
            frames_lstm: 0,
            frames_out: 0,
        }
    }
}

impl StreamingDecoder {
    /// Frames that must follow a frame before its audio is final (and emitted): the first
    /// conv's reach ahead, the upsampling halo and the chunk. Part of the stream's latency.
    pub fn lookahead_frames(&self) -> usize {
        self.conv_after + self.halo.1 + self.chunk - 1
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
        let n = codes.len() / k;
        if n == 0 {
            return 0;
        }
        let mut by_codebook = vec![0i64; k * n];
        for (f, frame) in codes.chunks_exact(k).enumerate() {
            for (c, &code) in frame.iter().enumerate() {
                by_codebook[c * n + f] = i64::from(code);
            }
        }
        let device = codec.device().clone();
        let codes = Tensor::<3, Int>::from_data(TensorData::new(by_codebook, [1, k, n]), &device);
        self.embeddings.append(codec.quantizer.decode(codes));
        self.frames_in += n;
        self.advance(codec, false, out)
    }

    /// Treat the frames pushed so far as the whole sequence: emit the rest of the audio, as the
    /// one-shot decode ends it. Returns the frames emitted; the stream is complete afterwards.
    pub fn finish(&mut self, codec: &EncodecModel, out: &mut Vec<f32>) -> usize {
        self.advance(codec, true, out)
    }

    /// Run the first conv and the LSTM over every frame they can finish, then the upsampling
    /// layers over every frame they can; `end`: no frames follow.
    fn advance(&mut self, codec: &EncodecModel, end: bool, out: &mut Vec<f32>) -> usize {
        let device = codec.device().clone();
        let decoder = &codec.decoder;
        // A window that starts at frame 0 is padded there as the whole signal is; reflect
        // padding of a too-short window would not be, so wait for enough frames.
        let short = self.frames_in <= self.conv_before.max(self.conv_after);
        let conv_ready = match (end, short) {
            (true, _) => self.frames_in,
            (false, true) => self.frames_lstm,
            (false, false) => self.frames_in - self.conv_after,
        };
        if conv_ready > self.frames_lstm {
            let from = self.frames_lstm.saturating_sub(self.conv_before);
            let x = self.embeddings.window(from, &device);
            let conv = decoder.first_conv(x).narrow(
                2,
                self.frames_lstm - from,
                conv_ready - self.frames_lstm,
            );
            let lstm = decoder.lstm(conv, &mut self.lstm_state);
            self.lstm_out.append(lstm);
            self.frames_lstm = conv_ready;
            let keep = self.frames_lstm.saturating_sub(self.conv_before);
            self.embeddings.drop_before(keep);
        }
        let audio_ready = if end {
            self.frames_lstm
        } else {
            self.frames_lstm.saturating_sub(self.halo.1)
        };
        let due = audio_ready.saturating_sub(self.frames_out);
        if due == 0 || (!end && due < self.chunk) {
            return 0;
        }
        let from = self.frames_out.saturating_sub(self.halo.0);
        let x = self.lstm_out.window(from, &device);
        let audio = decoder.upsample(x).narrow(
            2,
            (self.frames_out - from) * self.hop_length,
            due * self.hop_length,
        );
        out.extend(frame_major(audio));
        self.frames_out = audio_ready;
        let keep = self.frames_out.saturating_sub(self.halo.0);
        self.lstm_out.drop_before(keep);
        due
    }
}

/// Per-frame vectors of consecutive frames, frame-major, from frame `start` on.
#[derive(Debug, Clone, Default)]
struct FrameBuffer {
    values: Vec<f32>,
    dim: usize,
    start: usize,
}

impl FrameBuffer {
    /// Append `x: [1, dim, frames]`.
    fn append(&mut self, x: Tensor<3>) {
        self.dim = x.dims()[1];
        self.values.extend(frame_major(x));
    }

    /// The frames from `from` on, as `[1, dim, frames]`.
    fn window(&self, from: usize, device: &Device) -> Tensor<3> {
        let values = self.values[(from - self.start) * self.dim..].to_vec();
        let frames = values.len() / self.dim.max(1);
        Tensor::<3>::from_data(TensorData::new(values, [1, frames, self.dim]), device)
            .swap_dims(1, 2)
    }

    /// Forget the frames before `keep`.
    fn drop_before(&mut self, keep: usize) {
        if keep > self.start {
            self.values.drain(..(keep - self.start) * self.dim);
            self.start = keep;
        }
    }
}

/// `[1, channels, len]` → `len × channels` values, time-major.
fn frame_major(x: Tensor<3>) -> Vec<f32> {
    x.swap_dims(1, 2)
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("an f32 tensor converts to Vec<f32>")
}
