//! Steering: concept directions added to the decoder's residual stream while it generates
//! (MusicRFM §4, with our decisions: every block 0..n−1 at the block-output site, schedules on
//! the global step, Bernoulli gates per (steer, block, step) shared by the CFG pair).
//!
//! At step t, block b's output gets `Σ_k gate(k,b,t) · c_k(t) · w_k[b] · u_k[b]`, the same for
//! every row of the batch (both CFG halves) and every position of the step.

mod layer_weights;
mod schedule;

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use directions::DirectionsFile;

use crate::decoder::BlockHook;
use crate::profile::{Phase, timed};

pub use layer_weights::LayerWeights;
pub use schedule::{Schedule, crossfade};

/// The paper's Bernoulli gate probability (§4.4).
pub const DEFAULT_GATE: f32 = 0.3;

/// Separates the gates' draws from sampling's, which use the same seed.
const GATE_SALT: u64 = 0x6761_7465_5f76_3100;

#[derive(Debug, thiserror::Error)]
pub enum SteeringError {
    #[error(transparent)]
    File(#[from] directions::DirectionsFileError),
    #[error("--steer {spec}: {message}")]
    Spec { spec: String, message: String },
    #[error("{path}: class `{class}` is not in this file (classes: {classes})")]
    UnknownClass {
        path: PathBuf,
        class: String,
        classes: String,
    },
    #[error("{path} was made for d_model {file} (model `{model}`), this model has d_model {ours}")]
    WidthMismatch {
        path: PathBuf,
        file: usize,
        model: String,
        ours: usize,
    },
    #[error("{path}: row {row} names decoder block {block}, this model has {blocks} blocks")]
    BlockOutOfRange {
        path: PathBuf,
        row: usize,
        block: i64,
        blocks: usize,
    },
    #[error("--gate {0}: a probability in [0, 1] is expected")]
    Gate(f32),
}

/// One `--steer <FILE>:<CLASS>=<STRENGTH>[@<SCHEDULE>]`, parsed but not yet loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct SteerArg {
    pub file: PathBuf,
    /// A class name or a 0-based index.
    pub class: String,
    pub strength: f32,
    pub schedule: Schedule,
}

impl SteerArg {
    pub fn parse(spec: &str) -> Result<Self, SteeringError> {
        let fail = |message: &str| SteeringError::Spec {
            spec: spec.to_owned(),
            message: message.to_owned(),
        };
        let (target, value) = spec
            .rsplit_once('=')
            .ok_or_else(|| fail("expected <FILE>:<CLASS>=<STRENGTH>[@<SCHEDULE>]"))?;
        let (file, class) = target
            .rsplit_once(':')
            .ok_or_else(|| fail("expected <FILE>:<CLASS> before `=`"))?;
        if file.is_empty() || class.is_empty() {
            return Err(fail("expected <FILE>:<CLASS> before `=`"));
        }
        let (strength, schedule) = match value.split_once('@') {
            Some((s, sched)) => (s, Schedule::parse(sched).map_err(|m| fail(&m))?),
            None => (value, Schedule::Constant),
        };
        let strength: f32 = strength
            .parse()
            .ok()
            .filter(|s: &f32| s.is_finite())
            .ok_or_else(|| fail(&format!("strength `{strength}` is not a number")))?;
        Ok(Self {
            file: PathBuf::from(file),
            class: class.to_owned(),
            strength,
            schedule,
        })
    }
}

/// A steer ready to run: unit vectors on the device and weights, per decoder block.
struct Steer {
    eta: f32,
    schedule: Schedule,
    gate: f32,
    /// Per decoder block: `[1, 1, d_model]` unit vector and its layer weight (absent or zero
    /// weight: the block is not touched).
    rows: Vec<Option<(Tensor<3>, f32)>>,
    /// v(t) for an external schedule, set by the caller each step.
    external: f32,
}

/// Every steer of a run. Owns no model state; the generation calls [`SteeringPlan::hook`] each step.
pub struct SteeringPlan {
    steers: Vec<Steer>,
    n_blocks: usize,
    d_model: usize,
    seed: u64,
    device: Device,
    /// c_k(t) of the current step (allocated once).
    coefficients: Vec<f32>,
    step: usize,
}

impl SteeringPlan {
    pub fn new(n_blocks: usize, d_model: usize, seed: u64, device: &Device) -> Self {
        Self {
            steers: Vec::new(),
            n_blocks,
            d_model,
            seed,
            device: device.clone(),
            coefficients: Vec::new(),
            step: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.steers.is_empty()
    }

    pub fn len(&self) -> usize {
        self.steers.len()
    }

    /// Add a steer read from a directions file; `layers: None` takes
    /// [`LayerWeights::default_for`] the file.
    pub fn add_from_file(
        &mut self,
        arg: &SteerArg,
        layers: Option<&LayerWeights>,
        gate: f32,
    ) -> Result<usize, SteeringError> {
        let file = DirectionsFile::read(&arg.file)?;
        let class = resolve_class(&file, &arg.class, &arg.file)?;
        let default;
        let layers = match layers {
            Some(l) => l,
            None => {
                default = LayerWeights::default_for(&file);
                &default
            }
        };
        self.add(
            &file,
            &arg.file,
            class,
            arg.strength,
            arg.schedule,
            layers,
            gate,
        )
    }

    /// Add class `class` of `file` with strength `eta`; returns the steer's index.
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        file: &DirectionsFile,
        path: &Path,
        class: usize,
        eta: f32,
        schedule: Schedule,
        layers: &LayerWeights,
        gate: f32,
    ) -> Result<usize, SteeringError> {
        if !(0.0..=1.0).contains(&gate) {
            return Err(SteeringError::Gate(gate));
        }
        if file.d_model != self.d_model {
            return Err(SteeringError::WidthMismatch {
                path: path.to_owned(),
                file: file.d_model,
                model: file.model.clone(),
                ours: self.d_model,
            });
        }
        let mut blocks = Vec::with_capacity(file.layers.len());
        for (row, &block) in file.layers.iter().enumerate() {
            if block < 0 || block as usize >= self.n_blocks {
                return Err(SteeringError::BlockOutOfRange {
                    path: path.to_owned(),
                    row,
                    block,
                    blocks: self.n_blocks,
                });
            }
            blocks.push(block as usize);
        }
        let weights = layers.weights(&file.scores[class], &blocks);
        let mut rows: Vec<Option<(Tensor<3>, f32)>> = (0..self.n_blocks).map(|_| None).collect();
        for (row, (&block, &w)) in blocks.iter().zip(&weights).enumerate() {
            if w == 0.0 {
                continue;
            }
            let u = file.directions[class][row].clone();
            let u = Tensor::<1>::from_data(TensorData::new(u, [self.d_model]), &self.device)
                .reshape([1, 1, self.d_model]);
            rows[block] = Some((u, w));
        }
        self.steers.push(Steer {
            eta,
            schedule,
            gate,
            rows,
            external: 0.0,
        });
        self.coefficients.push(0.0);
        Ok(self.steers.len() - 1)
    }

    /// v(t) for a steer with an external schedule (automation, faders): c(t) = η · v(t).
    pub fn set_external(&mut self, steer: usize, value: f32) {
        if let Some(s) = self.steers.get_mut(steer) {
            s.external = value;
        }
    }

    /// Whether steer `k`'s gate is open at (`block`, `step`): a counter-based draw from the
    /// plan's seed, so it does not depend on what else ran (and both CFG rows share it).
    pub fn gate_open(&self, steer: usize, block: usize, step: usize) -> bool {
        let p = self.steers[steer].gate;
        if p >= 1.0 {
            return true;
        }
        let keys = [steer as u64, block as u64, step as u64];
        directions::keyed_unit(self.seed ^ GATE_SALT, &keys) < p as f64
    }

    /// The coefficient c_k(t) of steer `k` at `step`.
    pub fn coefficient(&self, steer: usize, step: usize) -> f32 {
        let s = &self.steers[steer];
        s.schedule.coefficient(s.eta, step, s.external)
    }

    /// The hook for decoder step `step` (global step: schedules ignore the gates).
    pub fn hook(&mut self, step: usize) -> SteeringHook<'_> {
        self.step = step;
        for k in 0..self.steers.len() {
            self.coefficients[k] = self.coefficient(k, step);
        }
        SteeringHook { plan: self }
    }

    /// The vector added at (`block`, `step`), for tests and monitoring: `None` when nothing is.
    pub fn delta(&self, block: usize, step: usize) -> Option<Tensor<3>> {
        let mut delta: Option<Tensor<3>> = None;
        for (k, steer) in self.steers.iter().enumerate() {
            let Some((u, w)) = &steer.rows[block] else {
                continue;
            };
            let c = if step == self.step {
                self.coefficients[k]
            } else {
                self.coefficient(k, step)
            };
            if c == 0.0 || !self.gate_open(k, block, step) {
                continue;
            }
            let term = u.clone().mul_scalar(c * w);
            delta = Some(match delta {
                Some(acc) => acc + term,
                None => term,
            });
        }
        delta
    }
}

/// A [`BlockHook`] that adds a plan's vectors at one step.
pub struct SteeringHook<'p> {
    plan: &'p SteeringPlan,
}

impl BlockHook for SteeringHook<'_> {
    fn after_block(&mut self, block: usize, hidden: Tensor<3>) -> Tensor<3> {
        timed(Phase::Steering, || {
            match self.plan.delta(block, self.plan.step) {
                Some(delta) => hidden + delta,
                None => hidden,
            }
        })
    }
}

/// A class by name, or by 0-based index.
pub fn resolve_class(
    file: &DirectionsFile,
    class: &str,
    path: &Path,
) -> Result<usize, SteeringError> {
    if let Some(i) = file.classes.iter().position(|c| c == class) {
        return Ok(i);
    }
    match class.parse::<usize>() {
        Ok(i) if i < file.classes.len() => Ok(i),
        _ => Err(SteeringError::UnknownClass {
            path: path.to_owned(),
            class: class.to_owned(),
            classes: file.classes.join(", "),
        }),
    }
}

#[cfg(test)]
mod tests;
