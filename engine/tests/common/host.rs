//! A host for the stream tests: pushes each step's control at the step's first host sample
//! (`ceil(s · fs / 50)`), pops in blocks of the given sizes, waiting as an offline bounce does.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use burn::tensor::Tensor;
use directions::{ConceptKind, DirectionsFile};
use engine::MusicGen;
use engine::stream::{
    AudioEndpoint, ControlFrame, Engine, EngineConfig, EngineHandle, GenerationSettings,
    ModelSource, SlotDirection, offline,
};

/// Generous: a bounce waits for the engine; on a loaded CI machine a step can be slow.
pub const WAIT: Duration = Duration::from_secs(60);

/// The unit vector codebook 0's head reads for `code`, as a one-class directions file.
pub fn head_direction(model: &MusicGen, code: usize) -> DirectionsFile {
    let d = model.decoder.d_model();
    let n = model.decoder.num_blocks();
    let w: Tensor<2> = model.decoder.lm_head_weight(0); // [d, vocab]
    let column = super::to_vec(w.slice([0..d, code..code + 1]));
    let norm = column.iter().map(|x| x * x).sum::<f32>().sqrt();
    let unit: Vec<f32> = column.iter().map(|x| x / norm).collect();
    DirectionsFile {
        concept: "code".into(),
        classes: vec![format!("code{code}")],
        kind: ConceptKind::Binary,
        metric: "auc".into(),
        model: "musicgen-tiny".into(),
        d_model: d,
        n_layers_model: n,
        pooling: "mean".into(),
        site: "block_output".into(),
        layers: (0..n as i64).collect(),
        directions: vec![vec![unit; n]],
        scores: vec![vec![1.0; n]],
    }
}

/// [`head_direction`] written to `path`.
pub fn head_direction_file(model: &MusicGen, code: usize, path: &Path) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    head_direction(model, code).write(path).unwrap();
    path.to_owned()
}

/// An engine with `model`, `prompt` at step 0, `settings` and slot 0 = `slot`, started.
pub fn start(
    model: &Arc<MusicGen>,
    config: EngineConfig,
    prompt: &str,
    settings: GenerationSettings,
    slot: Option<SlotDirection>,
) -> (EngineHandle, AudioEndpoint) {
    let (handle, endpoint) = Engine::spawn(config).unwrap();
    handle
        .load_model(ModelSource::Loaded(model.clone()))
        .unwrap();
    handle.set_generation(settings).unwrap();
    if slot.is_some() {
        handle.set_slot(0, slot).unwrap();
    }
    handle.set_prompt(prompt, 0).unwrap();
    (handle, endpoint)
}

/// Bounce: `blocks` sizes repeat; controls for steps `0..steps` come from `control`; pops
/// until `samples` host samples are out.
pub fn bounce(
    endpoint: &mut AudioEndpoint,
    rate: u32,
    steps: u64,
    samples: usize,
    blocks: &[usize],
    control: impl Fn(u64) -> ControlFrame,
) -> Vec<f32> {
    let mut out = vec![0.0f32; samples];
    bounce_into(endpoint, rate, 0, steps, &mut out, blocks, control);
    out
}

/// [`bounce`] continued into `out`: the stream's host samples from step `from`'s start on
/// (`from` is where the last call ended).
pub fn bounce_into(
    endpoint: &mut AudioEndpoint,
    rate: u32,
    from: u64,
    steps: u64,
    out: &mut [f32],
    blocks: &[usize],
    control: impl Fn(u64) -> ControlFrame,
) {
    offline::bounce(endpoint, rate, (from, steps), out, blocks, control, WAIT).unwrap();
}

/// Wait until the engine runs a stream and return its latency in host samples.
pub fn latency(endpoint: &AudioEndpoint) -> usize {
    for _ in 0..WAIT.as_millis() {
        let status = endpoint.status();
        if status.running {
            return status.latency_samples as usize;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("the engine did not start: {:?}", endpoint.status());
}

/// A 3-class probe of width `d` with fixed pseudo-random centers and weights (`offset` makes
/// another one): a live meter's input in the stream and editor tests.
pub fn test_probe(d: usize, offset: usize) -> directions::Probe<f32> {
    use directions::faer::Mat;
    use directions::{KernelParams, Probe, ProbeKind};
    let wave = |i: usize, j: usize, k: f32| ((i * 31 + j * 7 + offset) as f32 * k).sin();
    Probe::new(
        ProbeKind::Multiclass { n_classes: 3 },
        KernelParams {
            bandwidth: 10.0,
            exponent: 1.0,
        },
        1e-3,
        false,
        Mat::<f32>::from_fn(d, d, |i, j| if i == j { 1.0 } else { 0.0 }),
        Mat::<f32>::from_fn(12, d, |i, j| wave(i, j, 0.37)),
        Mat::<f32>::from_fn(12, 3, |i, j| wave(i, j, 1.3)),
        0.0,
        1.0,
    )
    .unwrap()
}
