//! Training one concept probe end to end: split, targets, hyper-parameter search, test metrics,
//! and the concept direction(s) (docs/algorithms.md §2, §3).

use faer::{Mat, MatRef};

use crate::eigen::{align_sign, top_eigenvectors};
use crate::error::FitError;
use crate::metrics::{accuracy, auc, balanced_accuracy, clamp_normalize, macro_ovr_auc, mse, r2};
use crate::probe::{Probe, ProbeKind};
use crate::rfm::{RfmParams, argmax};
use crate::scalar::Real;
use crate::search::{SearchConfig, Trial, predict_fit, search_hyperparameters};
use crate::splits::{
    Split, balanced_binary_split, balanced_multiclass_split, mean_std, shuffled_split,
};

/// The labels of every row of the feature matrix.
#[derive(Clone, Copy, Debug)]
pub enum Labels<'a> {
    /// One class (true) vs the rest.
    Binary(&'a [bool]),
    /// A real target (e.g. BPM); z-scored with the training split's mean and std.
    Regression(&'a [f64]),
    /// Class ids below `n_classes`.
    Multiclass {
        labels: &'a [usize],
        n_classes: usize,
    },
}

/// Settings of one concept probe.
#[derive(Clone, Copy, Debug)]
pub struct ConceptConfig {
    pub search: SearchConfig,
    pub split_seed: u64,
    /// Number of eigenvectors kept (steering uses the first).
    pub n_components: usize,
}

impl Default for ConceptConfig {
    fn default() -> Self {
        Self {
            search: SearchConfig::default(),
            split_seed: 42,
            n_components: 1,
        }
    }
}

/// Test-split metrics (those that apply to the probe kind).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TestMetrics {
    pub auc: Option<f64>,
    pub balanced_accuracy: Option<f64>,
    pub accuracy: Option<f64>,
    pub mse: Option<f64>,
    pub r2: Option<f64>,
}

/// A trained concept probe and its direction(s).
#[derive(Clone, Debug)]
pub struct ConceptProbe<T> {
    pub probe: Probe<T>,
    /// Unit eigenvectors of the best predictor's AGOP, largest eigenvalue first; sign-aligned
    /// with the target for binary and regression probes.
    pub directions: Vec<Vec<f64>>,
    pub eigenvalues: Vec<f64>,
    /// Validation selection score (higher is better; −MSE for regression).
    pub val_score: f64,
    pub test: TestMetrics,
    pub split: Split,
    pub params: RfmParams,
    pub best_iter: usize,
    pub trials: Vec<Trial>,
}

fn rows<T: Real>(x: MatRef<'_, T>, idx: &[usize]) -> Mat<T> {
    Mat::from_fn(idx.len(), x.ncols(), |i, j| x[(idx[i], j)])
}

/// Splits, searches, and extracts the direction(s) of one concept from features `x` (one row
/// per clip).
pub fn train_concept_probe<T: Real>(
    x: MatRef<'_, T>,
    labels: Labels<'_>,
    config: &ConceptConfig,
) -> Result<ConceptProbe<T>, FitError> {
    let n = x.nrows();
    let n_labels = match labels {
        Labels::Binary(l) => l.len(),
        Labels::Regression(l) => l.len(),
        Labels::Multiclass { labels, .. } => labels.len(),
    };
    if n_labels != n {
        return Err(FitError::Shape {
            what: format!("{n_labels} labels for {n} feature rows"),
        });
    }
    let (kind, split, targets, mean, std) = match labels {
        Labels::Binary(l) => {
            let split = balanced_binary_split(l, config.split_seed)?;
            let t: Vec<Vec<f64>> = l.iter().map(|&b| vec![f64::from(u8::from(b))]).collect();
            (ProbeKind::Binary, split, t, 0.0, 1.0)
        }
        Labels::Regression(v) => {
            let split = shuffled_split(n, config.split_seed)?;
            let (mean, std) = mean_std(v, &split.train);
            if std.is_nan() || std <= 0.0 {
                return Err(FitError::Metric {
                    metric: "z-score",
                    reason: "the training target is constant".into(),
                });
            }
            let t = v.iter().map(|&y| vec![(y - mean) / std]).collect();
            (ProbeKind::Regression, split, t, mean, std)
        }
        Labels::Multiclass { labels, n_classes } => {
            let split = balanced_multiclass_split(labels, n_classes, config.split_seed)?;
            let t = labels
                .iter()
                .map(|&l| {
                    (0..n_classes)
                        .map(|c| f64::from(u8::from(c == l)))
                        .collect()
                })
                .collect();
            (ProbeKind::Multiclass { n_classes }, split, t, 0.0, 1.0)
        }
    };
    let c = kind.n_outputs();
    let target_rows =
        |idx: &[usize]| Mat::<T>::from_fn(idx.len(), c, |i, j| T::from_f64(targets[idx[i]][j]));
    let (x_tr, y_tr) = (rows(x, &split.train), target_rows(&split.train));
    let (x_va, y_va) = (rows(x, &split.val), target_rows(&split.val));
    let (x_te, y_te) = (rows(x, &split.test), target_rows(&split.test));

    let outcome = search_hyperparameters(
        x_tr.as_ref(),
        y_tr.as_ref(),
        x_va.as_ref(),
        y_va.as_ref(),
        kind,
        &config.search,
    )?;
    let params = outcome.params;
    let pred = predict_fit(
        &outcome.fit,
        x_tr.as_ref(),
        x_te.as_ref(),
        params.kernel,
        config.search.par,
    );
    let test = test_metrics(kind, pred.as_ref(), y_te.as_ref())?;

    let k = config.n_components.clamp(1, x.ncols());
    let (eigenvalues, mut directions) = top_eigenvectors(outcome.fit.agop_best.as_ref(), k)?;
    if c == 1 {
        let y: Vec<f64> = (0..y_tr.nrows()).map(|i| y_tr[(i, 0)].to_f64()).collect();
        for v in &mut directions {
            align_sign(v, x_tr.as_ref(), &y);
        }
    }
    let best_iter = outcome.fit.best_iter;
    let probe = Probe::new(
        kind,
        params.kernel,
        params.reg,
        params.center_grads,
        outcome.fit.m,
        x_tr,
        outcome.fit.alpha,
        mean,
        std,
    )?;
    Ok(ConceptProbe {
        probe,
        directions,
        eigenvalues,
        val_score: outcome.score,
        test,
        split,
        params,
        best_iter,
        trials: outcome.trials,
    })
}

/// AUC, balanced accuracy and accuracy for classification; MSE and R² (z-scored units) for
/// regression.
pub fn test_metrics<T: Real>(
    kind: ProbeKind,
    pred: MatRef<'_, T>,
    target: MatRef<'_, T>,
) -> Result<TestMetrics, FitError> {
    let n = pred.nrows();
    let c = pred.ncols();
    let p: Vec<f64> = (0..n)
        .flat_map(|i| (0..c).map(move |j| (i, j)))
        .map(|(i, j)| pred[(i, j)].to_f64())
        .collect();
    let t: Vec<f64> = (0..n)
        .flat_map(|i| (0..c).map(move |j| (i, j)))
        .map(|(i, j)| target[(i, j)].to_f64())
        .collect();
    let (probas, cols) = clamp_normalize(&p, c);
    Ok(match kind {
        ProbeKind::Binary => {
            let truth: Vec<bool> = t.iter().map(|&v| v > 0.5).collect();
            let hard: Vec<bool> = p.iter().map(|&v| v > 0.5).collect();
            let scores: Vec<f64> = probas.iter().skip(1).step_by(2).copied().collect();
            TestMetrics {
                auc: Some(auc(&scores, &truth)?),
                balanced_accuracy: Some(balanced_accuracy(&hard, &truth)?),
                accuracy: Some(accuracy(&hard, &truth)?),
                ..Default::default()
            }
        }
        ProbeKind::Regression => TestMetrics {
            mse: Some(mse(&p, &t)?),
            r2: Some(r2(&p, &t)?),
            ..Default::default()
        },
        ProbeKind::Multiclass { n_classes } => {
            let truth: Vec<usize> = t.chunks_exact(c).map(argmax).collect();
            let hard: Vec<usize> = probas.chunks_exact(cols).map(argmax).collect();
            TestMetrics {
                auc: Some(macro_ovr_auc(&probas, &truth, n_classes)?),
                accuracy: Some(accuracy(&hard, &truth)?),
                ..Default::default()
            }
        }
    })
}
