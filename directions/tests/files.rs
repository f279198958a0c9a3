//! Directions and probe files: round trips, and every kind of corrupt file rejected with its own
//! error (and a message naming the file and what is wrong).

use std::collections::HashMap;
use std::path::Path;

use directions::faer::Mat;
use directions::{
    ConceptKind, DirectionsFile, DirectionsFileError as E, KernelParams, Probe,
    ProbeFileError as P, ProbeKind, Rng,
};
use safetensors::{Dtype, tensor::TensorView};

fn unit(d: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let v: Vec<f64> = (0..d).map(|_| rng.normal()).collect();
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.iter().map(|x| (x / n) as f32).collect()
}

fn sample() -> DirectionsFile {
    let (d, layers) = (8, vec![0i64, 2, 5]);
    DirectionsFile {
        concept: "notes".into(),
        classes: vec!["C".into(), "C#".into()],
        kind: ConceptKind::Binary,
        metric: "balanced_accuracy".into(),
        model: "facebook/musicgen-small".into(),
        d_model: d,
        n_layers_model: 6,
        pooling: "mean".into(),
        site: "block_output".into(),
        directions: (0..2)
            .map(|c| (0..3).map(|r| unit(d, 10 * c + r)).collect())
            .collect(),
        scores: vec![vec![0.9, 0.8, 0.95], vec![0.7, 0.75, 0.6]],
        layers,
    }
}

/// (name, dtype, shape, little-endian bytes)
type RawTensor = (&'static str, Dtype, Vec<usize>, Vec<u8>);
/// (what is broken, file bytes, expected error kind, expected message part)
type DirCase = (&'static str, Vec<u8>, fn(&E) -> bool, &'static str);
type ProbeCase = (&'static str, Vec<u8>, fn(&P) -> bool);

const ORIGIN: &str = "notes.safetensors";

/// Rebuilds a file from raw parts so any field can be broken.
fn raw(tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)>, meta: HashMap<String, String>) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, dt, s, b)| {
            (
                n.to_string(),
                TensorView::new(*dt, s.clone(), b).expect("view"),
            )
        })
        .collect();
    safetensors::serialize(views, Some(meta)).expect("serialize")
}

fn parts(f: &DirectionsFile) -> (Vec<RawTensor>, HashMap<String, String>) {
    let bytes = f.to_bytes(Path::new(ORIGIN)).expect("valid");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("st");
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).expect("meta");
    let meta = header.metadata().clone().expect("metadata");
    let tensors = ["directions", "scores", "layers"]
        .map(|n| {
            let t = st.tensor(n).expect("tensor");
            (n, t.dtype(), t.shape().to_vec(), t.data().to_vec())
        })
        .to_vec();
    (tensors, meta)
}

fn read(bytes: &[u8]) -> Result<DirectionsFile, E> {
    DirectionsFile::from_bytes(bytes, Path::new(ORIGIN))
}

#[test]
fn directions_file_round_trips_through_disk() {
    let f = sample();
    let dir = std::env::temp_dir().join(format!("musicrfm-dirs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let path = dir.join("notes.safetensors");
    f.write(&path).expect("write");
    assert_eq!(DirectionsFile::read(&path).expect("read"), f);
    let mut reg = sample();
    reg.kind = ConceptKind::Regression;
    reg.classes = vec!["bpm".into()];
    reg.directions.truncate(1);
    reg.scores.truncate(1);
    assert_eq!(
        read(&reg.to_bytes(Path::new(ORIGIN)).expect("valid")).expect("read"),
        reg
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn each_corrupt_directions_file_gets_its_own_error() {
    let good = sample();
    let (tensors, meta) = parts(&good);
    let with_meta = |key: &str, value: Option<&str>| {
        let mut m = meta.clone();
        match value {
            Some(v) => m.insert(key.to_string(), v.to_string()),
            None => m.remove(key),
        };
        raw(tensors.clone(), m)
    };
    let without_tensor = |name: &str| {
        raw(
            tensors.iter().filter(|t| t.0 != name).cloned().collect(),
            meta.clone(),
        )
    };
    let replace_tensor = |name: &'static str, dt: Dtype, shape: Vec<usize>, bytes: Vec<u8>| {
        let mut t: Vec<_> = tensors.iter().filter(|t| t.0 != name).cloned().collect();
        t.push((name, dt, shape, bytes));
        raw(t, meta.clone())
    };

    let cases: Vec<DirCase> = vec![
        (
            "garbage",
            b"not a safetensors file".to_vec(),
            |e| matches!(e, E::NotSafetensors { .. }),
            "not a safetensors",
        ),
        (
            "missing tensor",
            without_tensor("scores"),
            |e| matches!(e, E::MissingTensor { name: "scores", .. }),
            "`scores` is missing",
        ),
        (
            "unknown version",
            with_meta("format", Some("musicrfm.directions.v2")),
            |e| matches!(e, E::UnknownFormat { .. }),
            "unknown directions format version `musicrfm.directions.v2`",
        ),
        (
            "missing metadata",
            with_meta("model", None),
            |e| matches!(e, E::MissingMetadata { key: "model", .. }),
            "`model` is missing",
        ),
        (
            "bad classes",
            with_meta("classes", Some("C, C#")),
            |e| matches!(e, E::BadMetadata { key: "classes", .. }),
            "JSON array",
        ),
        (
            "bad kind",
            with_meta("kind", Some("ternary")),
            |e| matches!(e, E::BadMetadata { key: "kind", .. }),
            "`ternary`",
        ),
        (
            "bad d_model",
            with_meta("d_model", Some("eight")),
            |e| matches!(e, E::BadMetadata { key: "d_model", .. }),
            "not a non-negative integer",
        ),
        (
            "class count vs tensor",
            with_meta("classes", Some("[\"C\"]")),
            |e| {
                matches!(
                    e,
                    E::WrongDims {
                        name: "directions",
                        ..
                    }
                )
            },
            "[classes, layers, d_model]",
        ),
        (
            "wrong d_model",
            with_meta("d_model", Some("16")),
            |e| {
                matches!(
                    e,
                    E::WrongDims {
                        name: "directions",
                        ..
                    }
                )
            },
            "expected [2, 3, 16]",
        ),
        (
            "wrong scores dims",
            replace_tensor("scores", Dtype::F32, vec![2, 2], vec![0; 16]),
            |e| matches!(e, E::WrongDims { name: "scores", .. }),
            "`scores` has shape [2, 2]",
        ),
        (
            "wrong dtype",
            replace_tensor("layers", Dtype::I32, vec![3], vec![0; 12]),
            |e| matches!(e, E::WrongDtype { name: "layers", .. }),
            "dtype I32, expected I64",
        ),
        (
            "non-unit vector",
            {
                let mut f = good.clone();
                f.directions[1][2].iter_mut().for_each(|x| *x *= 1.5);
                let (mut t, m) = parts(&sample());
                let bytes: Vec<u8> = f
                    .directions
                    .iter()
                    .flatten()
                    .flatten()
                    .flat_map(|x| x.to_le_bytes())
                    .collect();
                t[0].3 = bytes;
                raw(t, m)
            },
            |e| {
                matches!(
                    e,
                    E::NonUnitVector {
                        class: 1,
                        row: 2,
                        block: 5,
                        ..
                    }
                )
            },
            "class 1 at layer row 2 (block 5) has norm 1.5000",
        ),
        (
            "layer out of range",
            replace_tensor(
                "layers",
                Dtype::I64,
                vec![3],
                [0i64, 2, 6].iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            |e| matches!(e, E::LayerOutOfRange { block: 6, .. }),
            "layer index 6 at row 2 is outside 0..6",
        ),
        (
            "duplicate layer",
            replace_tensor(
                "layers",
                Dtype::I64,
                vec![3],
                [0i64, 2, 2].iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            |e| matches!(e, E::DuplicateLayer { block: 2, .. }),
            "appears twice",
        ),
        (
            "bad pooling",
            with_meta("pooling", Some("max")),
            |e| matches!(e, E::BadMetadata { key: "pooling", .. }),
            "only `mean`",
        ),
        (
            "regression with two classes",
            with_meta("kind", Some("regression")),
            |e| matches!(e, E::BadMetadata { key: "classes", .. }),
            "exactly one class",
        ),
    ];
    let mut messages = std::collections::HashSet::new();
    for (what, bytes, is_kind, needle) in cases {
        let err = read(&bytes).expect_err(what);
        let msg = err.to_string();
        assert!(is_kind(&err), "{what}: wrong error kind: {msg}");
        assert!(
            msg.contains(needle),
            "{what}: message `{msg}` lacks `{needle}`"
        );
        assert!(
            msg.starts_with(ORIGIN),
            "{what}: message must name the file: {msg}"
        );
        assert!(
            messages.insert(msg.clone()),
            "{what}: message not distinct: {msg}"
        );
    }
    // writing refuses an invalid file too
    let mut bad = sample();
    bad.scores[0].pop();
    assert!(matches!(
        bad.write(Path::new("/nonexistent/x")),
        Err(E::WrongDims { name: "scores", .. })
    ));
}

fn probe() -> Probe<f32> {
    let mut rng = Rng::new(4);
    let (n, d) = (12, 5);
    let centers = Mat::<f32>::from_fn(n, d, |_, _| rng.normal() as f32);
    let a = Mat::<f32>::from_fn(d, d, |_, _| rng.normal() as f32);
    let m = &a * a.transpose();
    let alpha = Mat::<f32>::from_fn(n, 1, |_, _| rng.normal() as f32);
    Probe::new(
        ProbeKind::Regression,
        KernelParams {
            bandwidth: 3.5,
            exponent: 1.2,
        },
        1e-3,
        true,
        m,
        centers,
        alpha,
        120.0,
        30.0,
    )
    .expect("probe")
}

#[test]
fn probe_round_trips_and_predicts_the_same() {
    let p = probe();
    let bytes = p.to_bytes().expect("bytes");
    let q = Probe::<f32>::from_bytes(&bytes, Path::new("p.safetensors")).expect("load");
    assert_eq!(
        (q.kind, q.kernel, q.reg, q.center_grads),
        (p.kind, p.kernel, p.reg, p.center_grads)
    );
    assert_eq!((q.target_mean, q.target_std), (120.0, 30.0));
    let z = Mat::<f32>::from_fn(4, 5, |i, j| (i * 5 + j) as f32 * 0.1);
    assert_eq!(
        p.predict_values(z.as_ref()).expect("p"),
        q.predict_values(z.as_ref()).expect("q")
    );
    // loading into f64 converts
    let r = Probe::<f64>::from_bytes(&bytes, Path::new("p.safetensors")).expect("load f64");
    assert_eq!(r.m[(1, 2)], f64::from(p.m[(1, 2)]));
    assert!(
        p.predict_raw(Mat::<f32>::zeros(1, 4).as_ref()).is_err(),
        "wrong width is an error"
    );
}

#[test]
fn each_corrupt_probe_file_gets_its_own_error() {
    let bytes = probe().to_bytes().expect("bytes");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("st");
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).expect("meta");
    let meta = header.metadata().clone().expect("metadata");
    let tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = ["m", "centers", "alpha"]
        .map(|n| {
            let t = st.tensor(n).expect("t");
            (n, t.dtype(), t.shape().to_vec(), t.data().to_vec())
        })
        .to_vec();
    let with_meta = |k: &str, v: Option<&str>| {
        let mut m = meta.clone();
        match v {
            Some(v) => m.insert(k.into(), v.into()),
            None => m.remove(k),
        };
        raw(tensors.clone(), m)
    };
    let replace = |name: &'static str, dt: Dtype, shape: Vec<usize>, b: Vec<u8>| {
        let mut t: Vec<_> = tensors.iter().filter(|t| t.0 != name).cloned().collect();
        t.push((name, dt, shape, b));
        raw(t, meta.clone())
    };
    let cases: Vec<ProbeCase> = vec![
        ("garbage", vec![1, 2, 3], |e| {
            matches!(e, P::NotSafetensors { .. })
        }),
        (
            "version",
            with_meta("format", Some("musicrfm.probe.v9")),
            |e| matches!(e, P::UnknownFormat { .. }),
        ),
        ("missing key", with_meta("exponent", None), |e| {
            matches!(
                e,
                P::MissingMetadata {
                    key: "exponent",
                    ..
                }
            )
        }),
        ("bad number", with_meta("bandwidth", Some("wide")), |e| {
            matches!(
                e,
                P::BadMetadata {
                    key: "bandwidth",
                    ..
                }
            )
        }),
        ("bad kind", with_meta("kind", Some("ordinal")), |e| {
            matches!(e, P::BadMetadata { key: "kind", .. })
        }),
        (
            "missing tensor",
            raw(tensors[..2].to_vec(), meta.clone()),
            |e| matches!(e, P::MissingTensor { name: "alpha", .. }),
        ),
        (
            "dtype",
            replace("alpha", Dtype::I32, vec![12, 1], vec![0; 48]),
            |e| matches!(e, P::WrongDtype { name: "alpha", .. }),
        ),
        (
            "shape",
            replace("alpha", Dtype::F32, vec![11, 1], vec![0; 44]),
            |e| matches!(e, P::WrongShape { name: "alpha", .. }),
        ),
        (
            "non-finite",
            replace(
                "alpha",
                Dtype::F32,
                vec![12, 1],
                (0..12).flat_map(|_| f32::NAN.to_le_bytes()).collect(),
            ),
            |e| matches!(e, P::NonFinite { name: "alpha", .. }),
        ),
    ];
    let mut messages = std::collections::HashSet::new();
    for (what, b, is_kind) in cases {
        let err = Probe::<f32>::from_bytes(&b, Path::new("probe.safetensors")).expect_err(what);
        assert!(is_kind(&err), "{what}: wrong kind: {err}");
        assert!(
            err.to_string().starts_with("probe.safetensors"),
            "{what}: {err}"
        );
        assert!(
            messages.insert(err.to_string()),
            "{what}: message not distinct: {err}"
        );
    }
}
