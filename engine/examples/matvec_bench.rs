//! Compute throughput of the host matrix × 2-rows kernels, weights in cache (a 1024 × 1024
//! matrix, 0.6–4 MB), one thread: what each format costs per weight when memory is not the
//! limit. Best of 200 products per format.
//!
//! `cargo run --release -p engine --example matvec_bench`

use std::time::Instant;

use engine::matvec::{HostMatrix, Kernel};
use engine::{Rng, WeightFormat};

fn main() {
    let (d_in, d_out) = (1024, 1024);
    let mut rng = Rng::new(3);
    let values: Vec<f32> = (0..d_in * d_out).map(|_| rng.normal() as f32).collect();
    let x: Vec<f32> = (0..2 * d_in).map(|_| rng.normal() as f32).collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool");
    let kernel = Kernel::detect();
    for format in WeightFormat::ALL {
        let matrix = HostMatrix::pack(&values, d_in, d_out, format);
        let best = pool.install(|| {
            (0..200)
                .map(|_| {
                    let t = Instant::now();
                    std::hint::black_box(matrix.matmul_with(kernel, &x, 2, None));
                    t.elapsed().as_secs_f64()
                })
                .fold(f64::MAX, f64::min)
        });
        println!(
            "{format:>5} ({}): {:.1} µs per 2-row product, {:.2} G weights/s, {:.1} GB/s of weights",
            kernel.name(),
            best * 1e6,
            (d_in * d_out) as f64 / best / 1e9,
            format.matrix_bytes(d_out, d_in) as f64 / best / 1e9
        );
    }
}
