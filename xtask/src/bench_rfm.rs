//! `cargo xtask bench rfm`: one RFM fit (n = 2000 training points, d = 1024 and 2048, fixed
//! hyper-parameters, 10 iterations, no early stop) in `directions` (f32) and in xrfm
//! (`tests/bench/xrfm_fit.py`, interpreter `$MUSICRFM_PYTHON` or `python3`) on the same data and
//! thread count. Each Rust fit runs in a child process so its peak memory (VmHWM) is its own.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, anyhow};
use directions::faer::{Mat, Par};
use directions::{FitOptions, RfmParams, Rng, TuningMetric, fit_rfm};

const N_TRAIN: usize = 2000;
const N_VAL: usize = 500;
const ITERS: usize = 10;
const BANDWIDTH: f64 = 10.0;
const EXPONENT: f64 = 1.0;
const REG: f64 = 1e-3;

fn params() -> RfmParams {
    let mut p = RfmParams::new(BANDWIDTH, EXPONENT, REG, false, ITERS);
    p.early_stop = false;
    p
}

/// Binary task: the label depends on 4 coordinates, the rest is noise.
fn make_data(d: usize) -> [Mat<f32>; 4] {
    let mut rng = Rng::new(2024 + d as u64);
    let n = N_TRAIN + N_VAL;
    let x = Mat::<f32>::from_fn(n, d, |_, _| rng.normal() as f32);
    let y = Mat::<f32>::from_fn(n, 1, |i, _| {
        let (a, b, c, e) = (x[(i, 0)], x[(i, 1)], x[(i, 2)], x[(i, 3)]);
        f32::from(u8::from(
            a + b + 0.5 * c * e + 0.3 * rng.normal() as f32 > 0.0,
        ))
    });
    let rows = |m: &Mat<f32>, start: usize, len: usize| {
        Mat::from_fn(len, m.ncols(), |i, j| m[(start + i, j)])
    };
    [
        rows(&x, 0, N_TRAIN),
        rows(&y, 0, N_TRAIN),
        rows(&x, N_TRAIN, N_VAL),
        rows(&y, N_TRAIN, N_VAL),
    ]
}

fn write_npy(path: &Path, m: &Mat<f32>) -> anyhow::Result<()> {
    let data: Vec<f32> = (0..m.nrows())
        .flat_map(|i| (0..m.ncols()).map(move |j| m[(i, j)]))
        .collect();
    crate::npy::write_f32(path, &data, &[m.nrows(), m.ncols()])
}

fn vm_hwm_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Flops of the fit as `directions` computes it (2 per multiply-add; symmetric products
/// count half): per predictor X·M, the lower half of (XM)Xᵀ, Cholesky, validation kernel; per
/// AGOP the κ-weighted sum and the lower half of GᵀG.
fn fit_flops(d: usize, agops: usize) -> f64 {
    let (n, v, d) = (N_TRAIN as f64, N_VAL as f64, d as f64);
    let predictor =
        2.0 * n * d * d + n * n * d + n * n * n / 3.0 + 2.0 * v * d * d + 2.0 * v * n * d;
    let agop = 2.0 * n * n * d + n * d * d;
    (ITERS as f64 + 1.0) * predictor + agops as f64 * agop
}

/// Measured f32 matmul throughput (GFLOP/s) of faer on this machine: the ceiling for the fit.
fn matmul_gflops() -> f64 {
    let n = 2048;
    let a = Mat::<f32>::from_fn(n, n, |i, j| ((i * 7 + j * 3) % 11) as f32 * 0.1);
    let mut c = Mat::<f32>::zeros(n, n);
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        directions::faer::linalg::matmul::matmul(
            c.as_mut(),
            directions::faer::Accum::Replace,
            a.as_ref(),
            a.as_ref(),
            1.0,
            Par::rayon(0),
        );
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (n as f64).powi(3) / best / 1e9
}

/// Child: regenerate the (seeded, identical) data, fit once, print
/// `seconds auc best_iter agops peak_mb`.
fn child(d: usize) -> anyhow::Result<()> {
    let [x, y, xv, yv] = make_data(d);
    let t = Instant::now();
    let fit = fit_rfm(
        x.as_ref(),
        y.as_ref(),
        xv.as_ref(),
        yv.as_ref(),
        &params(),
        TuningMetric::Auc,
        FitOptions::default(),
    )?;
    let seconds = t.elapsed().as_secs_f64();
    let agops = ITERS + usize::from(fit.best_iter == ITERS);
    println!(
        "RESULT {seconds} {} {} {agops} {}",
        fit.best_score,
        fit.best_iter,
        vm_hwm_mb()
    );
    Ok(())
}

struct Measured {
    seconds: f64,
    auc: f64,
    best_iter: usize,
    agops: usize,
    peak_mb: f64,
}

fn run_child(d: usize) -> anyhow::Result<Measured> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .args(["bench", "rfm", "--child", &d.to_string()])
        // The parent's thread count (`--threads`, `RAYON_NUM_THREADS` or every core).
        .env(
            "RAYON_NUM_THREADS",
            rayon::current_num_threads().to_string(),
        )
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .ok_or_else(|| {
            anyhow!(
                "child fit failed: {}{}",
                stdout,
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let f: Vec<f64> = line[7..]
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    Ok(Measured {
        seconds: f[0],
        auc: f[1],
        best_iter: f[2] as usize,
        agops: f[3] as usize,
        peak_mb: f[4],
    })
}

fn run_xrfm(dir: &Path, threads: usize) -> anyhow::Result<serde_like::Json> {
    let python = std::env::var("MUSICRFM_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = crate::workspace_root().join("tests/bench/xrfm_fit.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(dir)
        .args([
            "--bandwidth",
            &BANDWIDTH.to_string(),
            "--exponent",
            &EXPONENT.to_string(),
        ])
        .args([
            "--reg",
            &REG.to_string(),
            "--iters",
            &ITERS.to_string(),
            "--threads",
            &threads.to_string(),
        ])
        .output()
        .with_context(|| format!("running {python} {}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .last()
        .filter(|l| l.starts_with('{'))
        .ok_or_else(|| {
            anyhow!(
                "xrfm_fit.py failed (set MUSICRFM_PYTHON to an interpreter with xrfm): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    Ok(serde_like::Json(line.to_string()))
}

/// Minimal reading of the script's flat JSON line (numbers only), to keep xtask's dependencies light.
mod serde_like {
    pub struct Json(pub String);
    impl Json {
        pub fn num(&self, key: &str) -> f64 {
            let pat = format!("\"{key}\": ");
            self.0
                .find(&pat)
                .map(|i| &self.0[i + pat.len()..])
                .and_then(|rest| rest.split([',', '}']).next())
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(f64::NAN)
        }
    }
}

/// RFM probe fits at d = 1024 and 2048 against xrfm (Python with xrfm: `MUSICRFM_PYTHON`).
#[derive(Debug, clap::Args)]
pub struct RfmArgs {
    /// Internal: fit once at width D in this process and print the result line.
    #[arg(long, hide = true, value_name = "D")]
    pub child: Option<usize>,
}

pub fn run(args: &RfmArgs) -> anyhow::Result<()> {
    if let Some(d) = args.child {
        return child(d);
    }
    let threads = rayon::current_num_threads();
    let peak = matmul_gflops();
    println!(
        "RFM fit benchmark: n_train = {N_TRAIN}, n_val = {N_VAL}, L = {BANDWIDTH}, p = {EXPONENT}, λ = {REG}, {ITERS} iterations, no early stop, {threads} threads"
    );
    println!("faer f32 matmul (2048³) on this machine: {peak:.1} GFLOP/s");
    println!(
        "{:>6} | {:>9} {:>8} {:>9} {:>9} {:>6} | {:>9} {:>8} {:>9} | {:>7}",
        "d",
        "ours s",
        "val AUC",
        "peak MB",
        "GFLOP/s",
        "frac",
        "xrfm s",
        "val AUC",
        "peak MB",
        "speedup"
    );
    for d in [1024usize, 2048] {
        let dir =
            std::env::temp_dir().join(format!("musicrfm-bench-rfm-{}-{d}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let data = make_data(d);
        for (name, m) in ["x_train", "y_train", "x_val", "y_val"].iter().zip(&data) {
            write_npy(&dir.join(format!("{name}.npy")), m)?;
        }
        drop(data);
        let ours = run_child(d)?;
        let gflops = fit_flops(d, ours.agops) / ours.seconds / 1e9;
        let reference = run_xrfm(&dir, threads);
        let (xs, xauc, xmb) = match &reference {
            Ok(j) => (j.num("seconds"), j.num("val_auc"), j.num("peak_rss_mb")),
            Err(e) => {
                eprintln!("xrfm reference not run: {e:#}");
                (f64::NAN, f64::NAN, f64::NAN)
            }
        };
        println!(
            "{d:>6} | {:>9.3} {:>8.4} {:>9.0} {:>9.1} {:>6.2} | {xs:>9.3} {xauc:>8.4} {xmb:>9.0} | {:>6.2}x   (best iter {})",
            ours.seconds,
            ours.auc,
            ours.peak_mb,
            gflops,
            gflops / peak,
            xs / ours.seconds,
            ours.best_iter
        );
        std::fs::remove_dir_all(&dir).ok();
    }
    Ok(())
}
