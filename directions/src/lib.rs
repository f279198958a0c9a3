//! RFM probes and concept directions for musicrfm, and the directions file format.
//!
//! The probe-training core follows xRFM's single-leaf RFM (`l2_high_dim` kernel) exactly as
//! `docs/algorithms.md` §3 describes it: kernel ridge regression with a learned
//! Mahalanobis matrix M, updated to the normalised average gradient outer product (AGOP) of the
//! predictor; the concept direction is the top eigenvector of the best predictor's AGOP.
//! Dense linear algebra is faer (parallel over rayon's global pool); no audio, no model.

mod agop;
pub mod atomic;
mod canonical;
mod concept;
mod directions_file;
mod eigen;
mod error;
mod fastmath;
mod kernel;
mod krr;
pub mod metrics;
mod probe;
mod rfm;
mod rng;
mod scalar;
mod search;
mod splits;
#[cfg(test)]
mod test_support;

pub use concept::{
    ConceptConfig, ConceptProbe, Labels, TestMetrics, test_metrics, train_concept_probe,
};
pub use directions_file::{ConceptKind, DIRECTIONS_FORMAT, DirectionsFile, UNIT_NORM_TOLERANCE};
pub use eigen::{align_sign, top_eigenvectors};
pub use error::{DirectionsFileError, FitError, ProbeFileError};
pub use faer;
pub use fastmath::exp_f32;
pub use kernel::KernelParams;
pub use krr::SolveMethod;
pub use probe::{PROBE_FORMAT, Probe, ProbeKind};
pub use rfm::{FitOptions, RfmFit, RfmParams, TuningMetric, fit_rfm};
pub use rng::{Rng, keyed_hash, keyed_unit};
pub use scalar::Real;
pub use search::{
    SearchConfig, SearchOutcome, SearchSpace, Trial, predict_fit, search_hyperparameters,
    selection_score,
};
pub use splits::{
    Split, balanced_binary_split, balanced_multiclass_split, mean_std, shuffled_split,
};
