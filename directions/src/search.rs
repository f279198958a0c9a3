//! Seeded random hyper-parameter search (docs/algorithms.md §3): each sample draws λ log-uniform in
//! [1e-5, 10], L log-uniform in [1, 100], centring on/off and p uniform in [0.7, 1.4], fits an
//! RFM, and is scored on the validation split; the strictly best sample wins, failed fits are
//! skipped.

use faer::{Mat, MatRef, Par};

use crate::error::FitError;
use crate::kernel::{KernelParams, cross_kernel, project};
use crate::metrics::{balanced_accuracy, clamp_normalize, macro_ovr_auc, mse};
use crate::probe::ProbeKind;
use crate::rfm::{FitOptions, RfmFit, RfmParams, TuningMetric, argmax, fit_rfm};
use crate::rng::Rng;
use crate::scalar::Real;

/// Ranges of the random search.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SearchSpace {
    pub reg: (f64, f64),
    pub bandwidth: (f64, f64),
    pub exponent: (f64, f64),
    /// `None`: gradient centring drawn on/off uniformly (the paper); `Some(c)`: fixed.
    pub center_grads: Option<bool>,
}

impl Default for SearchSpace {
    fn default() -> Self {
        Self {
            reg: (1e-5, 10.0),
            bandwidth: (1.0, 100.0),
            exponent: (0.7, 1.4),
            center_grads: None,
        }
    }
}

/// Search settings; the paper uses 100 samples and 15 iterations.
#[derive(Clone, Copy, Debug)]
pub struct SearchConfig {
    pub samples: usize,
    pub iters: usize,
    pub seed: u64,
    pub space: SearchSpace,
    pub par: Par,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            samples: 100,
            iters: 15,
            seed: 0,
            space: SearchSpace::default(),
            par: Par::rayon(0),
        }
    }
}

impl SearchConfig {
    /// The `samples` hyper-parameter draws, in order.
    pub fn draws(&self) -> Vec<RfmParams> {
        let mut rng = Rng::new(self.seed);
        (0..self.samples)
            .map(|_| {
                let reg = rng.log_uniform(self.space.reg.0, self.space.reg.1);
                let bandwidth = rng.log_uniform(self.space.bandwidth.0, self.space.bandwidth.1);
                let coin = rng.below(2) == 1;
                let center_grads = self.space.center_grads.unwrap_or(coin);
                let exponent = rng.uniform_in(self.space.exponent.0, self.space.exponent.1);
                RfmParams::new(bandwidth, exponent, reg, center_grads, self.iters)
            })
            .collect()
    }
}

/// One sample of the search.
#[derive(Clone, Debug)]
pub struct Trial {
    pub params: RfmParams,
    /// Selection score (higher is better), or the failure.
    pub score: Result<f64, String>,
}

/// The winner and the record of every trial.
#[derive(Clone, Debug)]
pub struct SearchOutcome<T> {
    pub params: RfmParams,
    pub fit: RfmFit<T>,
    /// Selection score of the winner (higher is better: balanced accuracy, macro AUC, −MSE).
    pub score: f64,
    pub trials: Vec<Trial>,
}

/// The selection metric MusicRFM uses per probe kind, as a higher-is-better number:
/// binary → balanced accuracy of hard labels (f > 0.5), multiclass → macro one-vs-rest AUC of the
/// probabilities, regression → −MSE.
pub fn selection_score<T: Real>(
    kind: ProbeKind,
    pred: MatRef<'_, T>,
    target: MatRef<'_, T>,
) -> Result<f64, FitError> {
    let n = pred.nrows();
    let c = pred.ncols();
    match kind {
        ProbeKind::Binary => {
            let p: Vec<bool> = (0..n).map(|i| pred[(i, 0)].to_f64() > 0.5).collect();
            let t: Vec<bool> = (0..n).map(|i| target[(i, 0)].to_f64() > 0.5).collect();
            balanced_accuracy(&p, &t)
        }
        ProbeKind::Regression => {
            let p: Vec<f64> = (0..n).map(|i| pred[(i, 0)].to_f64()).collect();
            let t: Vec<f64> = (0..n).map(|i| target[(i, 0)].to_f64()).collect();
            mse(&p, &t).map(|v| -v)
        }
        ProbeKind::Multiclass { n_classes } => {
            let flat: Vec<f64> = (0..n)
                .flat_map(|i| (0..c).map(move |j| (i, j)))
                .map(|(i, j)| pred[(i, j)].to_f64())
                .collect();
            let (probas, _) = clamp_normalize(&flat, c);
            let labels: Vec<usize> = (0..n)
                .map(|i| argmax(&(0..c).map(|j| target[(i, j)].to_f64()).collect::<Vec<_>>()))
                .collect();
            macro_ovr_auc(&probas, &labels, n_classes)
        }
    }
}

/// Predictions of a fit's best predictor at new points.
pub fn predict_fit<T: Real>(
    fit: &RfmFit<T>,
    x_train: MatRef<'_, T>,
    z: MatRef<'_, T>,
    kernel: KernelParams,
    par: Par,
) -> Mat<T> {
    let proj = project(x_train, fit.m.as_ref(), par);
    let k = cross_kernel(z, x_train, &proj.sq_norms, fit.m.as_ref(), kernel, par);
    &k * &fit.alpha
}

/// Runs the search on prepared splits (`y` n × c as the probe kind expects).
pub fn search_hyperparameters<T: Real>(
    x: MatRef<'_, T>,
    y: MatRef<'_, T>,
    x_val: MatRef<'_, T>,
    y_val: MatRef<'_, T>,
    kind: ProbeKind,
    config: &SearchConfig,
) -> Result<SearchOutcome<T>, FitError> {
    let metric = if kind == ProbeKind::Regression {
        TuningMetric::Mse
    } else {
        TuningMetric::Auc
    };
    let options = FitOptions {
        record_history: false,
        agop_of_best: true,
        par: config.par,
    };
    let mut best: Option<(RfmParams, RfmFit<T>, f64)> = None;
    let mut trials = Vec::with_capacity(config.samples);
    for params in config.draws() {
        let scored = fit_rfm(x, y, x_val, y_val, &params, metric, options).and_then(|fit| {
            let pred = predict_fit(&fit, x, x_val, params.kernel, config.par);
            selection_score(kind, pred.as_ref(), y_val).map(|s| (fit, s))
        });
        match scored {
            Ok((fit, score)) => {
                trials.push(Trial {
                    params,
                    score: Ok(score),
                });
                if best.as_ref().is_none_or(|b| score > b.2) {
                    best = Some((params, fit, score));
                }
            }
            Err(e) => trials.push(Trial {
                params,
                score: Err(e.to_string()),
            }),
        }
    }
    match best {
        Some((params, fit, score)) => Ok(SearchOutcome {
            params,
            fit,
            score,
            trials,
        }),
        None => Err(FitError::AllSamplesFailed {
            samples: config.samples,
            last: trials
                .last()
                .and_then(|t| t.score.clone().err())
                .unwrap_or_else(|| "no samples".into()),
        }),
    }
}
