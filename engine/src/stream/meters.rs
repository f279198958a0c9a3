//! Live concept meters: for a slot whose directions file has the multiclass probe
//! `train-probes` writes beside it (`<stem>.probe.safetensors`, its block named in
//! `<stem>.report.json`), the engine publishes the probe's class probabilities on the mean of
//! the last [`WINDOW_STEPS`] steps' hidden states at the probe's block, every
//! [`EVERY_STEPS`] steps.
//!
//! The hidden states are the stream's own: the conditional row of each new position, after
//! steering, as the generation computes it. The probe was trained on the feature protocol
//! ([`crate::features`]: clips re-encoded, undelayed codes, mostly without text), so a meter is
//! an indication of where the music is heading, not a calibrated classifier; it costs one
//! `d_model` row copy per step and a probe evaluation a few times per second.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::Ordering::{AcqRel, Release};

use burn::tensor::Tensor;
use directions::faer::Mat;
use directions::{Probe, ProbeKind};
use serde::Deserialize;

use crate::decoder::BlockHook;
use crate::features::{FeatureProtocol, ProbeReport, beside};
use crate::model::MusicGen;
use crate::profile::{Phase, timed};

use super::SLOTS;
use super::shared::Shared;

/// Classes a meter can show; a probe with more is not metered.
pub const METER_CLASSES: usize = 32;
/// Steps averaged: 2 s.
pub const WINDOW_STEPS: usize = 100;
/// Steps between publications: 5 per second.
pub const EVERY_STEPS: u64 = 10;

/// The part of `<stem>.report.json` a meter needs.
#[derive(Deserialize)]
struct Sidecar {
    probe: Option<ProbeReport>,
    #[serde(default)]
    protocol: FeatureProtocol,
}

/// A multiclass probe found beside a directions file.
pub struct MeterProbe {
    probe: Probe<f32>,
    block: usize,
    /// Read the block after the final LayerNorm (the reference layer protocol's last block).
    normed: bool,
    classes: usize,
}

impl MeterProbe {
    /// The multiclass probe beside `directions`, if `train-probes` wrote one; why not, if it
    /// cannot be used (`Err` names the file).
    pub fn beside(directions: &Path, model: &MusicGen) -> Result<Option<Self>, String> {
        let report_path = beside(directions, ".report.json");
        let Ok(text) = std::fs::read_to_string(&report_path) else {
            return Ok(None);
        };
        let sidecar: Sidecar =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", report_path.display()))?;
        let Some(report) = sidecar.probe.filter(|p| p.kind == "multiclass") else {
            return Ok(None);
        };
        let path = directions.with_file_name(&report.file);
        let probe = Probe::<f32>::load(&path).map_err(|e| e.to_string())?;
        let blocks = model.decoder.num_blocks();
        let classes = match probe.kind {
            ProbeKind::Multiclass { n_classes } => n_classes,
            other => {
                return Err(format!(
                    "{}: a {other:?} probe, not multiclass",
                    path.display()
                ));
            }
        };
        if report.block >= blocks || probe.m.nrows() != model.decoder.d_model() {
            return Err(format!(
                "{}: reads block {} of width {}; the model has {blocks} blocks of width {}",
                path.display(),
                report.block,
                probe.m.nrows(),
                model.decoder.d_model()
            ));
        }
        if classes > METER_CLASSES {
            return Err(format!(
                "{}: {classes} classes; a meter shows at most {METER_CLASSES}",
                path.display()
            ));
        }
        Ok(Some(Self {
            probe,
            block: report.block,
            normed: sidecar.protocol.last_block_normed && report.block + 1 == blocks,
            classes,
        }))
    }

    pub fn block(&self) -> usize {
        self.block
    }

    /// Class probabilities of the mean feature `mean` (`d_model` values).
    pub fn scores(&self, mean: &[f32]) -> Vec<f32> {
        let z = Mat::<f32>::from_fn(1, mean.len(), |_, j| mean[j]);
        match self.probe.predict_proba(z.as_ref()) {
            Ok(mut rows) => rows.remove(0).into_iter().map(|p| p as f32).collect(),
            Err(_) => vec![f32::NAN; self.classes],
        }
    }
}

struct Tap {
    probe: MeterProbe,
    /// The last [`WINDOW_STEPS`] rows `[d_model]` at the probe's block, on the model's device.
    rows: VecDeque<Tensor<1>>,
}

/// The meters of the slots, fed by [`Meters::observer`] and published to [`Shared`].
#[derive(Default)]
pub struct Meters {
    taps: [Option<Tap>; SLOTS],
}

impl Meters {
    /// Meter slot `slot` with `probe` (or stop metering it).
    pub fn set(&mut self, slot: usize, probe: Option<MeterProbe>, shared: &Shared) {
        if slot >= SLOTS {
            return;
        }
        let classes = probe.as_ref().map_or(0, |p| p.classes);
        self.taps[slot] = probe.map(|probe| Tap {
            probe,
            rows: VecDeque::with_capacity(WINDOW_STEPS + 1),
        });
        shared.meters[slot].classes.store(classes as u32, Release);
    }

    /// Forget the rows (a new stream).
    pub fn clear(&mut self) {
        self.taps.iter_mut().flatten().for_each(|t| t.rows.clear());
    }

    pub fn is_empty(&self) -> bool {
        self.taps.iter().all(Option::is_none)
    }

    /// The hook that records each metered block's conditional row.
    pub fn observer<'a>(&'a mut self, model: &'a MusicGen) -> Observer<'a> {
        Observer {
            meters: self,
            model,
        }
    }

    /// Evaluate every meter on its rows and publish the scores.
    pub fn publish(&self, shared: &Shared) {
        timed(Phase::Meters, || self.publish_now(shared));
    }

    fn publish_now(&self, shared: &Shared) {
        for (slot, tap) in self.taps.iter().enumerate() {
            let Some(tap) = tap.as_ref().filter(|t| !t.rows.is_empty()) else {
                continue;
            };
            let rows: Vec<Tensor<1>> = tap.rows.iter().cloned().collect();
            let mean: Vec<f32> = Tensor::stack::<2>(rows, 0)
                .mean_dim(0)
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap_or_default();
            let meter = &shared.meters[slot];
            for (cell, score) in meter.scores.iter().zip(tap.probe.scores(&mean)) {
                cell.store(score.to_bits(), Release);
            }
            meter.updates.fetch_add(1, AcqRel);
        }
    }
}

/// See [`Meters::observer`].
pub struct Observer<'a> {
    meters: &'a mut Meters,
    model: &'a MusicGen,
}

impl BlockHook for Observer<'_> {
    fn after_block(&mut self, block: usize, hidden: Tensor<3>) -> Tensor<3> {
        timed(Phase::Meters, || self.tap(block, &hidden));
        hidden
    }
}

impl Observer<'_> {
    /// Keep the last position of block `block`'s first row for each meter reading that block.
    fn tap(&mut self, block: usize, hidden: &Tensor<3>) {
        let [_, seq, d] = hidden.dims();
        for tap in self.meters.taps.iter_mut().flatten() {
            if tap.probe.block != block {
                continue;
            }
            let mut row = hidden.clone().slice([0..1, seq - 1..seq, 0..d]);
            if tap.probe.normed {
                row = self.model.decoder.final_norm(row);
            }
            if tap.rows.len() == WINDOW_STEPS {
                tap.rows.pop_front();
            }
            tap.rows.push_back(row.reshape([d]));
        }
    }
}
