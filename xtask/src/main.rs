//! `cargo xtask <command>`: bundling (nice-plug-xtask) and musicrfm's offline tools. Every
//! command and its flags are listed by `cargo xtask --help` and `cargo xtask <command> --help`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xtask::{
    bench_decode, bench_rfm, bench_stream, bounce, eval_steering, extract, render, stream,
    syntheory, test_cmd, train_probes,
};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "musicrfm's build and offline tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// CLAP + VST3 bundles in target/bundled (nice-plug-xtask): `bundle musicrfm --release`.
    #[command(disable_help_flag = true)]
    Bundle {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Bundle the plugin, then run every workspace test against it (extra args go to cargo test).
    #[command(disable_help_flag = true)]
    Test {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Every engine test built for aarch64 (NEON) and run under qemu-aarch64 (extra args go to
    /// cargo test).
    #[command(disable_help_flag = true, name = "test-aarch64")]
    TestAarch64 {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Render MusicGen offline to a 32 kHz WAV, optionally steered.
    Render(render::RenderArgs),
    /// Stream through the real-time engine as an offline bounce, to a WAV, with step timings.
    Stream(stream::StreamArgs),
    /// Bounce the built musicrfm.clap headless (offline mode, state, automation) to a WAV.
    Bounce(bounce::BounceArgs),
    /// Benchmarks that print a ratio against the reference run side by side.
    Bench {
        /// Threads for musicrfm and for the reference run beside it (PyTorch, xrfm). Default:
        /// rayon's, every core (or `RAYON_NUM_THREADS`). `--threads 2` measures a two-core
        /// machine's setting on a larger one.
        #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..))]
        threads: Option<u16>,
        #[command(subcommand)]
        bench: Bench,
    },
    /// The paper's steering evaluation: probe accuracy of steered clips against strength.
    EvalSteering(eval_steering::EvalArgs),
    /// Render a SynTheory concept to WAV clips with a manifest.
    Syntheory(syntheory::SyntheoryArgs),
    /// Mean-pooled per-block MusicGen features (or chroma / log-mel) of a dataset.
    Extract(extract::ExtractArgs),
    /// Train RFM concept probes per layer and write a directions file.
    TrainProbes(train_probes::TrainProbesArgs),
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Decoder steps and EnCodec decode on the musicgen-small shape, against PyTorch.
    Decode(bench_decode::DecodeArgs),
    /// RFM probe fits at d = 1024 and 2048, against xrfm.
    Rfm(bench_rfm::RfmArgs),
    /// The streaming engine against real time: steps/s, step times, slides, latency, meters.
    Stream(bench_stream::StreamBenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bundle { args } => nice_plug_xtask::main_with_args(
            "xtask",
            std::iter::once("bundle".to_owned()).chain(args),
        ),
        Command::Test { args } => test_cmd::run(&args),
        Command::TestAarch64 { args } => test_cmd::run_aarch64(&args),
        Command::Render(args) => render::run(&args),
        Command::Stream(args) => stream::run(&args),
        Command::Bounce(args) => bounce::run(&args),
        Command::Bench { threads, bench } => xtask::bench_threads(threads.map(usize::from))
            .and_then(|()| match bench {
                Bench::Stream(args) => bench_stream::run(&args),
                Bench::Decode(args) => bench_decode::run(&args),
                Bench::Rfm(args) => bench_rfm::run(&args),
            }),
        Command::EvalSteering(args) => eval_steering::run(&args),
        Command::Syntheory(args) => syntheory::generate(&args),
        Command::Extract(args) => extract::extract(&args),
        Command::TrainProbes(args) => train_probes::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
