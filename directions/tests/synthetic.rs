//! A synthetic check: a label that depends on 2 of 256 coordinates. The top AGOP
//! eigenvector must put ≥ 0.9 of its squared mass on those 2 coordinates and the test AUC must
//! be ≥ 0.95.

use directions::faer::Mat;
use directions::{ConceptConfig, Labels, Rng, SearchConfig, SearchSpace, train_concept_probe};

#[test]
fn two_of_256_coordinates() {
    // 4000 rows: with fewer, finite-sample gradient noise spreads >10% of the mass elsewhere
    let (n, d) = (4000, 256);
    let mut rng = Rng::new(5);
    let x = Mat::<f64>::from_fn(n, d, |_, _| rng.normal());
    // the other 254 coordinates are noise
    let labels: Vec<bool> = (0..n).map(|i| x[(i, 3)] - x[(i, 200)] > 0.0).collect();
    let config = ConceptConfig {
        search: SearchConfig {
            samples: 2,
            iters: 4,
            seed: 12,
            space: SearchSpace {
                reg: (1e-4, 1e-2),
                bandwidth: (4.0, 6.0),
                exponent: (0.9, 1.1),
                center_grads: Some(false),
            },
            ..SearchConfig::default()
        },
        split_seed: 42,
        n_components: 2,
    };
    let concept = train_concept_probe(x.as_ref(), Labels::Binary(&labels), &config).expect("train");
    let top = &concept.directions[0];
    let mass = top[3] * top[3] + top[200] * top[200];
    let auc = concept.test.auc.expect("binary probes report AUC");
    eprintln!(
        "mass on the 2 coordinates {mass:.4}, test AUC {auc:.4}, best iter {}",
        concept.best_iter
    );
    assert!(mass >= 0.9, "squared mass on the 2 coordinates: {mass}");
    assert!(auc >= 0.95, "test AUC {auc}");
    assert!(
        (top.iter().map(|v| v * v).sum::<f64>() - 1.0).abs() < 1e-12,
        "unit norm"
    );
    // the probe predicts the test split the same way
    let test_x = Mat::<f64>::from_fn(concept.split.test.len(), d, |i, j| {
        x[(concept.split.test[i], j)]
    });
    let hard = concept
        .probe
        .predict_labels(test_x.as_ref())
        .expect("predict");
    let acc = hard
        .iter()
        .zip(&concept.split.test)
        .filter(|(p, i)| (**p == 1) == labels[**i])
        .count() as f64
        / hard.len() as f64;
    assert!((acc - concept.test.accuracy.expect("accuracy")).abs() < 1e-12);
}

#[test]
fn regression_direction_points_toward_higher_targets() {
    let (n, d) = (500, 32);
    let mut rng = Rng::new(9);
    let x = Mat::<f64>::from_fn(n, d, |_, _| rng.normal());
    let y: Vec<f64> = (0..n)
        .map(|i| 120.0 + 30.0 * x[(i, 7)] + 2.0 * rng.normal())
        .collect();
    let config = ConceptConfig {
        search: SearchConfig {
            samples: 2,
            iters: 3,
            seed: 1,
            ..SearchConfig::default()
        },
        ..ConceptConfig::default()
    };
    let concept = train_concept_probe(x.as_ref(), Labels::Regression(&y), &config).expect("train");
    let top = &concept.directions[0];
    assert!(
        top[7] > 0.9,
        "direction on coordinate 7 must be positive and dominant: {}",
        top[7]
    );
    assert!(concept.test.r2.expect("r2") > 0.8, "{:?}", concept.test);
    let preds = concept.probe.predict_values(x.as_ref()).expect("predict");
    let err = preds
        .iter()
        .zip(&y)
        .map(|(p, t)| (p - t).abs())
        .sum::<f64>()
        / n as f64;
    assert!(err < 10.0, "mean absolute error in target units {err}");
}

#[test]
fn multiclass_probe_classifies() {
    let (n, d) = (600, 16);
    let mut rng = Rng::new(3);
    let x = Mat::<f64>::from_fn(n, d, |_, _| rng.normal());
    let labels: Vec<usize> = (0..n)
        .map(|i| {
            if x[(i, 0)] < -0.43 {
                0
            } else if x[(i, 0)] < 0.43 {
                1
            } else {
                2
            }
        })
        .collect();
    let config = ConceptConfig {
        search: SearchConfig {
            samples: 2,
            iters: 3,
            seed: 2,
            ..SearchConfig::default()
        },
        ..ConceptConfig::default()
    };
    let concept = train_concept_probe(
        x.as_ref(),
        Labels::Multiclass {
            labels: &labels,
            n_classes: 3,
        },
        &config,
    )
    .expect("train");
    assert!(concept.test.auc.expect("auc") > 0.9, "{:?}", concept.test);
    let p = concept.probe.predict_proba(x.as_ref()).expect("proba");
    assert!(
        p.iter()
            .all(|row| row.len() == 3 && (row.iter().sum::<f64>() - 1.0).abs() < 1e-12)
    );
}
