//! `cargo xtask eval-steering` end to end on the tiny fixture model: the protocol runs, reads the
//! block from the probe's typed report, prints the full table (η, accuracy or BPM shift, codes
//! changed, FD, MMD²), writes a results JSON and a PNG; η = 0 reproduces the unsteered clips code
//! for code (codes changed, FD and MMD² all 0) and η ≠ 0 changes them (so the test fails if
//! steering were ignored). The layer-aggregated classifier with the reference layer protocol and a
//! regression (tempo) probe run too. Accuracies and shifts mean nothing on random weights; the
//! protocol is what is tested.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use directions::faer::Mat;
use directions::{ConceptKind, DirectionsFile, KernelParams, Probe, ProbeKind};
use xtask::training::{
    ClassReport, FitReport, LayerReport, MetricsReport, MulticlassFit, ProbeReport, TrainReport,
    layer_probe_path,
};

fn fixtures() -> PathBuf {
    xtask::workspace_root().join("tests/fixtures")
}

/// A probe over the tiny model's 32-wide block outputs with `outputs` columns.
fn probe(kind: ProbeKind, salt: usize) -> Probe<f32> {
    let d = 32;
    let outputs = kind.n_outputs();
    let centers = Mat::<f32>::from_fn(6, d, |i, j| {
        ((i * 7 + j * 3 + salt) % 11) as f32 / 11.0 - 0.5
    });
    let alpha = Mat::<f32>::from_fn(6, outputs, |i, j| if (i + j) % 2 == 0 { 1.0 } else { -0.5 });
    let (mean, std) = match kind {
        ProbeKind::Regression => (120.0, 30.0),
        _ => (0.0, 1.0),
    };
    Probe::new(
        kind,
        KernelParams {
            bandwidth: 10.0,
            exponent: 1.0,
        },
        1e-3,
        false,
        Mat::<f32>::identity(d, d),
        centers,
        alpha,
        mean,
        std,
    )
    .unwrap()
}

fn fit() -> FitReport {
    FitReport {
        val_score: 0.5,
        test: MetricsReport::default(),
        reg: 1e-3,
        bandwidth: 10.0,
        exponent: 1.0,
        center_grads: false,
        best_iter: 0,
        split: [0, 0, 0],
    }
}

/// Writes `<stem>.probe.safetensors`, its report, and one probe per block 0 and 1.
fn write_probes(dir: &Path, stem: &str, kind: ProbeKind, classes: &[&str]) -> PathBuf {
    let path = dir.join(format!("{stem}.probe.safetensors"));
    probe(kind, 0).save(&path).unwrap();
    let regression = kind == ProbeKind::Regression;
    let mut layers = Vec::new();
    for block in 0..2 {
        probe(kind, block + 1)
            .save(&layer_probe_path(&path, block).unwrap())
            .unwrap();
        layers.push(LayerReport {
            block,
            // A regression concept's one probe per block; a multiclass one's binary probes are
            // not read.
            binary: if regression {
                vec![ClassReport {
                    class: "bpm".into(),
                    fit: fit(),
                }]
            } else {
                Vec::new()
            },
            multiclass: (!regression).then(|| MulticlassFit::Fitted(fit())),
        });
    }
    let report = TrainReport {
        concept: stem.into(),
        features: "features/".into(),
        source: "musicgen".into(),
        model: "musicgen-tiny".into(),
        protocol: Default::default(),
        clips: 0,
        classes: classes.iter().map(|c| c.to_string()).collect(),
        kind: if regression {
            ConceptKind::Regression
        } else {
            ConceptKind::Binary
        },
        metric: "balanced_accuracy".into(),
        search: 1,
        iters: 1,
        seed: 0,
        probe: Some(ProbeReport {
            file: format!("{stem}.probe.safetensors"),
            block: 1,
            kind: if regression {
                "regression"
            } else {
                "multiclass"
            }
            .into(),
        }),
        seconds: 0.0,
        layers,
    };
    std::fs::write(
        dir.join(format!("{stem}.report.json")),
        serde_json::to_string(&report).unwrap(),
    )
    .unwrap();
    path
}

fn eval(
    directions: &Path,
    probe: &Path,
    out: &Path,
    extra: &[&str],
) -> (serde_json::Value, String) {
    let output: Output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["eval-steering", "--model"])
        .arg(fixtures().join("musicgen-tiny"))
        .arg("--directions")
        .arg(directions)
        .arg("--probe")
        .arg(probe)
        .args(["--seconds", "0.3", "--prompts", "jazz|rock", "--gate", "1"])
        .args(extra)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let png = std::fs::read(out.join("eval.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    (
        results,
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// η = 0 reproduces the unsteered clips (codes, FD, MMD² all 0); η ≠ 0 changes the codes, and
/// the distances when `distances_move` (on audio features: the tiny fixture's random codec maps
/// its own generations to one set of codes, so its block features do not tell clips apart).
fn assert_steering_moves(rows: &[serde_json::Value], etas: &[f64], distances_move: bool) {
    assert_eq!(rows.len(), etas.len());
    for (row, &eta) in rows.iter().zip(etas) {
        assert_eq!(row["eta"].as_f64().unwrap(), eta);
        let changed = row["codes_changed"].as_f64().unwrap();
        let fd = row["frechet_distance"].as_f64().unwrap();
        let mmd = row["mmd"].as_f64().unwrap();
        if eta == 0.0 {
            assert_eq!(changed, 0.0, "η = 0 must reproduce the unsteered clips");
            assert!(fd.abs() < 1e-6, "η = 0: FD {fd}");
            assert!(mmd.abs() < 1e-12, "η = 0: MMD² {mmd}");
        } else {
            assert!(
                changed > 0.2,
                "η = {eta} changed only {changed} of the codes"
            );
            if distances_move {
                assert!(fd > 1e-6, "η = {eta}: FD {fd}");
                assert!(mmd != 0.0, "η = {eta}: MMD² {mmd}");
            }
        }
    }
}

/// The table: a header with every column and one line per η.
fn assert_table(stdout: &str, first: &str, etas: &[&str]) {
    let header = stdout
        .lines()
        .find(|l| l.contains("codes changed"))
        .unwrap_or_else(|| panic!("no table header in {stdout}"));
    for column in ["η", first, "FD", "MMD²"] {
        assert!(header.contains(column), "{column} missing from {header}");
    }
    for eta in etas {
        assert!(
            stdout.lines().any(|l| l.trim_start().starts_with(eta)),
            "no row for η = {eta} in {stdout}"
        );
    }
}

#[test]
fn eval_steering_runs_the_protocol_on_a_tiny_model() {
    let dir = std::env::temp_dir().join(format!("musicrfm-eval-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let steer = fixtures().join("reference/musicgen-tiny.steer.safetensors");
    let classes = DirectionsFile::read(&steer).unwrap().classes;
    let names: Vec<&str> = classes.iter().map(String::as_str).collect();
    let probe_path = write_probes(
        &dir,
        "fixture",
        ProbeKind::Multiclass {
            n_classes: names.len(),
        },
        &names,
    );

    // The best block's probe (the default), model features for the distances.
    let out = dir.join("eval");
    let (results, stdout) = eval(
        &steer,
        &probe_path,
        &out,
        &["--etas", "0,2,-2", "--clips", "2", "--classes", "0,1"],
    );
    assert_eq!(results["block"], 1, "block read from the probe's report");
    assert_eq!(results["classifier"], "block");
    assert_eq!(results["layer_protocol"], "ours");
    assert_eq!(results["distance_features"], "model");
    assert_eq!(results["distance_block"], 1, "the last block by default");
    assert_eq!(
        results["chance"].as_f64().unwrap(),
        1.0 / names.len() as f64
    );
    let rows = results["rows"].as_array().unwrap();
    assert_steering_moves(rows, &[0.0, 2.0, -2.0], false);
    for row in rows {
        let acc = row["accuracy"].as_f64().unwrap();
        assert!(
            (0.0..=1.0).contains(&acc) && (acc * 4.0).fract() == 0.0,
            "accuracy {acc} over 2 classes × 2 clips"
        );
        assert_eq!(row["per_class"].as_array().unwrap().len(), 2);
        assert!(row["bpm_shift"].is_null());
    }
    assert_table(&stdout, "accuracy", &["0.000", "2.000", "-2.000"]);
    assert!(
        stdout.contains(&format!("chance {:.3}", 1.0 / names.len() as f64)),
        "{stdout}"
    );

    // The mean of the per-block probes under MusicRFM's layer protocol: block 0 is neither read
    // nor steered; log-mel for the distances.
    let out = dir.join("eval-layers");
    let (results, stdout) = eval(
        &steer,
        &probe_path,
        &out,
        &[
            "--etas",
            "0,3",
            "--clips",
            "2",
            "--classes",
            "0",
            "--classifier",
            "layers",
            "--layer-protocol",
            "reference",
            "--distance-features",
            "logmel",
        ],
    );
    assert_eq!(results["classifier"], "layers");
    assert!(results["block"].is_null());
    assert_eq!(results["classifier_blocks"], serde_json::json!([1]));
    assert_eq!(results["protocol"]["last_block_normed"], true);
    let steered = results["steered_blocks"].as_array().unwrap();
    assert!(
        !steered.is_empty() && steered.iter().all(|b| b != 0),
        "{steered:?}"
    );
    assert!(results["distance_block"].is_null());
    assert_steering_moves(results["rows"].as_array().unwrap(), &[0.0, 3.0], true);
    assert_table(&stdout, "accuracy", &["0.000", "3.000"]);

    // A per-block probe that was never written is named, with the flag that writes it.
    std::fs::remove_file(layer_probe_path(&probe_path, 0).unwrap()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["eval-steering", "--model"])
        .arg(fixtures().join("musicgen-tiny"))
        .arg("--directions")
        .arg(&steer)
        .arg("--probe")
        .arg(&probe_path)
        .args(["--classifier", "layers", "--out"])
        .arg(dir.join("missing"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success()
            && stderr.contains("--layer-probes")
            && stderr.contains(".probe.b0."),
        "{stderr}"
    );

    // A probe of the wrong width is refused with both numbers named.
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["eval-steering", "--model"])
        .arg(fixtures().join("musicgen-tiny-b"))
        .arg("--directions")
        .arg(&steer)
        .arg("--probe")
        .arg(&probe_path)
        .arg("--out")
        .arg(dir.join("bad"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("32 features") && stderr.contains("width 36"),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn eval_steering_reports_the_bpm_shift_of_a_regression_probe() {
    let dir = std::env::temp_dir().join(format!("musicrfm-eval-tempo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // A tempo directions file over the tiny model's two blocks.
    let steer = dir.join("tempo.safetensors");
    let unit = |salt: usize| {
        let v: Vec<f32> = (0..32)
            .map(|j| (((j * 5 + salt) % 7) as f32) - 3.0)
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect::<Vec<_>>()
    };
    DirectionsFile {
        concept: "tempos".into(),
        classes: vec!["bpm".into()],
        kind: ConceptKind::Regression,
        metric: "neg_mse".into(),
        model: "musicgen-tiny".into(),
        d_model: 32,
        n_layers_model: 2,
        pooling: "mean".into(),
        site: "block_output".into(),
        layers: vec![0, 1],
        directions: vec![vec![unit(1), unit(2)]],
        scores: vec![vec![-0.5, -0.2]],
    }
    .write(&steer)
    .unwrap();
    let probe_path = write_probes(&dir, "tempo", ProbeKind::Regression, &["bpm"]);

    let out = dir.join("eval");
    let (results, stdout) = eval(
        &steer,
        &probe_path,
        &out,
        &[
            "--etas",
            "0,3,-3",
            "--clips",
            "3",
            "--layers",
            "all",
            "--classifier",
            "layers",
            "--distance-features",
            "logmel",
        ],
    );
    assert_eq!(results["kind"], "regression");
    assert_eq!(results["classifier_blocks"], serde_json::json!([0, 1]));
    assert!(results["chance"].is_null());
    let unsteered = results["unsteered_mean"].as_f64().unwrap();
    assert!(unsteered.is_finite());
    let rows = results["rows"].as_array().unwrap();
    assert_steering_moves(rows, &[0.0, 3.0, -3.0], true);
    for row in rows {
        assert!(row["accuracy"].is_null());
        let mean = row["mean_prediction"].as_f64().unwrap();
        let shift = row["bpm_shift"].as_f64().unwrap();
        assert!((shift - (mean - unsteered)).abs() < 1e-9);
        if row["eta"].as_f64().unwrap() == 0.0 {
            assert_eq!(shift, 0.0, "η = 0 predicts the unsteered clips' tempo");
        }
    }
    assert_table(&stdout, "BPM shift", &["0.000", "3.000", "-3.000"]);
    std::fs::remove_dir_all(dir).unwrap();
}
