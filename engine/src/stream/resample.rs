//! The stream's resampler, model rate → host rate: the windowed sinc of
//! [`crate::audio::resample`] run incrementally. Output sample n sits at input time
//! `n · from / to` and is computed, with the same arithmetic, as soon as the `taps` input
//! samples after it exist — so the output does not depend on how the input arrives, and it
//! equals the offline resampling of the same signal. Step s's audio (input samples
//! `[640 s, 640 (s + 1))`) is host samples `[ceil(s · fs / 50), ceil((s + 1) · fs / 50))`.
//!
//! Owned by the engine thread.

use crate::audio::SincFilter;

pub struct StreamResampler {
    /// `None` when the rates are equal: samples pass through.
    filter: Option<SincFilter>,
    /// Input samples from absolute index `start` on (earlier ones are no longer needed).
    input: Vec<f32>,
    start: usize,
    /// Input samples received.
    received: usize,
    /// The next output sample's absolute index.
    next: usize,
}

impl StreamResampler {
    /// `from`, `to` in Hz, both non-zero (checked by the engine's config).
    pub fn new(from: u32, to: u32) -> Self {
        Self {
            filter: (from != to).then(|| SincFilter::new(from, to)),
            input: Vec::new(),
            start: 0,
            received: 0,
            next: 0,
        }
    }

    /// Output samples the resampler holds back: the filter's reach ahead, at the output rate.
    pub fn delay_samples(&self) -> usize {
        match &self.filter {
            None => 0,
            Some(f) => (f.taps as usize * f.up).div_ceil(f.down) + 1,
        }
    }

    /// Feed `input` and append every output sample that became computable to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        let Some(filter) = &self.filter else {
            out.extend_from_slice(input);
            return;
        };
        self.input.extend_from_slice(input);
        self.received += input.len();
        let taps = filter.taps;
        loop {
            let pos = self.next * filter.down;
            let (base, phase) = ((pos / filter.up) as isize, pos % filter.up);
            if base + taps >= self.received as isize {
                break;
            }
            let mut acc = 0f32;
            for (j, &h) in filter.phases[phase].iter().enumerate() {
                let i = base - taps + 1 + j as isize;
                if i >= 0 {
                    acc += h * self.input[i as usize - self.start];
                }
            }
            out.push(acc);
            self.next += 1;
        }
        // Keep what the next output's window reaches back to.
        let base = (self.next * filter.down / filter.up) as isize;
        let keep = (base - taps + 1).max(0) as usize;
        if keep > self.start {
            self.input.drain(..keep - self.start);
            self.start = keep;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::resample;

    #[test]
    fn streamed_resampling_equals_offline_resampling_for_any_chunking() {
        let x: Vec<f32> = (0..6400)
            .map(|i| ((i as f32 * 0.013).sin() + (i as f32 * 0.0007).cos()) * 0.5)
            .collect();
        for to in [32_000, 44_100, 48_000, 88_200, 96_000] {
            let offline = resample(&x, 32_000, to).unwrap();
            for chunk in [1, 640, 999] {
                let mut stream = StreamResampler::new(32_000, to);
                let mut out = Vec::new();
                for piece in x.chunks(chunk) {
                    stream.process(piece, &mut out);
                }
                let settled = out.len();
                assert!(settled + stream.delay_samples() >= offline.len(), "{to}");
                assert_eq!(out[..], offline[..settled], "{to} Hz in pieces of {chunk}");
            }
        }
    }
}
