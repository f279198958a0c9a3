//! Probe training as a library (docs/algorithms.md §2, §3): per-layer RFM probes on extracted
//! features → a directions file (format v1), the best layer's multiclass (or regression) probe,
//! and a typed [`TrainReport`] that evaluation reads back.
//!
//! Per layer: one balanced one-vs-rest binary probe per class (a regression probe for tempos),
//! whose sign-aligned top AGOP eigenvector is the class's direction and whose validation score
//! (balanced accuracy; −MSE for regression) is the layer's score; and one balanced multiclass
//! probe, evaluated on its test split.

use std::path::Path;

use anyhow::{Context, bail};
use directions::faer::Mat;
use directions::{
    ConceptConfig, ConceptKind, ConceptProbe, DirectionsFile, Labels, Probe, SearchConfig,
    TestMetrics, train_concept_probe,
};
use engine::features::FeatureProtocol;
pub use engine::features::ProbeReport;
use serde::{Deserialize, Serialize};

use crate::feature_store::Features;

/// The `train-probes` report (`<stem>.report.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    pub concept: String,
    /// The features directory the probes were trained on.
    pub features: String,
    /// `musicgen`, `chroma` or `logmel`.
    pub source: String,
    pub model: String,
    /// How the block features were computed; evaluation repeats it.
    #[serde(default)]
    pub protocol: FeatureProtocol,
    pub clips: usize,
    pub classes: Vec<String>,
    pub kind: ConceptKind,
    pub metric: String,
    pub search: usize,
    pub iters: usize,
    pub seed: u64,
    /// The probe written beside the directions file, if one could be fitted.
    pub probe: Option<ProbeReport>,
    pub seconds: f64,
    pub layers: Vec<LayerReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerReport {
    pub block: usize,
    /// One per class (one for a regression concept).
    pub binary: Vec<ClassReport>,
    /// The multiclass probe of this block (absent for regression concepts or when not asked).
    pub multiclass: Option<MulticlassFit>,
}

/// A multiclass fit, or why it failed (a failed multiclass fit is reported, not fatal).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MulticlassFit {
    Fitted(FitReport),
    Failed { error: String },
}

impl MulticlassFit {
    pub fn fitted(&self) -> Option<&FitReport> {
        match self {
            MulticlassFit::Fitted(f) => Some(f),
            MulticlassFit::Failed { .. } => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassReport {
    pub class: String,
    #[serde(flatten)]
    pub fit: FitReport,
}

/// One fitted probe: its validation score, test metrics and chosen hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitReport {
    pub val_score: f64,
    pub test: MetricsReport,
    pub reg: f64,
    pub bandwidth: f64,
    pub exponent: f64,
    pub center_grads: bool,
    pub best_iter: usize,
    /// Clips in the train, validation and test splits.
    pub split: [usize; 3],
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsReport {
    pub auc: Option<f64>,
    pub balanced_accuracy: Option<f64>,
    pub accuracy: Option<f64>,
    pub mse: Option<f64>,
    pub r2: Option<f64>,
}

impl From<&TestMetrics> for MetricsReport {
    fn from(m: &TestMetrics) -> Self {
        Self {
            auc: m.auc,
            balanced_accuracy: m.balanced_accuracy,
            accuracy: m.accuracy,
            mse: m.mse,
            r2: m.r2,
        }
    }
}

impl FitReport {
    fn of<T>(p: &ConceptProbe<T>) -> Self {
        Self {
            val_score: p.val_score,
            test: (&p.test).into(),
            reg: p.params.reg,
            bandwidth: p.params.kernel.bandwidth,
            exponent: p.params.kernel.exponent,
            center_grads: p.params.center_grads,
            best_iter: p.best_iter,
            split: [p.split.train.len(), p.split.val.len(), p.split.test.len()],
        }
    }
}

impl TrainReport {
    /// Read a report written by `train-probes`.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// The report beside a probe file `<stem>.probe.safetensors` (`<stem>.report.json`).
    pub fn beside_probe(probe: &Path) -> anyhow::Result<Self> {
        let stem = probe_stem(probe, "its report")?;
        Self::read(&probe.with_file_name(format!("{stem}.report.json")))
    }
}

/// What to train.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Hyper-parameter samples per probe (the paper: 100).
    pub search: usize,
    /// RFM iterations per fit (the paper: 15).
    pub iters: usize,
    /// Seed of the hyper-parameter draws.
    pub seed: u64,
    /// Only these blocks (default: every extracted layer).
    pub layers: Option<Vec<usize>>,
    /// Also fit a multiclass probe per layer (classification concepts).
    pub multiclass: bool,
    /// Keep every layer's multiclass (or regression) probe, not only the best one, for
    /// `eval-steering --classifier layers`.
    pub layer_probes: bool,
}

/// What training produced.
pub struct Trained {
    pub directions: DirectionsFile,
    /// The best layer's multiclass (or regression) probe; none when no multiclass fit succeeded.
    pub probe: Option<Probe<f32>>,
    /// Every layer's multiclass (or regression) probe by block, when asked for
    /// ([`TrainOptions::layer_probes`]); written as [`layer_probe_path`].
    pub layer_probes: Vec<(usize, Probe<f32>)>,
    pub report: TrainReport,
}

/// Where the probe of one block lives beside the best one: `<stem>.probe.safetensors` →
/// `<stem>.probe.b<block>.safetensors`.
pub fn layer_probe_path(probe: &Path, block: usize) -> anyhow::Result<std::path::PathBuf> {
    let stem = probe_stem(probe, "its layer probes")?;
    Ok(probe.with_file_name(format!("{stem}.probe.b{block}.safetensors")))
}

/// `<stem>` of `<stem>.probe.safetensors`; the files named after it are `what`.
fn probe_stem(probe: &Path, what: &str) -> anyhow::Result<String> {
    let name = probe
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.strip_suffix(".probe.safetensors")
        .map(str::to_owned)
        .with_context(|| {
            format!(
                "{}: not named <stem>.probe.safetensors, so {what} cannot be found",
                probe.display()
            )
        })
}

/// Seed of one probe's search, distinct per (layer, class).
fn probe_seed(seed: u64, layer: usize, class: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((layer as u64) << 20)
        .wrapping_add(class as u64 + 1)
}

/// The labels of every clip: class indices, and values for a regression concept.
struct ClipLabels {
    classes: Vec<String>,
    class_of: Vec<usize>,
    values: Vec<f64>,
}

fn clip_labels(feats: &Features, kind: ConceptKind) -> anyhow::Result<ClipLabels> {
    let classes: Vec<String> = serde_json::from_value(feats.info["classes"].clone())
        .context("features.json: `classes` is not a list of strings")?;
    let class_of = feats
        .manifest
        .iter()
        .enumerate()
        .map(|(i, r)| {
            r["class_index"]
                .as_u64()
                .map(|c| c as usize)
                .filter(|&c| c < classes.len())
                .with_context(|| {
                    format!("manifest row {i}: bad `class_index` {}", r["class_index"])
                })
        })
        .collect::<anyhow::Result<_>>()?;
    let values = match kind {
        ConceptKind::Regression => feats
            .manifest
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r["value"]
                    .as_f64()
                    .with_context(|| format!("manifest row {i}: no `value`"))
            })
            .collect::<anyhow::Result<_>>()?,
        ConceptKind::Binary => Vec::new(),
    };
    Ok(ClipLabels {
        classes,
        class_of,
        values,
    })
}

/// Rows of `feats` to train on: every layer, or the blocks asked for.
fn selected_rows(feats: &Features, layers: Option<&[usize]>) -> anyhow::Result<Vec<usize>> {
    match layers {
        None => Ok((0..feats.layer_ids.len()).collect()),
        Some(want) => want
            .iter()
            .map(|b| {
                feats
                    .layer_ids
                    .iter()
                    .position(|l| l == b)
                    .with_context(|| {
                        format!("layer {b} was not extracted (have {:?})", feats.layer_ids)
                    })
            })
            .collect(),
    }
}

/// Train the probes of `concept` on `feats`. `progress` is told each probe as it starts.
pub fn train_directions(
    feats: &Features,
    features_dir: &Path,
    concept: &str,
    options: &TrainOptions,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<Trained> {
    if options.search == 0 {
        bail!("--search must be at least 1");
    }
    let info = &feats.info;
    if info["concept"] != concept {
        bail!(
            "--concept {concept} does not match --features {} (concept {})",
            features_dir.display(),
            info["concept"]
        );
    }
    let kind = if info["kind"] == "regression" {
        ConceptKind::Regression
    } else {
        ConceptKind::Binary
    };
    let regression = kind == ConceptKind::Regression;
    let labels = clip_labels(feats, kind)?;
    let classes = &labels.classes;
    let rows = selected_rows(feats, options.layers.as_deref())?;
    let (n, d) = (feats.n(), feats.d);
    let config = |layer: usize, class: usize| ConceptConfig {
        search: SearchConfig {
            samples: options.search,
            iters: options.iters,
            seed: probe_seed(options.seed, layer, class),
            ..SearchConfig::default()
        },
        ..ConceptConfig::default()
    };
    let binary_classes = if regression { 1 } else { classes.len() };
    let multiclass = !regression && options.multiclass;
    let started = std::time::Instant::now();
    let mut directions = vec![Vec::new(); binary_classes];
    let mut scores = vec![Vec::new(); binary_classes];
    let mut layers = Vec::new();
    let mut best: Option<(f64, usize, Probe<f32>)> = None;
    let mut layer_probes = Vec::new();
    let mut keep_best = |score: f64, layer: usize, probe: Probe<f32>| {
        if options.layer_probes {
            layer_probes.push((layer, probe.clone()));
        }
        if best.as_ref().is_none_or(|b| score > b.0) {
            best = Some((score, layer, probe));
        }
    };
    for &r in &rows {
        let layer = feats.layer_ids[r];
        let m = &feats.matrices[r];
        let x = Mat::<f32>::from_fn(n, d, |i, j| m[i * d + j]);
        let mut binary = Vec::new();
        for c in 0..binary_classes {
            progress(&format!("block {layer} {}", classes[c]));
            let one_vs_rest: Vec<bool> = labels.class_of.iter().map(|&k| k == c).collect();
            let l = if regression {
                Labels::Regression(&labels.values)
            } else {
                Labels::Binary(&one_vs_rest)
            };
            let p = train_concept_probe(x.as_ref(), l, &config(layer, c))
                .with_context(|| format!("block {layer}, class {}", classes[c]))?;
            directions[c].push(p.directions[0].iter().map(|&v| v as f32).collect());
            scores[c].push(p.val_score as f32);
            binary.push(ClassReport {
                class: classes[c].clone(),
                fit: FitReport::of(&p),
            });
            if regression {
                keep_best(p.val_score, layer, p.probe);
            }
        }
        let multiclass_fit = multiclass.then(|| {
            progress(&format!("block {layer} multiclass"));
            let l = Labels::Multiclass {
                labels: &labels.class_of,
                n_classes: classes.len(),
            };
            // A side product: a failed multiclass fit (e.g. a class missing from a small
            // validation split) is reported, not fatal.
            match train_concept_probe(x.as_ref(), l, &config(layer, usize::MAX >> 1)) {
                Ok(p) => {
                    let fit = FitReport::of(&p);
                    keep_best(p.val_score, layer, p.probe);
                    MulticlassFit::Fitted(fit)
                }
                Err(e) => MulticlassFit::Failed {
                    error: e.to_string(),
                },
            }
        });
        layers.push(LayerReport {
            block: layer,
            binary,
            multiclass: multiclass_fit,
        });
    }

    let file = DirectionsFile {
        concept: concept.to_owned(),
        classes: if regression {
            vec![classes.first().cloned().unwrap_or_else(|| "value".into())]
        } else {
            classes.clone()
        },
        kind,
        metric: if regression {
            "neg_mse"
        } else {
            "balanced_accuracy"
        }
        .into(),
        model: info["model"].as_str().unwrap_or_default().to_owned(),
        d_model: d,
        n_layers_model: info["n_layers_model"].as_u64().unwrap_or(0) as usize,
        pooling: "mean".into(),
        site: "block_output".into(),
        layers: rows.iter().map(|&r| feats.layer_ids[r] as i64).collect(),
        directions,
        scores,
    };
    let report = TrainReport {
        concept: concept.to_owned(),
        features: features_dir.display().to_string(),
        source: info["source"].as_str().unwrap_or_default().to_owned(),
        model: file.model.clone(),
        protocol: FeatureProtocol {
            text_conditioned: info["text_conditioned"].as_bool().unwrap_or(false),
            last_block_normed: info["last_block_normed"].as_bool().unwrap_or(false),
        },
        clips: n,
        classes: file.classes.clone(),
        kind,
        metric: file.metric.clone(),
        search: options.search,
        iters: options.iters,
        seed: options.seed,
        probe: best.as_ref().map(|(_, block, _)| ProbeReport {
            file: String::new(),
            block: *block,
            kind: if regression {
                "regression"
            } else {
                "multiclass"
            }
            .to_owned(),
        }),
        seconds: started.elapsed().as_secs_f64(),
        layers,
    };
    Ok(Trained {
        directions: file,
        probe: best.map(|b| b.2),
        layer_probes,
        report,
    })
}
