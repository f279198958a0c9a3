//! Evaluation metrics: ROC AUC (binary and macro one-vs-rest), balanced accuracy, accuracy,
//! MSE and R², plus xRFM's clamp-and-normalise "probabilities".

use crate::error::FitError;

fn undefined(metric: &'static str, reason: impl Into<String>) -> FitError {
    FitError::Metric {
        metric,
        reason: reason.into(),
    }
}

/// ROC AUC of `scores` against binary `labels` (Mann–Whitney with average ranks for ties,
/// as scikit-learn's `roc_auc_score`).
pub fn auc(scores: &[f64], labels: &[bool]) -> Result<f64, FitError> {
    if scores.len() != labels.len() {
        return Err(undefined(
            "auc",
            format!("{} scores for {} labels", scores.len(), labels.len()),
        ));
    }
    if scores.iter().any(|s| !s.is_finite()) {
        return Err(undefined("auc", "a score is not finite"));
    }
    let n_pos = labels.iter().filter(|&&l| l).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return Err(undefined("auc", "only one class is present"));
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_pos = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        // ranks start..end (1-based: start+1..=end) share their average
        let avg_rank = (start + 1 + end) as f64 / 2.0;
        rank_sum_pos += avg_rank * order[start..end].iter().filter(|&&i| labels[i]).count() as f64;
        start = end;
    }
    let n_pos_f = n_pos as f64;
    Ok((rank_sum_pos - n_pos_f * (n_pos_f + 1.0) / 2.0) / (n_pos_f * n_neg as f64))
}

/// Macro-averaged one-vs-rest AUC; `probas` is row-major n × n_classes.
pub fn macro_ovr_auc(probas: &[f64], labels: &[usize], n_classes: usize) -> Result<f64, FitError> {
    if probas.len() != labels.len() * n_classes {
        return Err(undefined(
            "macro_ovr_auc",
            "probability matrix does not match the labels",
        ));
    }
    let mut total = 0.0;
    for c in 0..n_classes {
        let scores: Vec<f64> = probas.iter().skip(c).step_by(n_classes).copied().collect();
        let is_c: Vec<bool> = labels.iter().map(|&l| l == c).collect();
        total += auc(&scores, &is_c)?;
    }
    Ok(total / n_classes as f64)
}

/// (TPR + TNR) / 2 of hard predictions; equals the ROC AUC of 0/1 predictions, which is what
/// MusicRFM's binary hyper-parameter search maximises.
pub fn balanced_accuracy(predicted: &[bool], truth: &[bool]) -> Result<f64, FitError> {
    if predicted.len() != truth.len() {
        return Err(undefined("balanced_accuracy", "length mismatch"));
    }
    let (mut tp, mut tn, mut pos, mut neg) = (0usize, 0usize, 0usize, 0usize);
    for (&p, &t) in predicted.iter().zip(truth) {
        if t {
            pos += 1;
            tp += usize::from(p);
        } else {
            neg += 1;
            tn += usize::from(!p);
        }
    }
    if pos == 0 || neg == 0 {
        return Err(undefined("balanced_accuracy", "only one class is present"));
    }
    Ok((tp as f64 / pos as f64 + tn as f64 / neg as f64) / 2.0)
}

/// Fraction of equal entries.
pub fn accuracy<L: PartialEq>(predicted: &[L], truth: &[L]) -> Result<f64, FitError> {
    if predicted.len() != truth.len() || truth.is_empty() {
        return Err(undefined("accuracy", "length mismatch or no samples"));
    }
    let hits = predicted.iter().zip(truth).filter(|(p, t)| p == t).count();
    Ok(hits as f64 / truth.len() as f64)
}

/// Mean squared error.
pub fn mse(predicted: &[f64], truth: &[f64]) -> Result<f64, FitError> {
    if predicted.len() != truth.len() || truth.is_empty() {
        return Err(undefined("mse", "length mismatch or no samples"));
    }
    Ok(predicted
        .iter()
        .zip(truth)
        .map(|(p, t)| (p - t) * (p - t))
        .sum::<f64>()
        / truth.len() as f64)
}

/// Coefficient of determination 1 − SS_res / SS_tot.
pub fn r2(predicted: &[f64], truth: &[f64]) -> Result<f64, FitError> {
    let n = truth.len() as f64;
    let mean = truth.iter().sum::<f64>() / n;
    let ss_tot: f64 = truth.iter().map(|t| (t - mean) * (t - mean)).sum();
    if ss_tot == 0.0 {
        return Err(undefined("r2", "the target is constant"));
    }
    Ok(1.0 - mse(predicted, truth)? * n / ss_tot)
}

/// Pearson correlation (NaN when either side is constant).
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    sab / (saa * sbb).sqrt()
}

/// xRFM's probabilities: one output column f becomes [1 − f, f]; entries are clamped to
/// [1e-3, 1 − 1e-3] and each row divided by its sum (not a softmax). Input and output are
/// row-major; returns (probabilities, number of columns).
pub fn clamp_normalize(raw: &[f64], n_outputs: usize) -> (Vec<f64>, usize) {
    const EPS: f64 = 1e-3;
    let cols = if n_outputs == 1 { 2 } else { n_outputs };
    let mut out = Vec::with_capacity(raw.len() / n_outputs * cols);
    for row in raw.chunks_exact(n_outputs) {
        let start = out.len();
        if n_outputs == 1 {
            out.push((1.0 - row[0]).clamp(EPS, 1.0 - EPS));
            out.push(row[0].clamp(EPS, 1.0 - EPS));
        } else {
            out.extend(row.iter().map(|v| v.clamp(EPS, 1.0 - EPS)));
        }
        let sum: f64 = out[start..].iter().sum();
        out[start..].iter_mut().for_each(|v| *v /= sum);
    }
    (out, cols)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_handles_ties_like_sklearn() {
        // sklearn: roc_auc_score([0,0,1,1,1],[0.1,0.4,0.4,0.8,0.4]) = 0.8333…
        let v = auc(
            &[0.1, 0.4, 0.4, 0.8, 0.4],
            &[false, false, true, true, true],
        )
        .expect("auc");
        assert!((v - 5.0 / 6.0).abs() < 1e-12, "{v}");
        assert!(auc(&[0.3, 0.2], &[true, true]).is_err());
    }

    #[test]
    fn balanced_accuracy_equals_auc_of_hard_labels() {
        let truth = [true, true, true, false, false];
        let pred = [true, false, true, false, true];
        let hard: Vec<f64> = pred.iter().map(|&p| f64::from(u8::from(p))).collect();
        let ba = balanced_accuracy(&pred, &truth).expect("ba");
        assert!((ba - (2.0 / 3.0 + 0.5) / 2.0).abs() < 1e-12);
        assert!((ba - auc(&hard, &truth).expect("auc")).abs() < 1e-12);
    }

    #[test]
    fn regression_metrics() {
        assert_eq!(mse(&[1.0, 2.0], &[1.0, 4.0]).expect("mse"), 2.0);
        let r = r2(&[1.0, 2.0, 3.0], &[1.0, 2.0, 4.0]).expect("r2");
        assert!((r - (1.0 - 1.0 / (14.0 / 3.0))).abs() < 1e-12, "{r}");
        assert!(
            (pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.5]) - 0.997_948_715_788_673_3).abs() < 1e-12
        );
        assert_eq!(accuracy(&[1, 2, 3], &[1, 2, 0]).expect("acc"), 2.0 / 3.0);
    }

    #[test]
    fn probabilities_clamp_then_normalise() {
        let (p, cols) = clamp_normalize(&[1.5, 0.25], 1);
        assert_eq!(cols, 2);
        assert!((p[0] - 1e-3 / 1.0).abs() < 1e-12 && (p[1] - 0.999).abs() < 1e-12);
        assert!((p[3] - 0.25).abs() < 1e-12);
        let (q, _) = clamp_normalize(&[0.5, 0.5, -1.0], 3);
        assert!((q[0] - 0.5 / 1.001).abs() < 1e-12);
    }
}
