//! Which probe(s) classify a clip: one block's, or the mean over every block's.

use anyhow::{Context, bail};
use directions::faer::Mat;
use directions::{ConceptKind, DirectionsFile, Probe, ProbeKind};

use super::{ClassifierKind, EvalArgs, EvalKind};
use crate::training::{TrainReport, layer_probe_path};

/// The probe(s) that classify a clip from its per-block pooled features.
pub(super) struct Classifier {
    pub(super) probes: Vec<(usize, Probe<f32>)>,
    pub(super) kind: EvalKind,
}

pub(super) enum Prediction {
    Class(usize),
    Value(f64),
}

impl Classifier {
    pub(super) fn predict(&self, pooled: &[Vec<f32>]) -> anyhow::Result<Prediction> {
        let row = |block: usize| {
            let r = &pooled[block];
            Mat::<f32>::from_fn(1, r.len(), |_, j| r[j])
        };
        match (self.kind, self.probes.as_slice()) {
            (EvalKind::Multiclass, [(block, probe)]) => Ok(Prediction::Class(
                probe.predict_labels(row(*block).as_ref())?[0],
            )),
            (EvalKind::Multiclass, probes) => {
                let mut mean: Vec<f64> = Vec::new();
                for (block, probe) in probes {
                    let p = probe.predict_proba(row(*block).as_ref())?.remove(0);
                    mean.resize(p.len(), 0.0);
                    mean.iter_mut().zip(&p).for_each(|(m, v)| *m += v);
                }
                let best = (0..mean.len())
                    .max_by(|&a, &b| mean[a].total_cmp(&mean[b]).then(b.cmp(&a)))
                    .unwrap_or(0);
                Ok(Prediction::Class(best))
            }
            (EvalKind::Regression, probes) => {
                let mut sum = 0.0;
                for (block, probe) in probes {
                    sum += probe.predict_values(row(*block).as_ref())?[0];
                }
                Ok(Prediction::Value(sum / probes.len() as f64))
            }
        }
    }
}

/// Accuracy for a multiclass probe with class directions, BPM shift for a regression pair.
pub(super) fn eval_kind(
    args: &EvalArgs,
    probe: &Probe<f32>,
    file: &DirectionsFile,
) -> anyhow::Result<EvalKind> {
    Ok(match (probe.kind, file.kind) {
        (ProbeKind::Multiclass { n_classes }, ConceptKind::Binary) => {
            if n_classes != file.classes.len() {
                bail!(
                    "--probe {} has {n_classes} classes, --directions {} has {}",
                    args.probe.display(),
                    args.directions.display(),
                    file.classes.len()
                );
            }
            EvalKind::Multiclass
        }
        (ProbeKind::Regression, ConceptKind::Regression) => EvalKind::Regression,
        (p, f) => bail!(
            "--probe {} is {p:?} and --directions {} is {f:?}: a multiclass probe goes with \
             class directions, a regression probe with a regression file",
            args.probe.display(),
            args.directions.display()
        ),
    })
}

/// `(block, [(block, probe)])`: the probe's block with `--classifier block`, and every probe.
pub(super) type ClassifierProbes = (Option<usize>, Vec<(usize, Probe<f32>)>);

/// The probe block (with `--classifier block`) and the probes that classify.
pub(super) fn classifier_probes(
    args: &EvalArgs,
    report: &TrainReport,
    probe: Probe<f32>,
    kind: EvalKind,
    reference: bool,
) -> anyhow::Result<ClassifierProbes> {
    Ok(match args.classifier {
        ClassifierKind::Block => {
            let block = match (args.block, &report.probe) {
                (Some(b), _) => b,
                (None, Some(p)) => p.block,
                (None, None) => bail!(
                    "--probe {}: its report names no probe block (was the multiclass probe \
                     trained?); give --block",
                    args.probe.display()
                ),
            };
            (Some(block), vec![(block, probe)])
        }
        ClassifierKind::Layers => {
            if args.block.is_some() {
                bail!("--block picks the probe of --classifier block; `layers` reads them all");
            }
            let blocks: Vec<usize> = report
                .layers
                .iter()
                .filter(|l| match kind {
                    EvalKind::Multiclass => {
                        l.multiclass.as_ref().is_some_and(|m| m.fitted().is_some())
                    }
                    EvalKind::Regression => !l.binary.is_empty(),
                })
                .map(|l| l.block)
                .filter(|&b| !(reference && b == 0))
                .collect();
            if blocks.is_empty() {
                bail!(
                    "--probe {}: its report lists no per-block probes to aggregate",
                    args.probe.display()
                );
            }
            let mut probes = Vec::new();
            for b in blocks {
                let path = layer_probe_path(&args.probe, b)?;
                let p = Probe::<f32>::load(&path).with_context(|| {
                    format!(
                        "--classifier layers reads every block's probe; write them with \
                         `train-probes --layer-probes` ({} missing)",
                        path.display()
                    )
                })?;
                if p.kind != probe.kind {
                    bail!(
                        "{} is {:?}, {} is {:?}",
                        path.display(),
                        p.kind,
                        args.probe.display(),
                        probe.kind
                    );
                }
                probes.push((b, p));
            }
            (None, probes)
        }
    })
}
