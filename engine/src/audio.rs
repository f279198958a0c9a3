//! Audio at the edges of the engine: WAV files in and out (the one WAV reader and writer of the
//! workspace) and the band-limited resampler that brings any clip to the model's rate for
//! feature extraction (torchaudio's default design: Hann window, 6 zero crossings, roll-off 0.99).

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("{path}: {cause}")]
    Wav { path: PathBuf, cause: hound::Error },
    #[error("cannot resample from {from} Hz to {to} Hz")]
    Rate { from: u32, to: u32 },
}

/// Read a WAV file as mono f32 (channels averaged) and its sample rate.
pub fn read_wav_mono(path: &Path) -> Result<(Vec<f32>, u32), AudioError> {
    let wav = |cause| AudioError::Wav {
        path: path.to_owned(),
        cause,
    };
    let mut reader = hound::WavReader::open(path).map_err(wav)?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels.max(1));
    let raw: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader.samples::<f32>().collect::<Result<_, _>>(),
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect()
        }
    }
    .map_err(wav)?;
    let mono = raw
        .chunks_exact(channels)
        .map(|c| c.iter().sum::<f32>() / channels as f32)
        .collect();
    Ok((mono, spec.sample_rate))
}

/// Write mono 32-bit float WAV atomically: an existing file is replaced only on success.
pub fn write_wav(path: &Path, samples: &[f32], rate: u32) -> Result<(), AudioError> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    directions::atomic::write_atomic(path, |tmp| {
        let mut writer = hound::WavWriter::create(tmp, spec)?;
        for &s in samples {
            writer.write_sample(s)?;
        }
        writer.finalize()
    })
    .map_err(|cause| AudioError::Wav {
        path: path.to_owned(),
        cause,
    })
}

/// Whether `path` is a readable mono 32-bit float WAV of `rate` Hz and `samples` samples
/// (resumable writers skip such files).
pub fn is_float_wav(path: &Path, rate: u32, samples: usize) -> bool {
    hound::WavReader::open(path).is_ok_and(|r| {
        let s = r.spec();
        s.channels == 1
            && s.sample_rate == rate
            && s.sample_format == hound::SampleFormat::Float
            && s.bits_per_sample == 32
            && r.len() as usize == samples
    })
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The windowed-sinc filter bank of [`resample`] (and of the stream's resampler, which must
/// give the same samples): one filter of `2 · taps` coefficients per output phase.
pub(crate) struct SincFilter {
    /// Filter of output phase p (`n · down mod up`), applied to inputs `base − taps + 1 ..= base + taps`.
    pub phases: Vec<Vec<f32>>,
    pub taps: isize,
    /// Output and input steps per period: `to / gcd`, `from / gcd`.
    pub up: usize,
    pub down: usize,
}

impl SincFilter {
    /// For rates `from` → `to`, both non-zero.
    pub fn new(from: u32, to: u32) -> Self {
        let g = gcd(u64::from(from), u64::from(to));
        let (up, down) = ((u64::from(to) / g) as usize, (u64::from(from) / g) as usize);
        const ZERO_CROSSINGS: f64 = 6.0;
        const ROLLOFF: f64 = 0.99;
        // Cutoff in cycles per input sample.
        let fc = 0.5 * ROLLOFF * (up as f64 / down as f64).min(1.0);
        let half_width = ZERO_CROSSINGS / (2.0 * fc);
        let taps = half_width.ceil() as isize;
        // One filter per output phase: output n has fractional input position (n·down mod up)/up.
        let phases: Vec<Vec<f32>> = (0..up)
            .map(|p| {
                let frac = p as f64 / up as f64;
                (-taps + 1..=taps)
                    .map(|k| {
                        let t = k as f64 - frac;
                        if t.abs() > half_width {
                            return 0.0;
                        }
                        let arg = 2.0 * fc * t;
                        let sinc = if arg == 0.0 {
                            1.0
                        } else {
                            (std::f64::consts::PI * arg).sin() / (std::f64::consts::PI * arg)
                        };
                        let w = (std::f64::consts::PI * t / (2.0 * half_width))
                            .cos()
                            .powi(2);
                        (2.0 * fc * sinc * w) as f32
                    })
                    .collect()
            })
            .collect();
        Self {
            phases,
            taps,
            up,
            down,
        }
    }
}

/// Band-limited resampling by a windowed sinc: output sample n sits at input time
/// n · from / to; the low-pass cutoff is 0.99 × the lower Nyquist frequency; 6 zero crossings
/// of the sinc on each side under a Hann window; zeros outside the signal (as torchaudio).
/// Output length is ceil(len · to / from).
pub fn resample(x: &[f32], from: u32, to: u32) -> Result<Vec<f32>, AudioError> {
    if from == 0 || to == 0 {
        return Err(AudioError::Rate { from, to });
    }
    if from == to {
        return Ok(x.to_vec());
    }
    let SincFilter {
        phases,
        taps,
        up,
        down,
    } = SincFilter::new(from, to);
    let n_out = (x.len() * up).div_ceil(down);
    let mut y = Vec::with_capacity(n_out);
    for n in 0..n_out {
        let pos = n * down;
        let (base, phase) = ((pos / up) as isize, pos % up);
        let filter = &phases[phase];
        let mut acc = 0f32;
        for (j, &h) in filter.iter().enumerate() {
            let i = base - taps + 1 + j as isize;
            if i >= 0 && (i as usize) < x.len() {
                acc += h * x[i as usize];
            }
        }
        y.push(acc);
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f64, rate: u32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin() as f32)
            .collect()
    }

    #[test]
    fn resampled_sines_match_the_analytic_signal() {
        // Up to 9 kHz the pass band is flat; 6 zero crossings (torchaudio's default) roll off above.
        for freq in [220.0, 1000.0, 5000.0, 9000.0] {
            let x = sine(freq, 44_100, 44_100);
            let y = resample(&x, 44_100, 32_000).unwrap();
            assert_eq!(y.len(), 32_000);
            let want = sine(freq, 32_000, 32_000);
            let err = y[200..31_800]
                .iter()
                .zip(&want[200..31_800])
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err < 2e-3, "{freq} Hz: max err {err}");
        }
        // Above the new Nyquist (16 kHz) the tone is attenuated (> 35 dB below its 0.707 rms), not aliased.
        let y = resample(&sine(20_000.0, 44_100, 44_100), 44_100, 32_000).unwrap();
        let rms = (y[200..31_800].iter().map(|v| v * v).sum::<f32>() / 31_600.0).sqrt();
        assert!(rms < 0.0126, "20 kHz leaks with rms {rms}");
    }

    #[test]
    fn wav_round_trip_and_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("engine-audio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.wav");
        let x = sine(440.0, 32_000, 3200);
        write_wav(&path, &x, 32_000).unwrap();
        assert!(is_float_wav(&path, 32_000, 3200));
        let (y, rate) = read_wav_mono(&path).unwrap();
        assert_eq!((y, rate), (x, 32_000));
        let missing = dir.join("missing.wav");
        let err = read_wav_mono(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.wav"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
