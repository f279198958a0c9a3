//! Train/validation/test splits and targets, as MusicRFM's example scripts (docs/algorithms.md §2).

use crate::error::FitError;
use crate::rng::Rng;

/// Row indices of the three splits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub test: Vec<usize>,
}

/// ⌊0.7n⌋, ⌊0.15n⌋, the rest.
fn split_sizes(n: usize) -> (usize, usize) {
    (n * 70 / 100, n * 15 / 100)
}

/// Balanced one-vs-rest: n = min(#pos, #neg) samples drawn from each class, each class cut
/// 70/15/15, the two halves concatenated and each split shuffled.
pub fn balanced_binary_split(positive: &[bool], seed: u64) -> Result<Split, FitError> {
    let mut rng = Rng::new(seed);
    let mut pos: Vec<usize> = (0..positive.len()).filter(|&i| positive[i]).collect();
    let mut neg: Vec<usize> = (0..positive.len()).filter(|&i| !positive[i]).collect();
    let n = pos.len().min(neg.len());
    let (n_train, n_val) = split_sizes(n);
    if n_train < 2 || n_val < 1 || n - n_train - n_val < 1 {
        return Err(FitError::TooFewSamples {
            what: format!(
                "{} positives and {} negatives: need at least 7 of each",
                pos.len(),
                neg.len()
            ),
        });
    }
    rng.shuffle(&mut pos);
    rng.shuffle(&mut neg);
    let mut split = Split {
        train: Vec::new(),
        val: Vec::new(),
        test: Vec::new(),
    };
    for class in [&pos[..n], &neg[..n]] {
        split.train.extend_from_slice(&class[..n_train]);
        split
            .val
            .extend_from_slice(&class[n_train..n_train + n_val]);
        split.test.extend_from_slice(&class[n_train + n_val..]);
    }
    rng.shuffle(&mut split.train);
    rng.shuffle(&mut split.val);
    rng.shuffle(&mut split.test);
    Ok(split)
}

/// Shuffle all rows, then 70/15/15 (regression).
pub fn shuffled_split(n: usize, seed: u64) -> Result<Split, FitError> {
    let mut rng = Rng::new(seed);
    let mut all: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut all);
    let (n_train, n_val) = split_sizes(n);
    if n_train < 2 || n_val < 1 || n - n_train - n_val < 1 {
        return Err(FitError::TooFewSamples {
            what: format!("{n} rows: need at least 7"),
        });
    }
    Ok(Split {
        train: all[..n_train].to_vec(),
        val: all[n_train..n_train + n_val].to_vec(),
        test: all[n_train + n_val..].to_vec(),
    })
}

/// Balanced multiclass: the smallest class count drawn from every class, pooled, shuffled,
/// then 70/15/15 over the pool.
pub fn balanced_multiclass_split(
    labels: &[usize],
    n_classes: usize,
    seed: u64,
) -> Result<Split, FitError> {
    let mut rng = Rng::new(seed);
    let mut per_class: Vec<Vec<usize>> = vec![Vec::new(); n_classes];
    for (i, &l) in labels.iter().enumerate() {
        let Some(bucket) = per_class.get_mut(l) else {
            return Err(FitError::Shape {
                what: format!("label {l} at row {i} is not below n_classes = {n_classes}"),
            });
        };
        bucket.push(i);
    }
    let n = per_class.iter().map(Vec::len).min().unwrap_or(0);
    let mut pool = Vec::with_capacity(n * n_classes);
    for bucket in &mut per_class {
        rng.shuffle(bucket);
        pool.extend_from_slice(&bucket[..n]);
    }
    rng.shuffle(&mut pool);
    let total = pool.len();
    let (n_train, n_val) = split_sizes(total);
    if n == 0 || n_train < 2 || n_val < 1 || total - n_train - n_val < 1 {
        return Err(FitError::TooFewSamples {
            what: format!("smallest class has {n} rows"),
        });
    }
    Ok(Split {
        train: pool[..n_train].to_vec(),
        val: pool[n_train..n_train + n_val].to_vec(),
        test: pool[n_train + n_val..].to_vec(),
    })
}

/// Mean and unbiased standard deviation (torch's `std`) of `values[rows]`.
pub fn mean_std(values: &[f64], rows: &[usize]) -> (f64, f64) {
    let n = rows.len() as f64;
    let mean = rows.iter().map(|&i| values[i]).sum::<f64>() / n;
    let var = rows
        .iter()
        .map(|&i| (values[i] - mean).powi(2))
        .sum::<f64>()
        / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_split_is_balanced_disjoint_and_seeded() {
        let labels: Vec<bool> = (0..300).map(|i| i % 3 == 0).collect(); // 100 pos, 200 neg
        let s = balanced_binary_split(&labels, 42).expect("split");
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (140, 30, 30));
        for part in [&s.train, &s.val, &s.test] {
            let pos = part.iter().filter(|&&i| labels[i]).count();
            assert_eq!(pos * 2, part.len(), "each split is balanced");
        }
        let mut all: Vec<usize> = s
            .train
            .iter()
            .chain(&s.val)
            .chain(&s.test)
            .copied()
            .collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 200, "disjoint");
        assert_eq!(s, balanced_binary_split(&labels, 42).expect("split"));
        assert_ne!(s, balanced_binary_split(&labels, 7).expect("split"));
        assert!(balanced_binary_split(&[true, false, false], 1).is_err());
    }

    #[test]
    fn multiclass_and_regression_splits() {
        let labels: Vec<usize> = (0..90)
            .map(|i| {
                if i < 50 {
                    0
                } else if i < 70 {
                    1
                } else {
                    2
                }
            })
            .collect();
        let s = balanced_multiclass_split(&labels, 3, 1).expect("split");
        assert_eq!(s.train.len() + s.val.len() + s.test.len(), 60);
        assert_eq!((s.train.len(), s.val.len()), (42, 9));
        let r = shuffled_split(100, 3).expect("split");
        assert_eq!((r.train.len(), r.val.len(), r.test.len()), (70, 15, 15));
        let (m, sd) = mean_std(&[1.0, 2.0, 3.0, 100.0], &[0, 1, 2]);
        assert_eq!((m, sd), (2.0, 1.0));
    }
}
