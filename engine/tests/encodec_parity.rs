//! EnCodec parity with transformers' `EncodecModel` on both committed fixture models
//! (`tests/fixtures/make_fixtures.py` wrote the reference tensors), and load errors that name
//! the tensor at fault.

mod common;

use burn::tensor::{Device, Int, Tensor, TensorData};
use common::{MODELS, fixtures, temp_dir};
use engine::encodec::EncodecModel;
use engine::{LoadError, MusicgenConfig, Weights};

const PREFIX: &str = "audio_encoder";
/// The bound on decoded audio: max abs error against the reference.
const AUDIO_TOLERANCE: f32 = 1e-4;

fn config(model: &str) -> engine::EncodecConfig {
    MusicgenConfig::from_file(&fixtures().join(model).join("config.json"))
        .expect("fixture config parses")
        .audio_encoder
}

fn load(model: &str) -> EncodecModel {
    let weights = Weights::open_dir(&fixtures().join(model)).expect("fixture weights open");
    EncodecModel::load(&weights, PREFIX, &config(model), &Device::default())
        .expect("fixture EnCodec loads")
}

struct Reference(Weights);

impl Reference {
    fn open(model: &str) -> Self {
        let dir = fixtures().join("reference");
        let file = dir.join(format!("{model}.safetensors"));
        Self(Weights::open_files(&dir, &[file]).expect("reference tensors open"))
    }

    fn shape(&self, key: &str) -> Vec<usize> {
        self.0
            .shape(key)
            .unwrap_or_else(|| panic!("reference tensor {key} missing"))
            .to_vec()
    }

    /// `[n_q, frames]` codes as a batch of one.
    fn codes(&self, key: &str) -> Tensor<3, Int> {
        let shape = self.shape(key);
        let values = self.0.read_i64(key, &shape).expect("reference codes");
        Tensor::from_data(
            TensorData::new(values, [1, shape[0], shape[1]]),
            &Device::default(),
        )
    }

    fn audio(&self, key: &str) -> Vec<f32> {
        let shape = self.shape(key);
        self.0.read_f32(key, &shape).expect("reference audio")
    }
}

fn to_f32(x: Tensor<3>) -> Vec<f32> {
    x.into_data().try_into_vec_as::<f32>().expect("f32 tensor")
}

fn to_i64(x: Tensor<3, Int>) -> Vec<i64> {
    x.into_data().try_into_vec_as::<i64>().expect("int tensor")
}

fn max_abs_err(actual: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(actual.len(), expected.len(), "length differs");
    actual
        .iter()
        .zip(expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

fn peak(x: &[f32]) -> f32 {
    x.iter().map(|v| v.abs()).fold(0.0, f32::max)
}

fn signal(reference: &Reference) -> Tensor<3> {
    let samples = reference.audio("encodec.signal");
    let len = samples.len();
    Tensor::from_data(TensorData::new(samples, [1, 1, len]), &Device::default())
}

fn check_decode_of_reference_codes(model: &str) {
    let codec = load(model);
    let reference = Reference::open(model);
    let decoded = codec.decode(reference.codes("encodec.codes"));
    assert_eq!(decoded.dims(), [1, 1, 26 * codec.hop_length()]);
    let expected = reference.audio("encodec.decoded");
    let err = max_abs_err(&to_f32(decoded), &expected);
    println!(
        "{model}: decode encodec.codes max abs err {err:.3e} (peak {:.3})",
        peak(&expected)
    );
    assert!(err <= AUDIO_TOLERANCE, "{model}: max abs err {err}");
}

fn check_decode_of_generated_codes(model: &str) {
    let codec = load(model);
    let reference = Reference::open(model);
    for prompt in 0..3 {
        for guidance in ["greedy_g3", "greedy_g1"] {
            let key = format!("prompt{prompt}.{guidance}");
            let decoded = to_f32(codec.decode(reference.codes(&format!("{key}.codes"))));
            let expected = reference.audio(&format!("{key}.audio"));
            let err = max_abs_err(&decoded, &expected);
            println!("{model}: decode {key}.codes max abs err {err:.3e}");
            assert!(err <= AUDIO_TOLERANCE, "{model} {key}: max abs err {err}");
        }
    }
}

fn check_encode_of_test_signal(model: &str) {
    let codec = load(model);
    let reference = Reference::open(model);
    let codes = codec.encode(signal(&reference));
    let expected = reference.codes("encodec.codes");
    assert_eq!(codes.dims(), expected.dims(), "{model}: code shape");
    assert_eq!(codes.dims()[1], codec.num_quantizers());
    let (codes, expected) = (to_i64(codes), to_i64(expected));
    let differing = codes.iter().zip(&expected).filter(|(a, b)| a != b).count();
    assert_eq!(
        differing,
        0,
        "{model}: {differing} of {} codes differ",
        codes.len()
    );
}

/// Encode then decode the test signal: the reference's round trip, sample for sample. A batch of
/// two (the signal and a quieter copy) must give each item what it gives alone.
fn check_round_trip(model: &str) {
    let codec = load(model);
    let reference = Reference::open(model);
    let expected = reference.audio("encodec.decoded");
    let single = signal(&reference);
    let quiet = single.clone().mul_scalar(0.5);
    let batch = Tensor::cat(vec![single, quiet.clone()], 0);
    let codes = codec.encode(batch);
    let [_, n_q, frames] = codes.dims();
    let audio = codec.decode(codes.clone());
    assert_eq!(audio.dims(), [2, 1, frames * codec.hop_length()]);

    let first = to_f32(audio.clone().narrow(0, 0, 1));
    let err = max_abs_err(&first, &expected);
    println!("{model}: encode→decode max abs err {err:.3e}");
    assert!(
        err <= AUDIO_TOLERANCE,
        "{model}: round trip max abs err {err}"
    );

    let quiet_codes = codec.encode(quiet);
    assert_eq!(
        to_i64(codes.narrow(0, 1, 1)),
        to_i64(quiet_codes.clone()),
        "{model}: batched encode differs from encoding alone ({n_q} codebooks)"
    );
    let quiet_alone = to_f32(codec.decode(quiet_codes));
    let err = max_abs_err(&to_f32(audio.narrow(0, 1, 1)), &quiet_alone);
    assert!(
        err <= 1e-5,
        "{model}: batched decode differs from decoding alone by {err}"
    );
}

#[test]
fn decode_of_reference_codes_matches_tiny() {
    check_decode_of_reference_codes(MODELS[0]);
}

#[test]
fn decode_of_reference_codes_matches_tiny_b() {
    check_decode_of_reference_codes(MODELS[1]);
}

#[test]
fn decode_of_generated_codes_matches_tiny() {
    check_decode_of_generated_codes(MODELS[0]);
}

#[test]
fn decode_of_generated_codes_matches_tiny_b() {
    check_decode_of_generated_codes(MODELS[1]);
}

#[test]
fn encode_of_test_signal_gives_reference_codes_tiny() {
    check_encode_of_test_signal(MODELS[0]);
}

#[test]
fn encode_of_test_signal_gives_reference_codes_tiny_b() {
    check_encode_of_test_signal(MODELS[1]);
}

#[test]
fn round_trip_matches_reference_tiny() {
    check_round_trip(MODELS[0]);
}

#[test]
fn round_trip_matches_reference_tiny_b() {
    check_round_trip(MODELS[1]);
}

/// A copy of a fixture's EnCodec tensors, with one tensor changed, in a fresh temp dir.
struct MutatedCheckpoint {
    dir: tempfile::TempDir,
}

impl MutatedCheckpoint {
    /// `change(key, shape)` returns `None` to drop the tensor, or a new shape (values zero).
    fn new(
        model: &str,
        tag: &str,
        change: impl Fn(&str, &[usize]) -> Option<Option<Vec<usize>>>,
    ) -> Self {
        use safetensors::tensor::{Dtype, TensorView};
        let source = Weights::open_dir(&fixtures().join(model)).expect("fixture weights open");
        let mut keys: Vec<&str> = source.keys().filter(|k| k.starts_with(PREFIX)).collect();
        keys.sort_unstable();
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for key in keys {
            let shape = source.shape(key).expect("listed key has a shape").to_vec();
            let (shape, values) = match change(key, &shape) {
                Some(None) => continue,
                Some(Some(new_shape)) => {
                    let n = new_shape.iter().product();
                    (new_shape, vec![0.0f32; n])
                }
                None => {
                    let values = source.read_f32(key, &shape).expect("fixture tensor reads");
                    (shape, values)
                }
            };
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            tensors.push((key.to_owned(), shape, bytes));
        }
        let views: Vec<(String, TensorView<'_>)> = tensors
            .iter()
            .map(|(key, shape, bytes)| {
                let view = TensorView::new(Dtype::F32, shape.clone(), bytes).expect("valid view");
                (key.clone(), view)
            })
            .collect();
        let dir = temp_dir(&format!("encodec-{tag}-{model}"));
        safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors"))
            .expect("mutated checkpoint writes");
        Self { dir }
    }

    fn load(&self, model: &str) -> Result<EncodecModel, LoadError> {
        let weights = Weights::open_dir(self.dir.path()).expect("mutated weights open");
        EncodecModel::load(&weights, PREFIX, &config(model), &Device::default())
    }
}

#[test]
fn missing_encodec_tensor_is_named() {
    for (model, missing) in [
        (
            "musicgen-tiny",
            "audio_encoder.decoder.layers.1.lstm.weight_hh_l1",
        ),
        (
            "musicgen-tiny-b",
            "audio_encoder.encoder.layers.9.conv.bias",
        ),
        (
            "musicgen-tiny",
            "audio_encoder.quantizer.layers.3.codebook.embed",
        ),
    ] {
        let checkpoint =
            MutatedCheckpoint::new(model, "missing", |key, _| (key == missing).then_some(None));
        let err = checkpoint
            .load(model)
            .expect_err("a missing tensor fails the load");
        assert!(
            matches!(&err, LoadError::MissingTensor { key, .. } if key == missing),
            "{model}: expected MissingTensor({missing}), got {err}"
        );
        assert!(
            err.to_string().contains(missing),
            "message names the key: {err}"
        );
    }
}

#[test]
fn missing_weight_norm_tensor_is_named() {
    let model = "musicgen-tiny-b";
    let prefix = "audio_encoder.decoder.layers.12.conv";
    let checkpoint = MutatedCheckpoint::new(model, "missing-g", |key, _| {
        key.starts_with(&format!("{prefix}.weight_"))
            .then_some(None)
    });
    let err = checkpoint
        .load(model)
        .expect_err("a missing conv weight fails the load");
    assert!(
        err.to_string().contains(&format!("{prefix}.weight_g")),
        "got {err}"
    );
}

#[test]
fn mis_shaped_encodec_tensor_is_named() {
    for (model, target) in [
        (
            "musicgen-tiny",
            "audio_encoder.quantizer.layers.2.codebook.embed",
        ),
        (
            "musicgen-tiny-b",
            "audio_encoder.decoder.layers.3.conv.weight_v",
        ),
        (
            "musicgen-tiny",
            "audio_encoder.encoder.layers.13.lstm.weight_ih_l0",
        ),
    ] {
        let checkpoint = MutatedCheckpoint::new(model, "shape", |key, shape| {
            (key == target).then(|| {
                let mut shape = shape.to_vec();
                shape[1] += 1;
                Some(shape)
            })
        });
        let err = checkpoint
            .load(model)
            .expect_err("a mis-shaped tensor fails the load");
        match &err {
            LoadError::ShapeMismatch {
                key,
                expected,
                found,
                ..
            } => {
                assert_eq!(key, target);
                assert_eq!(found[1], expected[1] + 1);
            }
            other => panic!("{model}: expected ShapeMismatch({target}), got {other}"),
        }
        assert!(
            err.to_string().contains(target),
            "message names the key: {err}"
        );
    }
}

#[test]
fn unsupported_config_is_rejected_by_flag() {
    let model = "musicgen-tiny";
    let weights = Weights::open_dir(&fixtures().join(model)).expect("fixture weights open");
    let mut normalized = config(model);
    normalized.normalize = true;
    let err = EncodecModel::load(&weights, PREFIX, &normalized, &Device::default())
        .expect_err("normalize is not supported");
    assert!(err.to_string().contains("normalize"), "got {err}");
    // An unknown padding mode cannot be represented: parsing the config rejects it.
    let path = fixtures().join(model).join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    json["audio_encoder"]["pad_mode"] = serde_json::json!("circular");
    let err = engine::config::parse_json::<MusicgenConfig>(&path, &json.to_string())
        .expect_err("circular padding is not supported");
    let err = err.to_string();
    assert!(
        err.contains("audio_encoder.pad_mode") && err.contains("circular"),
        "got {err}"
    );
}
