//! `cargo xtask bench <what>`: benchmarks that print a ratio against the reference run.

pub fn run(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("decode") => crate::bench_decode::run(&args[1..]),
        Some("rfm") => crate::bench_rfm::run(&args[1..]),
        Some(other) => anyhow::bail!("unknown benchmark `{other}`; expected: decode, rfm"),
        None => anyhow::bail!("usage: cargo xtask bench <decode|rfm> [flags]"),
    }
}
