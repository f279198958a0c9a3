//! Layer weights w[b] for a steer (MusicRFM §4.2), from the per-layer validation scores of a
//! directions file (higher is better). Normalised score s̃ = (s − min) / (max − min), all ones
//! when every score is equal; the worst layer gets 0 and the best β.

/// Which blocks a steer touches and how much.
#[derive(Debug, Clone, PartialEq)]
pub enum LayerWeights {
    /// Every layer in the file, w = 1 (the paper's "naive").
    All,
    /// The K best-scoring layers, w = 1.
    TopK(usize),
    /// w = β · s̃
    Linear { beta: f32 },
    /// w = β · s̃^(1/τ) (the paper calls it "exponential"; τ → 1 gives linear, τ → 0 the best
    /// layer alone). The paper's setting: β = 1, τ = 0.95.
    Power { beta: f32, tau: f32 },
    /// These blocks (0-based decoder block indices), w = 1.
    List(Vec<usize>),
}

impl LayerWeights {
    /// The paper's recommended setting.
    pub const PAPER: LayerWeights = LayerWeights::Power {
        beta: 1.0,
        tau: 0.95,
    };

    /// The default for a directions file: the paper's power:0.95 where the file's scores tell
    /// layers apart, else every layer (a file without informative scores cannot rank them).
    pub fn default_for(file: &directions::DirectionsFile) -> LayerWeights {
        let informative = file
            .scores
            .iter()
            .any(|row| row.iter().any(|&s| s != row[0]));
        if informative {
            LayerWeights::PAPER
        } else {
            LayerWeights::All
        }
    }

    /// Weights for the rows of a file: `scores[r]` is row r's score, `blocks[r]` its block.
    pub fn weights(&self, scores: &[f32], blocks: &[usize]) -> Vec<f32> {
        let normalised = || {
            let lo = scores.iter().cloned().fold(f32::INFINITY, f32::min);
            let hi = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            scores
                .iter()
                .map(|&s| if hi > lo { (s - lo) / (hi - lo) } else { 1.0 })
                .collect::<Vec<f32>>()
        };
        match self {
            LayerWeights::All => vec![1.0; scores.len()],
            LayerWeights::TopK(k) => {
                let mut order: Vec<usize> = (0..scores.len()).collect();
                // best first; equal scores keep the earlier layer first
                order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
                let mut w = vec![0.0; scores.len()];
                for &r in order.iter().take(*k) {
                    w[r] = 1.0;
                }
                w
            }
            LayerWeights::Linear { beta } => normalised().into_iter().map(|s| beta * s).collect(),
            LayerWeights::Power { beta, tau } => normalised()
                .into_iter()
                .map(|s| beta * s.powf(1.0 / tau))
                .collect(),
            LayerWeights::List(list) => blocks
                .iter()
                .map(|b| if list.contains(b) { 1.0 } else { 0.0 })
                .collect(),
        }
    }

    /// Whether these weights need the file's scores.
    pub fn uses_scores(&self) -> bool {
        matches!(
            self,
            LayerWeights::TopK(_) | LayerWeights::Linear { .. } | LayerWeights::Power { .. }
        )
    }

    /// Parse the CLI form: `all` | `top:K` | `linear` | `power:TAU` | `list:b1,b2,…`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (head, rest) = text.split_once(':').unwrap_or((text, ""));
        match (head, rest) {
            ("all", "") => Ok(LayerWeights::All),
            ("linear", "") => Ok(LayerWeights::Linear { beta: 1.0 }),
            ("top", k) => match k.parse::<usize>() {
                Ok(k) if k > 0 => Ok(LayerWeights::TopK(k)),
                _ => Err(format!("--layers {text}: top:K needs a positive whole K")),
            },
            ("power", tau) => match tau.parse::<f32>() {
                Ok(tau) if tau > 0.0 && tau.is_finite() => {
                    Ok(LayerWeights::Power { beta: 1.0, tau })
                }
                _ => Err(format!("--layers {text}: power:TAU needs a positive TAU")),
            },
            ("list", list) => {
                let blocks: Result<Vec<usize>, _> =
                    list.split(',').map(|b| b.trim().parse::<usize>()).collect();
                match blocks {
                    Ok(blocks) if !blocks.is_empty() => Ok(LayerWeights::List(blocks)),
                    _ => Err(format!(
                        "--layers {text}: list: needs block indices like list:3,7,11"
                    )),
                }
            }
            _ => Err(format!(
                "--layers {text}: expected all, top:K, linear, power:TAU or list:b1,b2,…"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCORES: [f32; 5] = [0.6, 0.9, 0.5, 0.8, 0.7];
    const BLOCKS: [usize; 5] = [0, 1, 2, 3, 4];

    #[test]
    fn worst_layer_gets_zero_and_best_gets_beta() {
        for weights in [
            LayerWeights::Linear { beta: 1.0 },
            LayerWeights::Power {
                beta: 2.0,
                tau: 0.5,
            },
        ] {
            let w = weights.weights(&SCORES, &BLOCKS);
            assert_eq!(w[2], 0.0, "{weights:?}");
            let beta = if let LayerWeights::Power { beta, .. } = weights {
                beta
            } else {
                1.0
            };
            assert!((w[1] - beta).abs() < 1e-6, "{weights:?}");
        }
    }

    #[test]
    fn power_tends_to_linear_as_tau_tends_to_one() {
        let linear = LayerWeights::Linear { beta: 1.0 }.weights(&SCORES, &BLOCKS);
        let power = LayerWeights::Power {
            beta: 1.0,
            tau: 1.0,
        }
        .weights(&SCORES, &BLOCKS);
        let near = LayerWeights::Power {
            beta: 1.0,
            tau: 0.999,
        }
        .weights(&SCORES, &BLOCKS);
        for i in 0..5 {
            assert!((linear[i] - power[i]).abs() < 1e-6);
            assert!((linear[i] - near[i]).abs() < 1e-3);
        }
        // closed form: s̃ = (0.8 − 0.5) / 0.4 = 0.75; τ = 0.95 → 0.75^(1/0.95)
        let paper = LayerWeights::PAPER.weights(&SCORES, &BLOCKS);
        assert!((paper[3] - 0.75f32.powf(1.0 / 0.95)).abs() < 1e-6);
    }

    #[test]
    fn top_k_picks_the_best_k() {
        assert_eq!(
            LayerWeights::TopK(2).weights(&SCORES, &BLOCKS),
            vec![0.0, 1.0, 0.0, 1.0, 0.0]
        );
        assert_eq!(
            LayerWeights::TopK(9).weights(&SCORES, &BLOCKS),
            vec![1.0; 5]
        );
    }

    #[test]
    fn equal_scores_give_all_ones_and_lists_select_blocks() {
        assert_eq!(
            LayerWeights::Linear { beta: 1.0 }.weights(&[0.5; 3], &[0, 1, 2]),
            vec![1.0; 3]
        );
        assert_eq!(
            LayerWeights::List(vec![4, 1]).weights(&SCORES, &[1, 2, 4, 6, 8]),
            vec![1.0, 0.0, 1.0, 0.0, 0.0]
        );
    }

    #[test]
    fn parses_the_cli_forms() {
        assert_eq!(LayerWeights::parse("all"), Ok(LayerWeights::All));
        assert_eq!(LayerWeights::parse("top:12"), Ok(LayerWeights::TopK(12)));
        assert_eq!(
            LayerWeights::parse("linear"),
            Ok(LayerWeights::Linear { beta: 1.0 })
        );
        assert_eq!(
            LayerWeights::parse("power:0.95"),
            Ok(LayerWeights::Power {
                beta: 1.0,
                tau: 0.95
            })
        );
        assert_eq!(
            LayerWeights::parse("list:3,7,11"),
            Ok(LayerWeights::List(vec![3, 7, 11]))
        );
        for bad in ["top:0", "top:x", "power:-1", "list:", "list:a", "some"] {
            assert!(LayerWeights::parse(bad).is_err(), "{bad}");
        }
    }
}
