//! Throughput of the host matrix × few-rows kernels, per weight format:
//! - in cache: a 1024 × 1024 matrix (0.6–4 MB), one thread, best of 2000 products: what each
//!   format costs per weight when memory is not the limit;
//! - streamed: matrices of musicgen-small's decoder shapes (1024 → 1024 and 1024 ↔ 4096) adding
//!   up to ≈ 1.3 GB of f32 weights (more than any cache), rayon's threads kept awake as in a
//!   decode step (`engine::pool::step`), formats taking turns, best of 10 passes: what a decode
//!   step's linears reach against the memory-bandwidth floor.
//!
//! `cargo build --workspace --release --examples`, then run
//! `$CARGO_TARGET_DIR/release/examples/matvec_bench` (`--kernel NAME` forces a kernel,
//! `--dtype q8,q4` picks formats, `--only in-cache|streamed` one of the two, `--rows N` the input
//! rows of each product: 2 by default, a CFG step; 4 a slide's paired step, 1 guidance 1).

use std::time::Instant;

use engine::matvec::{HostMatrix, Kernel};
use engine::{Rng, WeightFormat};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let kernel = match args.iter().position(|a| a == "--kernel") {
        Some(k) => {
            let name = &args[k + 1];
            Kernel::ALL
                .into_iter()
                .find(|k| k.name() == name)
                .unwrap_or_else(|| panic!("no kernel {name}"))
        }
        None => Kernel::detect(),
    };
    let formats: Vec<WeightFormat> = match args.iter().position(|a| a == "--dtype") {
        Some(k) => args[k + 1]
            .split(',')
            .map(|f| f.parse().expect("a weight format"))
            .collect(),
        None => WeightFormat::ALL.to_vec(),
    };
    let only = args
        .iter()
        .position(|a| a == "--only")
        .map(|k| args[k + 1].as_str());
    let rows = args.iter().position(|a| a == "--rows").map_or(2, |k| {
        args[k + 1].parse().expect("--rows: a count of input rows")
    });
    let mut rng = Rng::new(3);
    if only != Some("streamed") {
        in_cache(kernel, &formats, rows, &mut rng);
    }
    if only != Some("in-cache") {
        streamed(kernel, &formats, rows, &mut rng);
    }
}

fn in_cache(kernel: Kernel, formats: &[WeightFormat], rows: usize, rng: &mut Rng) {
    let (d_in, d_out) = (
        1024,
        std::env::var("MVB_DOUT").map_or(1024, |v| v.parse().unwrap()),
    );
    let values: Vec<f32> = (0..d_in * d_out).map(|_| rng.normal() as f32).collect();
    let x: Vec<f32> = (0..rows * d_in).map(|_| rng.normal() as f32).collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool");
    for &format in formats {
        let matrix = HostMatrix::pack(&values, d_in, d_out, format);
        let best = pool.install(|| {
            (0..2000)
                .map(|_| {
                    let t = Instant::now();
                    std::hint::black_box(matrix.matmul_with(kernel, &x, rows, None));
                    t.elapsed().as_secs_f64()
                })
                .fold(f64::MAX, f64::min)
        });
        println!(
            "in cache {format:>5} ({}): {:.1} µs per {rows}-row product, {:.2} G weights/s, {:.1} GB/s of weights",
            kernel.name(),
            best * 1e6,
            (d_in * d_out) as f64 / best / 1e9,
            format.matrix_bytes(d_out, d_in) as f64 / best / 1e9
        );
    }
}

fn streamed(kernel: Kernel, formats: &[WeightFormat], rows: usize, rng: &mut Rng) {
    // Per layer of musicgen-small: self-attention q, k, v, o and cross-attention q, o (1024 →
    // 1024), fc1 (1024 → 4096), fc2 (4096 → 1024); 24 layers.
    let shapes: Vec<(usize, usize)> = (0..24)
        .flat_map(|_| {
            [(1024, 1024); 6]
                .into_iter()
                .chain([(1024, 4096), (4096, 1024)])
        })
        .collect();
    let base: Vec<f32> = (0..4096 * 1024).map(|_| rng.normal() as f32).collect();
    let x: Vec<f32> = (0..rows * 4096).map(|_| rng.normal() as f32).collect();
    // One packed base matrix per shape would stay in cache: pack each separately. The formats
    // take turns, pass by pass, so that each sees the same memory traffic from the rest of the
    // machine; best of 10 passes each.
    let packed: Vec<Vec<HostMatrix>> = formats
        .iter()
        .map(|&format| {
            shapes
                .iter()
                .map(|&(d_in, d_out)| HostMatrix::pack(&base[..d_in * d_out], d_in, d_out, format))
                .collect()
        })
        .collect();
    let mut best = vec![f64::MAX; formats.len()];
    for _ in 0..10 {
        for (best, matrices) in best.iter_mut().zip(&packed) {
            let t = Instant::now();
            // As a decode step runs them: rayon's other threads kept awake between products.
            engine::pool::step(true, || {
                for m in matrices {
                    std::hint::black_box(m.matmul_with(kernel, &x[..rows * m.d_in()], rows, None));
                }
            });
            *best = best.min(t.elapsed().as_secs_f64());
        }
    }
    for (&format, best) in formats.iter().zip(best) {
        let bytes: usize = shapes
            .iter()
            .map(|&(d_in, d_out)| format.matrix_bytes(d_out, d_in))
            .sum();
        println!(
            "streamed {format:>5} ({}, {} threads, {rows} rows): {:.2} ms per pass of {:.3} GB, {:.1} GB/s of weights",
            kernel.name(),
            rayon::current_num_threads(),
            best * 1e3,
            bytes as f64 / 1e9,
            bytes as f64 / best / 1e9
        );
    }
}
