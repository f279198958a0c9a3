//! musicrfm's engine: Meta's MusicGen (T5 text encoder → decoder LM over 4 EnCodec codebooks →
//! EnCodec decoder) in burn, loaded from Hugging Face checkpoints, with a step-wise generation
//! API that steering and the streaming session build on.

pub mod config;
pub mod encodec;
pub mod error;
pub mod weights;

pub use config::{DecoderConfig, EncodecConfig, GenerationConfig, MusicgenConfig, T5Config};
pub use error::LoadError;
pub use weights::Weights;
