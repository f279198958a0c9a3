//! `cargo xtask train-probes`: RFM probes on extracted features (docs/algorithms.md §2, §3).
//!
//! Per layer: one balanced one-vs-rest binary probe per class (a regression probe for tempos),
//! whose sign-aligned top AGOP eigenvector is the class's direction and whose validation score
//! (balanced accuracy; −MSE for regression) is the layer's score; and one balanced multiclass
//! probe, evaluated on its test split. Writes the directions file v1 (`--out`), the best layer's
//! multiclass (or regression) probe beside it (`<stem>.probe.safetensors`), a report
//! (`<stem>.report.json`), a plot (`<stem>.png`), and prints a summary table.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use directions::faer::Mat;
use directions::{
    ConceptConfig, ConceptKind, DirectionsFile, Labels, SearchConfig, TestMetrics,
    train_concept_probe,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::feature_store::Features;
use crate::probe_plot;

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask train-probes",
    about = "Train RFM concept probes per layer and write a directions file v1"
)]
pub struct TrainProbesArgs {
    /// Features directory written by `cargo xtask extract`.
    #[arg(long)]
    pub features: PathBuf,
    /// The concept; must match the features' dataset.
    #[arg(long)]
    pub concept: String,
    /// Output directions file (`.safetensors`); the probe, report and plot go beside it.
    #[arg(long)]
    pub out: PathBuf,
    /// Hyper-parameter samples per probe (the paper: 100).
    #[arg(long, default_value_t = 100)]
    pub search: usize,
    /// RFM iterations per fit (the paper: 15).
    #[arg(long, default_value_t = 15)]
    pub iters: usize,
    /// Seed of the hyper-parameter draws (splits use MusicRFM's seed 42).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Only these 0-based blocks, comma separated (default: every extracted layer).
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<usize>>,
    /// Skip the multiclass probes.
    #[arg(long)]
    pub no_multiclass: bool,
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let args = TrainProbesArgs::try_parse_from(
        std::iter::once("cargo xtask train-probes".to_owned()).chain(args.iter().cloned()),
    )
    .unwrap_or_else(|e| e.exit());
    train(&args)
}

/// `<dir>/<stem><suffix>` beside `out`.
pub fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.with_file_name(format!("{stem}{suffix}"))
}

fn metrics_json(m: &TestMetrics) -> Value {
    json!({"auc": m.auc, "balanced_accuracy": m.balanced_accuracy, "accuracy": m.accuracy,
           "mse": m.mse, "r2": m.r2})
}

/// Seed of one probe's search, distinct per (layer, class).
fn probe_seed(seed: u64, layer: usize, class: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((layer as u64) << 20)
        .wrapping_add(class as u64 + 1)
}

pub fn train(args: &TrainProbesArgs) -> anyhow::Result<()> {
    if args.search == 0 {
        bail!("--search must be at least 1");
    }
    if args.out.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        bail!("--out {} must end in .safetensors", args.out.display());
    }
    let feats = Features::read(&args.features)?;
    let info = &feats.info;
    if info["concept"] != args.concept.as_str() {
        bail!(
            "--concept {} does not match --features {} (concept {})",
            args.concept,
            args.features.display(),
            info["concept"]
        );
    }
    let classes: Vec<String> = serde_json::from_value(info["classes"].clone())
        .context("features.json: `classes` is not a list of strings")?;
    let regression = info["kind"] == "regression";
    let n = feats.n();
    let class_of: Vec<usize> = feats
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
    let values: Vec<f64> = if regression {
        feats
            .manifest
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r["value"]
                    .as_f64()
                    .with_context(|| format!("manifest row {i}: no `value`"))
            })
            .collect::<anyhow::Result<_>>()?
    } else {
        Vec::new()
    };
    let rows: Vec<usize> = match &args.layers {
        None => (0..feats.layer_ids.len()).collect(),
        Some(want) => want
            .iter()
            .map(|b| {
                feats
                    .layer_ids
                    .iter()
                    .position(|l| l == b)
                    .with_context(|| {
                        format!("--layers {b}: not extracted (have {:?})", feats.layer_ids)
                    })
            })
            .collect::<anyhow::Result<_>>()?,
    };
    let d = feats.d;
    let config = |layer: usize, class: usize| ConceptConfig {
        search: SearchConfig {
            samples: args.search,
            iters: args.iters,
            seed: probe_seed(args.seed, layer, class),
            ..SearchConfig::default()
        },
        ..ConceptConfig::default()
    };
    let binary_classes = if regression { 1 } else { classes.len() };
    let multiclass = !regression && !args.no_multiclass;
    let total = rows.len() * (binary_classes + usize::from(multiclass));
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("probes [{bar:40}] {pos}/{len} {msg}, {elapsed} (eta {eta})")
            .expect("static template")
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let mut directions = vec![Vec::new(); binary_classes];
    let mut scores = vec![Vec::new(); binary_classes];
    let mut layer_reports = Vec::new();
    let mut best_probe: Option<(f64, usize, directions::Probe<f32>)> = None;
    for &r in &rows {
        let layer = feats.layer_ids[r];
        let m = &feats.matrices[r];
        let x = Mat::<f32>::from_fn(n, d, |i, j| m[i * d + j]);
        let mut per_class = Vec::new();
        for c in 0..binary_classes {
            bar.set_message(format!("block {layer} {}", classes[c]));
            let labels: Vec<bool> = class_of.iter().map(|&k| k == c).collect();
            let l = if regression {
                Labels::Regression(&values)
            } else {
                Labels::Binary(&labels)
            };
            let p = train_concept_probe(x.as_ref(), l, &config(layer, c))
                .with_context(|| format!("block {layer}, class {}", classes[c]))?;
            directions[c].push(
                p.directions[0]
                    .iter()
                    .map(|&v| v as f32)
                    .collect::<Vec<f32>>(),
            );
            scores[c].push(p.val_score as f32);
            per_class.push(json!({
                "class": classes[c], "val_score": p.val_score, "test": metrics_json(&p.test),
                "reg": p.params.reg, "bandwidth": p.params.kernel.bandwidth,
                "exponent": p.params.kernel.exponent, "center_grads": p.params.center_grads,
                "best_iter": p.best_iter,
                "split": [p.split.train.len(), p.split.val.len(), p.split.test.len()],
            }));
            if regression && best_probe.as_ref().is_none_or(|b| p.val_score > b.0) {
                best_probe = Some((p.val_score, layer, p.probe));
            }
            bar.inc(1);
        }
        let mut multi = Value::Null;
        if multiclass {
            bar.set_message(format!("block {layer} multiclass"));
            let l = Labels::Multiclass {
                labels: &class_of,
                n_classes: classes.len(),
            };
            // A side product: a failed multiclass fit (e.g. a class missing from a tiny
            // validation split) is reported, not fatal.
            match train_concept_probe(x.as_ref(), l, &config(layer, usize::MAX >> 1)) {
                Ok(p) => {
                    multi = json!({
                        "val_score": p.val_score, "test": metrics_json(&p.test),
                        "reg": p.params.reg, "bandwidth": p.params.kernel.bandwidth,
                        "exponent": p.params.kernel.exponent, "center_grads": p.params.center_grads,
                        "split": [p.split.train.len(), p.split.val.len(), p.split.test.len()],
                    });
                    if best_probe.as_ref().is_none_or(|b| p.val_score > b.0) {
                        best_probe = Some((p.val_score, layer, p.probe));
                    }
                }
                Err(e) => {
                    bar.println(format!("block {layer}: multiclass probe failed: {e}"));
                    multi = json!({"error": e.to_string()});
                }
            }
            bar.inc(1);
        }
        layer_reports.push(json!({"block": layer, "binary": per_class, "multiclass": multi}));
    }
    bar.finish_and_clear();

    let file = DirectionsFile {
        concept: args.concept.clone(),
        classes: if regression {
            vec![classes.first().cloned().unwrap_or_else(|| "value".into())]
        } else {
            classes.clone()
        },
        kind: if regression {
            ConceptKind::Regression
        } else {
            ConceptKind::Binary
        },
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
    let bytes = file.to_bytes(&args.out)?;
    let probe_path = sibling(&args.out, ".probe.safetensors");
    let report_path = sibling(&args.out, ".report.json");
    let plot_path = sibling(&args.out, ".png");
    let best_layer = best_probe.as_ref().map(|b| b.1);
    let report = json!({
        "concept": args.concept, "features": args.features.display().to_string(),
        "source": info["source"], "model": file.model, "clips": n, "classes": file.classes,
        "kind": if regression { "regression" } else { "binary" }, "metric": file.metric,
        "search": args.search, "iters": args.iters, "seed": args.seed,
        "probe": {"file": probe_path.file_name().map(|f| f.to_string_lossy().into_owned()),
                  "block": best_layer, "kind": if regression { "regression" } else { "multiclass" }},
        "seconds": started.elapsed().as_secs_f64(),
        "layers": layer_reports,
    });
    crate::atomic_write(&args.out, |f| {
        use std::io::Write;
        Ok(f.write_all(&bytes)?)
    })?;
    if let Some((_, _, probe)) = &best_probe {
        let probe_bytes = probe.to_bytes()?;
        crate::atomic_write(&probe_path, |f| {
            use std::io::Write;
            Ok(f.write_all(&probe_bytes)?)
        })?;
    } else {
        eprintln!(
            "no multiclass probe could be fitted; {} not written",
            probe_path.display()
        );
    }
    crate::atomic_write(&report_path, |f| {
        use std::io::Write;
        Ok(f.write_all(serde_json::to_string_pretty(&report)?.as_bytes())?)
    })?;
    // The PNG encoder picks the format from the extension, so the temporary keeps `.png`.
    let plot_tmp = plot_path.with_extension(format!("tmp-{}.png", std::process::id()));
    probe_plot::plot(&plot_tmp, &report)
        .and_then(|()| Ok(std::fs::rename(&plot_tmp, &plot_path)?))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&plot_tmp);
        })
        .with_context(|| format!("writing {}", plot_path.display()))?;
    print_summary(&report);
    eprintln!(
        "wrote {}, {}, {}, {} in {:.1} s",
        args.out.display(),
        probe_path.display(),
        report_path.display(),
        plot_path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn print_summary(report: &Value) {
    let empty = Vec::new();
    let layers = report["layers"].as_array().unwrap_or(&empty);
    let classes: Vec<String> = report["classes"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|c| c.as_str().unwrap_or("?").to_owned())
        .collect();
    let mut header = format!("{:>6}", "block");
    for c in &classes {
        header.push_str(&format!(" {c:>8}"));
    }
    header.push_str(&format!(" {:>10} {:>10}", "multi-auc", "multi-acc"));
    println!(
        "{} ({}; val score per class, multiclass test)",
        report["concept"].as_str().unwrap_or(""),
        report["metric"].as_str().unwrap_or("")
    );
    println!("{header}");
    for l in layers {
        let mut line = format!("{:>6}", l["block"]);
        for c in l["binary"].as_array().unwrap_or(&empty) {
            line.push_str(&format!(
                " {:>8.3}",
                c["val_score"].as_f64().unwrap_or(f64::NAN)
            ));
        }
        let t = &l["multiclass"]["test"];
        line.push_str(&format!(
            " {:>10.3} {:>10.3}",
            t["auc"].as_f64().unwrap_or(f64::NAN),
            t["accuracy"].as_f64().unwrap_or(f64::NAN)
        ));
        println!("{line}");
    }
}
