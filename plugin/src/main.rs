//! The standalone app: `cargo run -p musicrfm --features standalone --bin musicrfm_standalone`.

use nice_plug::prelude::*;

fn main() {
    nice_export_standalone::<musicrfm::Musicrfm>();
}
