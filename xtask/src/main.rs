//! `cargo xtask <command>`: bundling (nice-plug-xtask) and musicrfm's offline tools.
//!
//! Commands:
//!   bundle <pkg> [--release]     CLAP + VST3 bundles in target/bundled (nice-plug-xtask)
//!   test                         bundle the plugin, then run every workspace test against it
//!   bench <what>                 benchmarks that print a ratio against the reference run

use std::process::ExitCode;

mod bench;
mod bench_rfm;
mod test_cmd;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(command) = args.next() else {
        eprintln!("usage: cargo xtask <bundle|test|bench> …");
        return ExitCode::from(2);
    };
    let rest: Vec<String> = args.collect();
    let result = match command.as_str() {
        "bundle" | "bundle-universal" | "known-packages" => {
            nice_plug_xtask::main_with_args("xtask", std::iter::once(command).chain(rest))
                .map_err(anyhow::Error::from)
        }
        "test" => test_cmd::run(&rest),
        "bench" => bench::run(&rest),
        other => Err(anyhow::anyhow!(
            "unknown command `{other}`; expected one of: bundle, test, bench"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
