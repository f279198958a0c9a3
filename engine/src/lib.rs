//! musicrfm's engine: Meta's MusicGen (T5 text encoder → decoder LM over 4 EnCodec codebooks →
//! EnCodec decoder) in burn, loaded from Hugging Face checkpoints, with a step-wise generation
//! API ([`Generation`]) and one render path ([`render`]) that every front end shares.

pub mod accuracy;
pub mod audio;
pub mod config;
pub mod decoder;
pub mod encodec;
pub mod error;
pub mod features;
pub mod generate;
pub mod hub;
pub mod matvec;
pub mod model;
pub mod nn;
pub mod pool;
pub mod profile;
pub mod render;
pub mod sampling;
pub mod steering;
pub mod stream;
pub mod t5;
pub mod weights;

pub use config::{DecoderConfig, EncodecConfig, GenerationConfig, MusicgenConfig, T5Config};
pub use decoder::{BlockHook, CaptureBlocks, CrossContext, DecoderLm, KvCache, NoHook};
pub use error::LoadError;
pub use generate::{Codes, GenerateError, Generation, GenerationOptions, StepOutput};
pub use matvec::WeightFormat;
pub use model::{LoadOptions, MusicGen, TextCondition};
pub use sampling::{Rng, Sampling};
pub use t5::T5Encoder;
pub use weights::Weights;

/// The device the tools run on: the first CUDA GPU with the `cuda` feature, else the CPU.
pub fn default_device() -> burn::tensor::Device {
    #[cfg(feature = "cuda")]
    {
        burn::tensor::Device::cuda(0)
    }
    #[cfg(not(feature = "cuda"))]
    {
        burn::tensor::Device::default()
    }
}
