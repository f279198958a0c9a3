//! Model-free clip features for the offline tools: `chroma` (12 pitch-class energies) and
//! `logmel` (64 log mel bands).

/// In-place iterative radix-2 FFT of (re, im); the length must be a power of two.
fn fft(re: &mut [f64], im: &mut [f64]) {
    let n = re.len();
    let mut j = 0;
    for i in 1..n {
        let mut bit = n >> 1;
        while j & bit != 0 {
            j ^= bit;
            bit >>= 1;
        }
        j |= bit;
        if i < j {
            re.swap(i, j);
            im.swap(i, j);
        }
    }
    let mut len = 2;
    while len <= n {
        let ang = -2.0 * std::f64::consts::PI / len as f64;
        for start in (0..n).step_by(len) {
            for k in 0..len / 2 {
                let (s, c) = (ang * k as f64).sin_cos();
                let (a, b) = (start + k, start + k + len / 2);
                let (tr, ti) = (re[b] * c - im[b] * s, re[b] * s + im[b] * c);
                re[b] = re[a] - tr;
                im[b] = im[a] - ti;
                re[a] += tr;
                im[a] += ti;
            }
        }
        len <<= 1;
    }
}

/// Power spectra of Hann-windowed frames (`n_fft` a power of two, hop `hop`); frames past the
/// end are zero-padded. Returns one `n_fft / 2 + 1` vector per frame.
pub fn power_frames(x: &[f32], n_fft: usize, hop: usize) -> Vec<Vec<f64>> {
    let window: Vec<f64> = (0..n_fft)
        .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n_fft as f64).cos())
        .collect();
    let n_frames = x.len().saturating_sub(1) / hop + 1;
    (0..n_frames)
        .map(|f| {
            let mut re: Vec<f64> = (0..n_fft)
                .map(|i| x.get(f * hop + i).map_or(0.0, |&v| f64::from(v)) * window[i])
                .collect();
            let mut im = vec![0.0; n_fft];
            fft(&mut re, &mut im);
            (0..=n_fft / 2)
                .map(|k| re[k] * re[k] + im[k] * im[k])
                .collect()
        })
        .collect()
}

/// Names of the model-free feature kinds.
pub const FEATURE_KINDS: [&str; 2] = ["chroma", "logmel"];

/// 12-d chroma by harmonic summation: the clip's mean magnitude spectrum (16384-point frames)
/// gives every equal-tempered pitch from MIDI 12 (16 Hz) to 119 a salience
/// Σ_h 0.8^(h−1) · max |X| within ±½ semitone of h·f₀ (h ≤ 10, below 8 kHz), so a note's
/// harmonics vote for its fundamental rather than for their own pitch classes; saliences are
/// summed per pitch class, log-compressed and scaled to a maximum of 1 (loudness-free).
pub fn chroma(x: &[f32], rate: u32) -> Vec<f32> {
    let n_fft = 16384;
    let frames = power_frames(x, n_fft, n_fft / 2);
    let bins = n_fft / 2 + 1;
    let mut mag = vec![0f64; bins];
    for p in &frames {
        for (m, v) in mag.iter_mut().zip(p) {
            *m += v.sqrt() / frames.len() as f64;
        }
    }
    let bin_hz = f64::from(rate) / n_fft as f64;
    let top = (f64::from(rate) / 2.0).min(8000.0);
    let semitone = 2f64.powf(1.0 / 24.0);
    let mut pcs = [0f64; 12];
    for midi in 12..120 {
        let f0 = 440.0 * 2f64.powf((f64::from(midi) - 69.0) / 12.0);
        let mut salience = 0.0;
        for h in 1..=10 {
            let f = f0 * f64::from(h);
            if f * semitone > top {
                break;
            }
            let lo = ((f / semitone / bin_hz).floor() as usize).max(1);
            let hi = ((f * semitone / bin_hz).ceil() as usize).min(bins - 1);
            let peak = (lo..=hi).map(|k| mag[k]).fold(0.0, f64::max);
            salience += 0.8f64.powi(h - 1) * peak;
        }
        pcs[(midi % 12) as usize] += salience;
    }
    let max = pcs.iter().cloned().fold(0.0, f64::max);
    if max <= 0.0 {
        return vec![0.0; 12];
    }
    // log(1 + γ·s/max) / log(1 + γ): 1 at the strongest class, compressed below.
    let gamma = 10.0f64;
    pcs.iter()
        .map(|&p| ((1.0 + gamma * p / max).ln() / (1.0 + gamma).ln()) as f32)
        .collect()
}

fn hz_to_mel(f: f64) -> f64 {
    2595.0 * (1.0 + f / 700.0).log10()
}

fn mel_to_hz(m: f64) -> f64 {
    700.0 * (10f64.powf(m / 2595.0) - 1.0)
}

/// 64 log mel-band energies (2048-point frames, hop 1024, 20 Hz–min(16 kHz, Nyquist),
/// triangular HTK mel filters), averaged over frames: ln(1e-6 + mean power).
pub fn logmel(x: &[f32], rate: u32) -> Vec<f32> {
    let (n_fft, bands) = (2048, 64);
    let frames = power_frames(x, n_fft, 1024);
    let top = (f64::from(rate) / 2.0).min(16000.0);
    let (m0, m1) = (hz_to_mel(20.0), hz_to_mel(top));
    let edges: Vec<f64> = (0..bands + 2)
        .map(|i| mel_to_hz(m0 + (m1 - m0) * i as f64 / (bands + 1) as f64))
        .collect();
    let bin_hz = f64::from(rate) / n_fft as f64;
    let mut mean_power = vec![0f64; n_fft / 2 + 1];
    for p in &frames {
        for (m, v) in mean_power.iter_mut().zip(p) {
            *m += v / frames.len() as f64;
        }
    }
    (0..bands)
        .map(|b| {
            let (lo, mid, hi) = (edges[b], edges[b + 1], edges[b + 2]);
            let e: f64 = mean_power
                .iter()
                .enumerate()
                .map(|(k, &p)| {
                    let f = k as f64 * bin_hz;
                    let w = if f > lo && f <= mid {
                        (f - lo) / (mid - lo)
                    } else if f > mid && f < hi {
                        (hi - f) / (hi - mid)
                    } else {
                        0.0
                    };
                    w * p
                })
                .sum();
            (1e-6 + e).ln() as f32
        })
        .collect()
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
    fn chroma_peaks_at_the_played_pitch_class() {
        // A3 = 220 Hz plus harmonics → pitch class 9.
        let x: Vec<f32> = sine(220.0, 44_100, 44_100)
            .iter()
            .zip(sine(440.0, 44_100, 44_100))
            .zip(sine(660.0, 44_100, 44_100))
            .map(|((a, b), c)| a + 0.5 * b + 0.3 * c)
            .collect();
        let c = chroma(&x, 44_100);
        let best = (0..12).max_by(|&a, &b| c[a].total_cmp(&c[b])).unwrap();
        assert_eq!(best, 9);
        assert_eq!(c[9], 1.0);
        let m = logmel(&x, 44_100);
        assert_eq!(m.len(), 64);
        assert!(m.iter().all(|v| v.is_finite()));
    }
}
