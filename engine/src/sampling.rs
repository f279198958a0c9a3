//! Choosing the next code from logits: greedy, or temperature → top-k → top-p (the order of
//! transformers' logits warpers) and a draw from a seeded RNG. Same seed, same logits ⇒ same code.

/// How to pick a code.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// argmax; ties go to the lowest index, as `torch.argmax`.
    Greedy,
    /// Sample after temperature scaling, keeping the `top_k` best (0 = all) and the smallest set
    /// whose probability reaches `top_p` (1.0 = all).
    Sample {
        temperature: f32,
        top_k: usize,
        top_p: f32,
    },
}

impl Sampling {
    /// MusicGen's defaults (audiocraft, and facebook/musicgen-* generation configs): top-k 250.
    pub const MUSICGEN_DEFAULT: Sampling = Sampling::Sample {
        temperature: 1.0,
        top_k: 250,
        top_p: 1.0,
    };
}

/// The seeded PRNG (xoshiro256**, shared with the probe training in `directions`): identical
/// on every platform, so the same seed gives the same codes.
pub use directions::Rng;

/// Reusable buffers so sampling allocates nothing per step.
#[derive(Debug, Default, Clone)]
pub struct Sampler {
    order: Vec<u32>,
    probs: Vec<f64>,
}

impl Sampler {
    /// Pick one code from `logits` (one codebook's row).
    pub fn pick(&mut self, logits: &[f32], sampling: Sampling, rng: &mut Rng) -> u32 {
        match sampling {
            Sampling::Greedy => argmax(logits),
            Sampling::Sample {
                temperature,
                top_k,
                top_p,
            } => {
                if temperature <= 0.0 {
                    return argmax(logits);
                }
                self.sample(logits, temperature, top_k, top_p, rng)
            }
        }
    }

    fn sample(
        &mut self,
        logits: &[f32],
        temperature: f32,
        top_k: usize,
        top_p: f32,
        rng: &mut Rng,
    ) -> u32 {
        let n = logits.len();
        self.order.clear();
        self.order.extend(0..n as u32);
        // Descending by logit; equal logits keep index order, so the result is deterministic.
        let descending = |a: &u32, b: &u32| {
            logits[*b as usize]
                .partial_cmp(&logits[*a as usize])
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.cmp(b))
        };
        let keep = if top_k == 0 { n } else { top_k.min(n) };
        // Only the kept codes need an order: partition them off first (top-k 250 of 2048 sorts
        // an eighth of the row), then sort them as a full sort would have ordered them.
        if keep < n {
            self.order.select_nth_unstable_by(keep - 1, descending);
            self.order.truncate(keep);
        }
        self.order.sort_unstable_by(descending);
        let scale = 1.0 / temperature as f64;
        let best = logits[self.order[0] as usize] as f64 * scale;
        self.probs.clear();
        let mut total = 0.0;
        for &i in &self.order[..keep] {
            let p = (logits[i as usize] as f64 * scale - best).exp();
            total += p;
            self.probs.push(p);
        }
        // Nucleus: the smallest prefix whose mass reaches top_p (at least one code).
        let mut kept = keep;
        if top_p < 1.0 {
            let mut mass = 0.0;
            for (j, p) in self.probs.iter().enumerate() {
                mass += p / total;
                if mass >= top_p as f64 {
                    kept = j + 1;
                    break;
                }
            }
            total = self.probs[..kept].iter().sum();
        }
        let mut u = rng.uniform() * total;
        for j in 0..kept {
            u -= self.probs[j];
            if u < 0.0 {
                return self.order[j];
            }
        }
        self.order[kept - 1]
    }
}

/// Index of the largest value; the first one on ties (as `torch.argmax`); NaN never wins.
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_value = f32::NEG_INFINITY;
    for (i, &v) in values.iter().enumerate() {
        if v > best_value {
            best = i;
            best_value = v;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_prefers_first_of_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5, 0.1]), 1);
    }

    #[test]
    fn same_seed_same_draws_and_top_k_is_respected() {
        let logits: Vec<f32> = (0..64).map(|i| ((i * 37) % 64) as f32 * 0.1).collect();
        let sampling = Sampling::Sample {
            temperature: 1.0,
            top_k: 5,
            top_p: 1.0,
        };
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            let mut sampler = Sampler::default();
            (0..200)
                .map(|_| sampler.pick(&logits, sampling, &mut rng))
                .collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert_ne!(a, draw(8));
        let mut top5: Vec<u32> = (0..64u32).collect();
        top5.sort_by(|&x, &y| logits[y as usize].partial_cmp(&logits[x as usize]).unwrap());
        top5.truncate(5);
        assert!(
            a.iter().all(|c| top5.contains(c)),
            "only the 5 best codes are drawn"
        );
        let distinct: std::collections::BTreeSet<_> = a.iter().collect();
        assert!(distinct.len() >= 4, "sampling spreads over the kept codes");
    }

    /// Partitioning off the top k orders them exactly as sorting the whole row does, ties
    /// (equal logits, kept in index order) included.
    #[test]
    fn top_k_order_equals_the_full_sort() {
        let mut rng = Rng::new(5);
        let logits: Vec<f32> = (0..2048)
            .map(|_| (rng.normal() * 4.0).round() as f32)
            .collect();
        let mut full: Vec<u32> = (0..2048).collect();
        full.sort_by(|&a, &b| {
            logits[b as usize]
                .partial_cmp(&logits[a as usize])
                .unwrap()
                .then(a.cmp(&b))
        });
        let mut sampler = Sampler::default();
        for top_k in [1, 7, 250, 2047, 2048, 0] {
            let sampling = Sampling::Sample {
                temperature: 1.0,
                top_k,
                top_p: 1.0,
            };
            sampler.pick(&logits, sampling, &mut Rng::new(1));
            let keep = if top_k == 0 { 2048 } else { top_k };
            assert_eq!(sampler.order[..keep], full[..keep], "top-k {top_k}");
        }
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // probabilities ∝ exp: 0.6652, 0.2447, 0.0900 → top_p 0.8 keeps the first two.
        let logits = [2.0f32, 1.0, 0.0];
        let sampling = Sampling::Sample {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.8,
        };
        let mut rng = Rng::new(1);
        let mut sampler = Sampler::default();
        let draws: Vec<u32> = (0..500)
            .map(|_| sampler.pick(&logits, sampling, &mut rng))
            .collect();
        assert!(!draws.contains(&2));
        let ones = draws.iter().filter(|&&c| c == 1).count() as f64 / 500.0;
        // 0.2447 / 0.9099 = 0.269; 3σ over 500 draws ≈ 0.06
        assert!((ones - 0.269).abs() < 0.06, "share of code 1: {ones}");
    }

    #[test]
    fn low_temperature_concentrates_on_the_best() {
        let logits = [1.0f32, 1.5, 0.5];
        let sampling = Sampling::Sample {
            temperature: 0.01,
            top_k: 0,
            top_p: 1.0,
        };
        let mut rng = Rng::new(3);
        let mut sampler = Sampler::default();
        assert!((0..100).all(|_| sampler.pick(&logits, sampling, &mut rng) == 1));
    }
}
