//! Times one `fit_rfm` on the data of `cargo xtask bench rfm` (n = 2000 training and 500
//! validation rows, 10 iterations, no early stop, f32) without building xtask, for alternating
//! A/B runs of two builds: `rfm_time [d] [fits]` prints one `RESULT seconds auc best_iter` line
//! per fit.

use std::time::Instant;

use directions::faer::Mat;
use directions::{FitOptions, RfmParams, Rng, TuningMetric, fit_rfm};

fn main() {
    let mut args = std::env::args().skip(1);
    let d: usize = args.next().map_or(1024, |a| a.parse().expect("d"));
    let fits: usize = args.next().map_or(1, |a| a.parse().expect("fits"));
    let (n_train, n_val) = (2000, 500);
    // the bench's generator and label rule, so the timings are of the same fit
    let mut rng = Rng::new(2024 + d as u64);
    let x = Mat::<f32>::from_fn(n_train + n_val, d, |_, _| rng.normal() as f32);
    let y = Mat::<f32>::from_fn(n_train + n_val, 1, |i, _| {
        let (a, b, c, e) = (x[(i, 0)], x[(i, 1)], x[(i, 2)], x[(i, 3)]);
        f32::from(u8::from(
            a + b + 0.5 * c * e + 0.3 * rng.normal() as f32 > 0.0,
        ))
    });
    // owned copies, laid out as the bench's
    let rows = |m: &Mat<f32>, start, len| m.subrows(start, len).to_owned();
    let (xt, yt) = (rows(&x, 0, n_train), rows(&y, 0, n_train));
    let (xv, yv) = (rows(&x, n_train, n_val), rows(&y, n_train, n_val));
    let mut params = RfmParams::new(10.0, 1.0, 1e-3, false, 10);
    params.early_stop = false;
    for _ in 0..fits {
        let t = Instant::now();
        let fit = fit_rfm(
            xt.as_ref(),
            yt.as_ref(),
            xv.as_ref(),
            yv.as_ref(),
            &params,
            TuningMetric::Auc,
            FitOptions::default(),
        )
        .expect("fit");
        println!(
            "RESULT {:.4} {} {} scores {:?}",
            t.elapsed().as_secs_f64(),
            fit.best_score,
            fit.best_iter,
            fit.scores
        );
    }
}
