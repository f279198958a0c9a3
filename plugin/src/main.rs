//! The standalone app: `cargo run -p musicrfm --features standalone --bin musicrfm_standalone`.
//! musicrfm's own options (`--model`, `--prompt`, `--slot`, `--set`, `--play`; see
//! [`musicrfm::standalone::Launch`]) set the instance up; everything else is nice-plug's
//! (`--backend`, `--sample-rate`, `--period-size`, …).

use musicrfm::standalone::Launch;
use nice_plug::prelude::*;

fn main() {
    match Launch::parse(std::env::args().collect()) {
        Ok((launch, rest)) => {
            launch.install();
            nice_export_standalone_with_args::<musicrfm::Musicrfm, _>(rest);
        }
        Err(error) => {
            eprintln!("musicrfm_standalone: {error}");
            std::process::exit(2);
        }
    }
}
