//! `cargo xtask eval-steering` end to end on the tiny fixture model: the protocol runs, reads the
//! block from the probe's typed report, writes a results JSON with one accuracy per strength (a
//! multiple of 1/clips), the chance line, and a PNG; η = 0 reproduces the unsteered clips code
//! for code and η ≠ 0 changes them (so the test fails if steering were ignored). Accuracies mean
//! nothing on random weights; the protocol is what is tested.

use std::path::PathBuf;
use std::process::Command;

use directions::faer::Mat;
use directions::{KernelParams, Probe, ProbeKind};
use xtask::training::{ProbeReport, TrainReport};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

#[test]
fn eval_steering_runs_the_protocol_on_a_tiny_model() {
    let dir = std::env::temp_dir().join(format!("musicrfm-eval-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // A 2-class probe over the tiny model's 32-wide block outputs.
    let d = 32;
    let centers = Mat::<f32>::from_fn(6, d, |i, j| ((i * 7 + j * 3) % 11) as f32 / 11.0 - 0.5);
    let alpha = Mat::<f32>::from_fn(6, 2, |i, j| if (i + j) % 2 == 0 { 1.0 } else { -0.5 });
    let m = Mat::<f32>::identity(d, d);
    let probe = Probe::new(
        ProbeKind::Multiclass { n_classes: 2 },
        KernelParams {
            bandwidth: 10.0,
            exponent: 1.0,
        },
        1e-3,
        false,
        m,
        centers,
        alpha,
        0.0,
        1.0,
    )
    .unwrap();
    let probe_path = dir.join("fixture.probe.safetensors");
    probe.save(&probe_path).unwrap();
    let report = TrainReport {
        concept: "fixture".into(),
        features: "features/".into(),
        source: "musicgen".into(),
        model: "musicgen-tiny".into(),
        protocol: Default::default(),
        clips: 0,
        classes: vec!["up".into(), "down".into()],
        kind: directions::ConceptKind::Binary,
        metric: "balanced_accuracy".into(),
        search: 1,
        iters: 1,
        seed: 0,
        probe: Some(ProbeReport {
            file: "fixture.probe.safetensors".into(),
            block: 1,
            kind: "multiclass".into(),
        }),
        seconds: 0.0,
        layers: Vec::new(),
    };
    std::fs::write(
        dir.join("fixture.report.json"),
        serde_json::to_string(&report).unwrap(),
    )
    .unwrap();

    let out = dir.join("eval");
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["eval-steering", "--model"])
        .arg(fixtures().join("musicgen-tiny"))
        .arg("--directions")
        .arg(fixtures().join("reference/musicgen-tiny.steer.safetensors"))
        .arg("--probe")
        .arg(&probe_path)
        .args([
            "--etas",
            "0,2,-2",
            "--clips",
            "2",
            "--seconds",
            "0.3",
            "--prompts",
            "jazz|rock",
            "--gate",
            "1",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["block"], 1, "block read from the probe's report");
    assert_eq!(results["chance"], 0.5);
    assert_eq!(results["classes"], serde_json::json!(["up", "down"]));
    let rows = results["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for (row, eta) in rows.iter().zip([0.0, 2.0, -2.0]) {
        assert_eq!(row["eta"].as_f64().unwrap(), eta);
        let acc = row["accuracy"].as_f64().unwrap();
        assert!(
            (0.0..=1.0).contains(&acc) && (acc * 4.0).fract() == 0.0,
            "accuracy {acc} over 2 classes × 2 clips"
        );
        assert_eq!(row["per_class"].as_array().unwrap().len(), 2);
        let changed = row["codes_changed"].as_f64().unwrap();
        if eta == 0.0 {
            assert_eq!(changed, 0.0, "η = 0 must reproduce the unsteered clips");
        } else {
            assert!(
                changed > 0.2,
                "η = {eta} changed only {changed} of the codes"
            );
        }
    }
    let png = std::fs::read(out.join("accuracy.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("chance 0.500"), "{stdout}");

    // A probe of the wrong width is refused with both numbers named.
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["eval-steering", "--model"])
        .arg(fixtures().join("musicgen-tiny-b"))
        .arg("--directions")
        .arg(fixtures().join("reference/musicgen-tiny.steer.safetensors"))
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
