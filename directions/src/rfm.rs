//! One RFM fit, as xRFM's `RFM.fit` with `early_stop_rfm`, `return_best_params` and
//! `get_agop_best_model` (docs/algorithms.md §3):
//!
//! ```text
//! M ← I
//! for i in 0..T: fit α with M; score on val; keep the strictly best (α, M, i);
//!                stop if the score is worse than best by the factor 1.1; M ← AGOP(α, M)/max
//! if not stopped: fit α with the T-th M, score, update best (index T)
//! agop_best ← normalised AGOP of the best predictor
//! ```

use faer::{Mat, MatRef, Par};

use crate::agop::{AGOP_BATCH, AGOP_POINTS, AgopScratch, batched_agop, normalize_by_max};
use crate::error::FitError;
use crate::kernel::{
    KernelParams, cross_kernel_into, mirror_lower, project_into, reuse_or_zeros, times_m,
    train_kernel,
};
use crate::krr::{SolveMethod, solve_krr};
use crate::metrics::{auc, clamp_normalize, macro_ovr_auc, mse};
use crate::scalar::Real;

/// The validation metric that selects the iteration inside a fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TuningMetric {
    /// ROC AUC of the clamp-normalised probabilities (macro one-vs-rest with several outputs);
    /// maximised.
    Auc,
    /// Mean squared error of the raw outputs; minimised.
    Mse,
}

impl TuningMetric {
    fn maximize(self) -> bool {
        self == TuningMetric::Auc
    }

    /// Scores raw predictions (n × c) against targets (n × c, 0/1 or one-hot for AUC).
    pub fn score<T: Real>(
        self,
        pred: MatRef<'_, T>,
        target: MatRef<'_, T>,
    ) -> Result<f64, FitError> {
        let (n, c) = (pred.nrows(), pred.ncols());
        let row_major = |m: MatRef<'_, T>| -> Vec<f64> {
            (0..n)
                .flat_map(|i| (0..c).map(move |j| m[(i, j)].to_f64()))
                .collect()
        };
        let p = row_major(pred);
        let t = row_major(target);
        match self {
            TuningMetric::Mse => mse(&p, &t),
            TuningMetric::Auc => {
                let (probas, cols) = clamp_normalize(&p, c);
                if c == 1 {
                    let scores: Vec<f64> = probas.iter().skip(1).step_by(2).copied().collect();
                    let labels: Vec<bool> = t.iter().map(|&v| v > 0.5).collect();
                    auc(&scores, &labels)
                } else {
                    let labels: Vec<usize> = t.chunks_exact(c).map(argmax).collect();
                    macro_ovr_auc(&probas, &labels, cols)
                }
            }
        }
    }
}

pub(crate) fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

/// Hyper-parameters of one fit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RfmParams {
    pub kernel: KernelParams,
    /// Ridge λ added to the kernel diagonal.
    pub reg: f64,
    /// Subtract the pooled mean gradient before the outer products.
    pub center_grads: bool,
    /// Number of AGOP iterations T (T + 1 predictors are fitted without early stop).
    pub iters: usize,
    /// Stop when the validation score is worse than the best by `early_stop_multiplier`.
    pub early_stop: bool,
    pub early_stop_multiplier: f64,
}

impl RfmParams {
    /// The reference defaults around the given kernel, ridge and centring: early stop ×1.1.
    pub fn new(bandwidth: f64, exponent: f64, reg: f64, center_grads: bool, iters: usize) -> Self {
        Self {
            kernel: KernelParams {
                bandwidth,
                exponent,
            },
            reg,
            center_grads,
            iters,
            early_stop: true,
            early_stop_multiplier: 1.1,
        }
    }

    fn validate(&self) -> Result<(), FitError> {
        let bad = |name, value: f64, reason| {
            Err(FitError::HyperParameter {
                name,
                value,
                reason,
            })
        };
        if !(self.kernel.bandwidth > 0.0 && self.kernel.bandwidth.is_finite()) {
            return bad(
                "bandwidth",
                self.kernel.bandwidth,
                "must be positive and finite",
            );
        }
        if !(self.kernel.exponent > 0.0 && self.kernel.exponent.is_finite()) {
            return bad(
                "exponent",
                self.kernel.exponent,
                "must be positive and finite",
            );
        }
        if !(self.reg >= 0.0 && self.reg.is_finite()) {
            return bad("reg", self.reg, "must be non-negative and finite");
        }
        if self.early_stop_multiplier.is_nan() || self.early_stop_multiplier < 1.0 {
            return bad(
                "early_stop_multiplier",
                self.early_stop_multiplier,
                "must be at least 1",
            );
        }
        Ok(())
    }
}

/// Options that do not change the result.
#[derive(Clone, Copy, Debug)]
pub struct FitOptions {
    /// Keep M after every AGOP update (parity tests, diagnostics).
    pub record_history: bool,
    /// Compute the AGOP of the best predictor (needed for directions).
    pub agop_of_best: bool,
    /// faer/rayon parallelism.
    pub par: Par,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            record_history: false,
            agop_of_best: true,
            par: Par::rayon(0),
        }
    }
}

/// A fitted RFM: the best predictor and what the directions need.
#[derive(Clone, Debug)]
pub struct RfmFit<T> {
    /// M of the best predictor (d × d).
    pub m: Mat<T>,
    /// α of the best predictor (n × c).
    pub alpha: Mat<T>,
    /// Index of the best predictor (0 = identity M; `iters` = the final fit).
    pub best_iter: usize,
    /// Its validation score under the tuning metric.
    pub best_score: f64,
    /// Validation score of every predictor fitted, in order.
    pub scores: Vec<f64>,
    /// Normalised AGOP of the best predictor (empty when not asked for).
    pub agop_best: Mat<T>,
    /// M after each AGOP update (when recorded).
    pub m_history: Vec<Mat<T>>,
    /// How each predictor's system was solved.
    pub solves: Vec<SolveMethod>,
}

struct Predictor<T> {
    alpha: Mat<T>,
    score: f64,
    method: SolveMethod,
    /// X·M and the gradient coefficients, kept to compute this predictor's AGOP.
    xm: Mat<T>,
    coef: Mat<T>,
}

/// Training and validation data of one fit.
#[derive(Clone, Copy)]
struct Data<'a, T> {
    x: MatRef<'a, T>,
    y: MatRef<'a, T>,
    x_val: MatRef<'a, T>,
    y_val: MatRef<'a, T>,
}

/// The n×n and n×d matrices of one predictor, handed on to the next once its AGOP is done: a
/// fresh 16 MB matrix for each costs its page faults and zeroing every time.
#[derive(Default)]
struct Buffers<T> {
    k: Option<Mat<T>>,
    coef: Option<Mat<T>>,
    xm: Option<Mat<T>>,
    /// X_val·M and K(X_val, X)
    val_xm: Option<Mat<T>>,
    val_k: Option<Mat<T>>,
    agop: AgopScratch<T>,
}

impl<T: Real> Buffers<T> {
    /// Keeps a predictor's matrices for the next one.
    fn recycle(&mut self, p: Predictor<T>) {
        self.xm = Some(p.xm);
        self.coef = Some(p.coef);
    }
}

fn fit_predictor<T: Real>(
    data: Data<'_, T>,
    m: MatRef<'_, T>,
    params: &RfmParams,
    metric: TuningMetric,
    par: Par,
    buffers: &mut Buffers<T>,
) -> Result<Predictor<T>, FitError> {
    let Data { x, y, x_val, y_val } = data;
    let (n, d, n_val) = (x.nrows(), x.ncols(), x_val.nrows());
    let mut xm = reuse_or_zeros(&mut buffers.xm, n, d);
    times_m(x, m, xm.as_mut(), par);
    let mut k = reuse_or_zeros(&mut buffers.k, n, n);
    let mut coef = reuse_or_zeros(&mut buffers.coef, n, n);
    let sq_norms = train_kernel(x, xm.as_ref(), params.kernel, &mut k, &mut coef, par);
    let val_xm = reuse_or_zeros(&mut buffers.val_xm, n_val, d);
    let mut k_val = reuse_or_zeros(&mut buffers.val_k, n_val, n);
    let xm_ref = xm.as_ref();
    // The Cholesky factorisation keeps two threads only partly busy; the validation kernel
    // (which needs M alone) runs beside it instead of after it. κ's mirror follows the
    // factorisation: its rayon tasks go to whichever thread is free first.
    let (solved, val_xm) = beside(
        par,
        |par| {
            let solved = solve_krr(&mut k, params.reg, y, par, |k| {
                train_kernel(x, xm_ref, params.kernel, k, &mut coef, par);
                mirror_lower(k);
            });
            mirror_lower(&mut coef);
            solved
        },
        |par| {
            let val_proj = project_into(x_val, m, val_xm, par);
            cross_kernel_into(&val_proj, x, &sq_norms, params.kernel, &mut k_val, par);
            val_proj.xm
        },
    );
    let (alpha, method) = solved?;
    buffers.k = Some(k);
    let pred = &k_val * &alpha;
    buffers.val_xm = Some(val_xm);
    buffers.val_k = Some(k_val);
    let score = metric.score(pred.as_ref(), y_val)?;
    Ok(Predictor {
        alpha,
        score,
        method,
        xm,
        coef,
    })
}

/// Runs `a` and `b` side by side, each with half of `par`'s threads, or one after the other
/// where there is no second thread.
fn beside<RA: Send, RB: Send>(
    par: Par,
    a: impl FnOnce(Par) -> RA + Send,
    b: impl FnOnce(Par) -> RB + Send,
) -> (RA, RB) {
    let threads = par.degree();
    if threads < 2 {
        return (a(par), b(par));
    }
    let share = |t: usize| if t == 1 { Par::Seq } else { Par::rayon(t) };
    rayon::join(|| a(share(threads - threads / 2)), || b(share(threads / 2)))
}

/// The normalised AGOP of predictor `p` into `out` (d×d, overwritten).
fn normalized_agop<T: Real>(
    p: &Predictor<T>,
    center: bool,
    par: Par,
    scratch: &mut AgopScratch<T>,
    out: &mut Mat<T>,
) {
    let (xm, coef, alpha) = (p.xm.as_ref(), p.coef.as_ref(), p.alpha.as_ref());
    let sizes = (AGOP_POINTS, AGOP_BATCH);
    batched_agop(xm, coef, alpha, center, sizes, par, scratch, out);
    normalize_by_max(out);
}

/// Fits one RFM on (x, y) with validation set (x_val, y_val). Rows are samples; `y` is n × c.
pub fn fit_rfm<T: Real>(
    x: MatRef<'_, T>,
    y: MatRef<'_, T>,
    x_val: MatRef<'_, T>,
    y_val: MatRef<'_, T>,
    params: &RfmParams,
    metric: TuningMetric,
    options: FitOptions,
) -> Result<RfmFit<T>, FitError> {
    params.validate()?;
    let (n, d) = (x.nrows(), x.ncols());
    let shape_err = |what: String| Err(FitError::Shape { what });
    if y.nrows() != n || y.ncols() == 0 {
        return shape_err(format!(
            "y is {}×{} for {n} training rows",
            y.nrows(),
            y.ncols()
        ));
    }
    if x_val.ncols() != d || y_val.nrows() != x_val.nrows() || y_val.ncols() != y.ncols() {
        return shape_err(format!(
            "validation x {}×{} / y {}×{} do not match training x {n}×{d} / y {n}×{}",
            x_val.nrows(),
            x_val.ncols(),
            y_val.nrows(),
            y_val.ncols(),
            y.ncols()
        ));
    }
    if n < 2 || x_val.nrows() == 0 {
        return Err(FitError::TooFewSamples {
            what: format!("{n} training and {} validation rows", x_val.nrows()),
        });
    }
    let par = options.par;
    let data = Data { x, y, x_val, y_val };
    let better = |s: f64, best: f64| {
        if metric.maximize() {
            s > best
        } else {
            s < best
        }
    };
    let stops = |s: f64, best: f64| {
        if metric.maximize() {
            s < best / params.early_stop_multiplier
        } else {
            s > best * params.early_stop_multiplier
        }
    };

    let mut m = Mat::<T>::identity(d, d);
    let mut best: Option<(Mat<T>, Mat<T>, usize, f64)> = None;
    let mut best_agop: Option<Mat<T>> = None;
    let mut best_predictor_pending: Option<Predictor<T>> = None;
    let mut scores = Vec::new();
    let mut solves = Vec::new();
    let mut history = Vec::new();
    let mut early_stopped = false;
    let mut buffers = Buffers::default();

    for i in 0..params.iters {
        let p = fit_predictor(data, m.as_ref(), params, metric, par, &mut buffers)?;
        scores.push(p.score);
        solves.push(p.method);
        let is_best = best.as_ref().is_none_or(|b| better(p.score, b.3));
        if is_best {
            best = Some((p.alpha.clone(), m.clone(), i, p.score));
        }
        let best_score = best.as_ref().map_or(p.score, |b| b.3);
        if params.early_stop && stops(p.score, best_score) {
            early_stopped = true;
            break;
        }
        // M ← the AGOP, over the M this predictor was fitted with and no longer needs
        normalized_agop(&p, params.center_grads, par, &mut buffers.agop, &mut m);
        if is_best {
            best_agop = Some(m.clone());
        }
        if options.record_history {
            history.push(m.clone());
        }
        buffers.recycle(p);
    }
    if !early_stopped {
        let p = fit_predictor(data, m.as_ref(), params, metric, par, &mut buffers)?;
        scores.push(p.score);
        solves.push(p.method);
        if best.as_ref().is_none_or(|b| better(p.score, b.3)) {
            best = Some((p.alpha.clone(), m.clone(), params.iters, p.score));
            best_agop = None;
            best_predictor_pending = Some(p);
        }
    }
    let Some((alpha, m_best, best_iter, best_score)) = best else {
        return Err(FitError::Metric {
            metric: "validation",
            reason: "no predictor produced a finite score".into(),
        });
    };
    let agop_best = if !options.agop_of_best {
        Mat::zeros(0, 0)
    } else if let Some(g) = best_agop {
        g
    } else {
        let p = match best_predictor_pending {
            Some(p) => p,
            // unreachable by construction (the best predictor either got its AGOP in the loop
            // or is the final one); recompute rather than panic
            None => fit_predictor(data, m_best.as_ref(), params, metric, par, &mut buffers)?,
        };
        let mut g = Mat::zeros(d, d);
        normalized_agop(&p, params.center_grads, par, &mut buffers.agop, &mut g);
        g
    };
    Ok(RfmFit {
        m: m_best,
        alpha,
        best_iter,
        best_score,
        scores,
        agop_best,
        m_history: history,
        solves,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{cross_kernel, project};
    use crate::test_support::{Fixture, rel_err};

    fn run_fixture(name: &str) {
        let fx = Fixture::load(name);
        let params = RfmParams {
            kernel: KernelParams {
                bandwidth: fx.f64("bandwidth"),
                exponent: fx.f64("exponent"),
            },
            reg: fx.f64("reg"),
            center_grads: fx.params["center_grads"].as_bool().expect("center_grads"),
            iters: fx.f64("iters") as usize,
            early_stop: fx.params["early_stop"].as_bool().expect("early_stop"),
            early_stop_multiplier: 1.1,
        };
        let metric = if fx.params["metric"] == "mse" {
            TuningMetric::Mse
        } else {
            TuningMetric::Auc
        };
        let (x, y, xv, yv) = (
            fx.mat("x_train"),
            fx.mat("y_train"),
            fx.mat("x_val"),
            fx.mat("y_val"),
        );
        // two threads also run the Cholesky factorisation beside the validation kernel
        for par in [Par::Seq, Par::rayon(2)] {
            let name = format!("{name} ({par:?})");
            let options = FitOptions {
                record_history: true,
                agop_of_best: true,
                par,
            };
            let fit = fit_rfm(
                x.as_ref(),
                y.as_ref(),
                xv.as_ref(),
                yv.as_ref(),
                &params,
                metric,
                options,
            )
            .expect("fit");
            let n_m = fx.f64("n_m_iters") as usize;
            assert_eq!(fit.m_history.len(), n_m, "{name}: number of AGOP updates");
            for (i, m) in fit.m_history.iter().enumerate() {
                let err = rel_err(m.as_ref(), fx.mat(&format!("m_iter_{i}")).as_ref());
                assert!(
                    err <= 1e-4,
                    "{name}: M after iteration {i}: relative error {err:e}"
                );
                eprintln!("{name}: M iter {i} rel err {err:e}");
            }
            assert_eq!(
                fit.best_iter,
                fx.f64("best_iter") as usize,
                "{name}: best iteration"
            );
            let err = rel_err(fit.m.as_ref(), fx.mat("m_best").as_ref());
            assert!(err <= 1e-4, "{name}: best M relative error {err:e}");
            let err = rel_err(fit.alpha.as_ref(), fx.mat("alpha_best").as_ref());
            assert!(err <= 1e-4, "{name}: best alpha relative error {err:e}");
            eprintln!("{name}: alpha rel err {err:e}");
            let probe_pred = {
                let proj = project(x.as_ref(), fit.m.as_ref(), Par::Seq);
                let kv = cross_kernel(
                    xv.as_ref(),
                    x.as_ref(),
                    &proj.sq_norms,
                    fit.m.as_ref(),
                    params.kernel,
                    Par::Seq,
                );
                &kv * &fit.alpha
            };
            let err = rel_err(probe_pred.as_ref(), fx.mat("pred_val").as_ref());
            assert!(err <= 1e-4, "{name}: predictions relative error {err:e}");
            eprintln!("{name}: predictions rel err {err:e}");
            let err = rel_err(fit.agop_best.as_ref(), fx.mat("agop_best").as_ref());
            assert!(err <= 1e-4, "{name}: AGOP of best relative error {err:e}");
            let want = fx.f64("val_score");
            assert!(
                (fit.best_score - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{name}: val score {} vs {want}",
                fit.best_score
            );
        }
    }

    #[test]
    fn binary_fit_matches_xrfm() {
        run_fixture("binary");
    }

    #[test]
    fn regression_fit_with_early_stop_matches_xrfm() {
        run_fixture("regression");
    }

    #[test]
    fn multiclass_fit_matches_xrfm() {
        run_fixture("multiclass");
    }

    #[test]
    fn bad_hyper_parameters_are_rejected() {
        let x = Mat::<f64>::zeros(4, 2);
        let y = Mat::<f64>::zeros(4, 1);
        let params = RfmParams::new(-1.0, 1.0, 1e-3, false, 2);
        let err = fit_rfm(
            x.as_ref(),
            y.as_ref(),
            x.as_ref(),
            y.as_ref(),
            &params,
            TuningMetric::Mse,
            FitOptions::default(),
        )
        .expect_err("negative bandwidth");
        assert!(err.to_string().contains("bandwidth"), "{err}");
    }
}
