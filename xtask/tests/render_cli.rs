//! `cargo xtask render` end to end on the tiny fixture models: a valid WAV of the requested
//! length, codes equal to the reference's greedy codes, clear errors for bad flags, and an
//! existing output left alone when a run fails.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    xtask::workspace_root().join("tests/fixtures")
}

fn out_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("musicrfm-render-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn render(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("render")
        .args(args)
        .output()
        .expect("run xtask")
}

/// A minimal .npy reader for int64 C-order arrays.
fn read_npy_i64(path: &Path) -> (Vec<usize>, Vec<i64>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(
        header.contains("'descr': '<i8'") && header.contains("'fortran_order': False"),
        "{header}"
    );
    assert_eq!((10 + header_len) % 64, 0, "header padded to 64 bytes");
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape_text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let data: Vec<i64> = bytes[10 + header_len..]
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(data.len(), shape.iter().product::<usize>());
    (shape, data)
}

#[test]
fn renders_a_wav_of_the_requested_length() {
    for model in ["musicgen-tiny", "musicgen-tiny-b"] {
        let dir = out_dir(model);
        let wav = dir.join("out.wav");
        let model_dir = fixtures().join(model);
        let output = render(&[
            "--model",
            model_dir.to_str().unwrap(),
            "--prompt",
            "80s pop track with bassy drums and synth",
            "--seconds",
            "1.5",
            "--seed",
            "7",
            "--out",
            wav.to_str().unwrap(),
        ]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let reader = hound::WavReader::open(&wav).expect("a valid WAV");
        let spec = reader.spec();
        assert_eq!((spec.sample_rate, spec.channels), (32_000, 1));
        assert_eq!(reader.len(), 48_000, "1.5 s at 32 kHz");
        let samples: Vec<f32> = reader.into_samples::<f32>().map(Result::unwrap).collect();
        assert!(samples.iter().all(|s| s.is_finite()));
        assert!(samples.iter().any(|&s| s.abs() > 1e-3), "not silence");
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn greedy_render_gives_the_reference_codes_and_seeds_repeat() {
    let dir = out_dir("greedy");
    let model_dir = fixtures().join("musicgen-tiny");
    let codes = dir.join("codes.npy");
    let output = render(&[
        "--model",
        model_dir.to_str().unwrap(),
        "--prompt",
        "A relaxing jazz song with piano",
        "--steps",
        "48",
        "--greedy",
        "--guidance",
        "3",
        "--out",
        dir.join("g.wav").to_str().unwrap(),
        "--codes-out",
        codes.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (shape, data) = read_npy_i64(&codes);
    assert_eq!(shape, vec![4, 45]);
    let reference = safetensors_i64(
        &fixtures().join("reference/musicgen-tiny.safetensors"),
        "prompt1.greedy_g3.codes",
    );
    assert_eq!(
        data, reference,
        "render --greedy reproduces the reference codes"
    );

    // Sampling: same seed ⇒ the same file, bit for bit; another seed ⇒ other codes.
    let run = |seed: &str, name: &str| {
        let wav = dir.join(name);
        let out = render(&[
            "--model",
            model_dir.to_str().unwrap(),
            "--prompt",
            "jazz",
            "--steps",
            "30",
            "--seed",
            seed,
            "--out",
            wav.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read(wav).unwrap()
    };
    assert_eq!(run("11", "a.wav"), run("11", "b.wav"));
    assert_ne!(run("11", "a.wav"), run("12", "c.wav"));
    std::fs::remove_dir_all(dir).unwrap();
}

fn safetensors_i64(path: &Path, key: &str) -> Vec<i64> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let info = &header[key];
    assert_eq!(info["dtype"], "I64");
    let start = info["data_offsets"][0].as_u64().unwrap() as usize + 8 + n;
    let end = info["data_offsets"][1].as_u64().unwrap() as usize + 8 + n;
    bytes[start..end]
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[test]
fn bad_flags_are_named_and_existing_output_survives() {
    let dir = out_dir("errors");
    let wav = dir.join("keep.wav");
    std::fs::write(&wav, b"precious").unwrap();
    let model_dir = fixtures().join("musicgen-tiny");
    let model = model_dir.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["--seconds", "-1"], "--seconds must be a positive number"),
        (
            &["--seconds", "1", "--top-p", "1.5"],
            "--top-p must be in (0, 1]",
        ),
        (
            &["--seconds", "1", "--temperature", "0"],
            "--temperature must be positive",
        ),
        (&["--steps", "0"], "--steps must be at least 1"),
        (&["--seconds", "1", "--bogus"], "--bogus"),
    ];
    for (extra, message) in cases {
        let mut args = vec![
            "--model",
            model,
            "--prompt",
            "x",
            "--out",
            wav.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let output = render(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{extra:?} should fail");
        assert!(stderr.contains(message), "{extra:?}: {stderr}");
    }
    let output = render(&[
        "--model",
        dir.join("nothing-here").to_str().unwrap(),
        "--prompt",
        "x",
        "--seconds",
        "1",
        "--out",
        wav.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("nothing-here"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&wav).unwrap(),
        b"precious",
        "a failed run leaves the old file alone"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// `render --steer … --layers … --gate 1 --greedy` reproduces the reference's forward hooks
/// (one layer; all layers with linear weights; two directions at once) on both tiny models.
#[test]
fn steered_greedy_render_matches_reference_hooks() {
    for model in ["musicgen-tiny", "musicgen-tiny-b"] {
        let reference_dir = fixtures().join("reference");
        let facts: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(reference_dir.join(format!("{model}.json"))).unwrap(),
        )
        .unwrap();
        let steering = &facts["steering"];
        let dir = out_dir(&format!("steer-{model}"));
        for (case, spec) in steering["cases"].as_object().unwrap() {
            let codes = dir.join(format!("{case}.npy"));
            let model_dir = fixtures().join(model);
            let mut args: Vec<String> = vec![
                "--model".into(),
                model_dir.to_str().unwrap().into(),
                "--prompt".into(),
                steering["prompt"].as_str().unwrap().into(),
                "--steps".into(),
                steering["steps"].to_string(),
                "--greedy".into(),
                "--guidance".into(),
                "3".into(),
                "--gate".into(),
                "1".into(),
                "--layers".into(),
                spec["layers_flag"].as_str().unwrap().into(),
                "--out".into(),
                dir.join(format!("{case}.wav")).to_str().unwrap().into(),
                "--codes-out".into(),
                codes.to_str().unwrap().into(),
            ];
            for flag in spec["steer_flags"].as_array().unwrap() {
                args.push("--steer".into());
                args.push(
                    reference_dir
                        .join(flag.as_str().unwrap())
                        .to_str()
                        .unwrap()
                        .into(),
                );
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let output = render(&args);
            assert!(
                output.status.success(),
                "{model} {case}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let (_, data) = read_npy_i64(&codes);
            let expected = safetensors_i64(
                &reference_dir.join(format!("{model}.safetensors")),
                &format!("steer.{case}.codes"),
            );
            let unsteered = safetensors_i64(
                &reference_dir.join(format!("{model}.safetensors")),
                "prompt0.greedy_g3.codes",
            );
            assert_ne!(
                expected, unsteered,
                "{model} {case}: the case must change the codes"
            );
            assert_eq!(
                data, expected,
                "{model} {case}: steered codes differ from the reference hooks"
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
