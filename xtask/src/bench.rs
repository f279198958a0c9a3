//! `cargo xtask bench <what>`: benchmarks that print a ratio against the reference.

pub fn run(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("rfm") => crate::bench_rfm::run(&args[1..]),
        Some(other) => Err(anyhow::anyhow!(
            "unknown benchmark `{other}`; expected: rfm"
        )),
        None => Err(anyhow::anyhow!("usage: cargo xtask bench rfm")),
    }
}
