//! Times EnCodec decoding of 10 s of audio (500 frames × 4 codebooks) with random weights of the
//! real musicgen-small codec shape (64 filters, hidden 128, strides 8·5·4·4, 2 LSTM layers).
//!
//! `cargo run -p engine --example encodec_decode_bench [-- SECONDS [RUNS [FORMAT]]]`, FORMAT the
//! decoder weight format the codec is loaded next to (`f32`, the default, keeps the f32 codec;
//! `bf16` gives the bf16 LSTM and transposed convs, `q8` or `q4` also the LSTM's recurrence in
//! q8, see `WeightFormat::codec`).
//! Compare with `tests/bench/encodec_decode_torch.py` (same shape, same thread count).

use std::time::Instant;

use burn::tensor::{Device, Int, Tensor, TensorData};
use engine::encodec::EncodecModel;
use engine::matvec::WeightFormat;
use engine::{EncodecConfig, Weights};
use safetensors::tensor::{Dtype, TensorView};

const CONFIG: &str = r#"{
    "sampling_rate": 32000, "audio_channels": 1, "hidden_size": 128, "num_filters": 64,
    "num_residual_layers": 1, "upsampling_ratios": [8, 5, 4, 4], "norm_type": "weight_norm",
    "kernel_size": 7, "last_kernel_size": 7, "residual_kernel_size": 3,
    "dilation_growth_rate": 2, "use_causal_conv": false, "pad_mode": "reflect", "compress": 2,
    "num_lstm_layers": 2, "trim_right_ratio": 1.0, "codebook_size": 2048, "codebook_dim": 128,
    "use_conv_shortcut": false, "target_bandwidths": [2.2], "normalize": false
}"#;

/// Every `audio_encoder.*` key and shape of a checkpoint with `config`, in the reference's
/// layer numbering.
fn checkpoint_shapes(c: &EncodecConfig) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    let mut conv = |prefix: String, w: [usize; 3], bias: usize| {
        out.push((format!("{prefix}.conv.weight_g"), vec![w[0], 1, 1]));
        out.push((format!("{prefix}.conv.weight_v"), w.to_vec()));
        out.push((format!("{prefix}.conv.bias"), vec![bias]));
    };
    let f = c.num_filters;
    let depth = c.upsampling_ratios.len();
    let bottleneck = (1 << depth) * f;
    let mut lstm_at = Vec::new();

    let p = "audio_encoder.encoder.layers";
    conv(format!("{p}.0"), [f, c.audio_channels, c.kernel_size], f);
    let (mut index, mut dim) = (1, f);
    for &ratio in c.upsampling_ratios.iter().rev() {
        let h = dim / c.compress;
        conv(
            format!("{p}.{index}.block.1"),
            [h, dim, c.residual_kernel_size],
            h,
        );
        conv(format!("{p}.{index}.block.3"), [dim, h, 1], dim);
        conv(
            format!("{p}.{}", index + 2),
            [2 * dim, dim, 2 * ratio],
            2 * dim,
        );
        index += 3;
        dim *= 2;
    }
    lstm_at.push(format!("{p}.{index}"));
    conv(
        format!("{p}.{}", index + 2),
        [c.hidden_size, bottleneck, c.last_kernel_size],
        c.hidden_size,
    );

    let p = "audio_encoder.decoder.layers";
    conv(
        format!("{p}.0"),
        [bottleneck, c.hidden_size, c.kernel_size],
        bottleneck,
    );
    lstm_at.push(format!("{p}.1"));
    let (mut index, mut dim) = (3, bottleneck);
    for &ratio in &c.upsampling_ratios {
        let h = dim / 2 / c.compress;
        conv(format!("{p}.{index}"), [dim, dim / 2, 2 * ratio], dim / 2);
        conv(
            format!("{p}.{}.block.1", index + 1),
            [h, dim / 2, c.residual_kernel_size],
            h,
        );
        conv(
            format!("{p}.{}.block.3", index + 1),
            [dim / 2, h, 1],
            dim / 2,
        );
        index += 3;
        dim /= 2;
    }
    conv(
        format!("{p}.{index}"),
        [c.audio_channels, f, c.last_kernel_size],
        c.audio_channels,
    );

    for prefix in lstm_at {
        for l in 0..c.num_lstm_layers {
            for (name, shape) in [
                ("weight_ih", vec![4 * bottleneck, bottleneck]),
                ("weight_hh", vec![4 * bottleneck, bottleneck]),
                ("bias_ih", vec![4 * bottleneck]),
                ("bias_hh", vec![4 * bottleneck]),
            ] {
                out.push((format!("{prefix}.lstm.{name}_l{l}"), shape));
            }
        }
    }
    for k in 0..c.num_quantizers() {
        out.push((
            format!("audio_encoder.quantizer.layers.{k}.codebook.embed"),
            vec![c.codebook_size, c.hidden_size],
        ));
    }
    out
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let seconds: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let runs: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(3)
        .max(1);
    let format: WeightFormat = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or_default();
    let config: EncodecConfig = serde_json::from_str(CONFIG)?;

    let mut rng = directions::Rng::new(0x5eed);
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = checkpoint_shapes(&config)
        .into_iter()
        .map(|(key, shape)| {
            let n: usize = shape.iter().product();
            let fan_in = if shape.len() > 1 { n / shape[0] } else { 1 };
            let scale = if key.contains("lstm") {
                1.0 / (shape[shape.len() - 1] as f32).sqrt()
            } else {
                1.0 / (fan_in as f32).sqrt()
            };
            let bytes = (0..n)
                .flat_map(|_| ((rng.uniform_in(-1.0, 1.0) as f32) * scale).to_le_bytes())
                .collect();
            (key, shape, bytes)
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("musicrfm-encodec-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("model.safetensors");
    let views = tensors
        .iter()
        .map(|(k, s, b)| Ok((k.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    safetensors::serialize_to_file(views, None, &file)?;
    let weights = Weights::open_files(&dir, &[file])?;
    Ok(())
        .and_then(|()| run(&weights, &config, seconds, runs, format))
        .inspect(|_| {
            let _ = std::fs::remove_dir_all(&dir);
        })
}

fn run(
    weights: &Weights,
    config: &EncodecConfig,
    seconds: usize,
    runs: usize,
    format: WeightFormat,
) -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::default();
    let codec = EncodecModel::load_with(weights, "audio_encoder", config, &device, format)?;
    let frames = seconds * config.frame_rate();
    let codes: Vec<i64> = (0..4 * frames)
        .map(|i| ((i * 7919) % 2048) as i64)
        .collect();
    let codes = Tensor::<3, Int>::from_data(TensorData::new(codes, [1, 4, frames]), &device);
    let mut times = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let audio = codec.decode(codes.clone());
        let samples = audio.into_data().num_elements();
        times.push(start.elapsed().as_secs_f64());
        assert_eq!(samples, frames * config.hop_length());
    }
    times.sort_by(f64::total_cmp);
    println!("codec next to a {format} decoder");
    println!(
        "EnCodec decode of {seconds} s ({frames} frames): best {:.3} s, median {:.3} s over {runs} runs",
        times[0],
        times[times.len() / 2],
    );
    // The streaming decoder as the stream engine drives it: one frame of codes per step, with
    // rayon's threads kept awake through the step (`engine::pool::step`).
    let codes: Vec<u32> = (0..4 * frames)
        .map(|i| ((i * 7919) % 2048) as u32)
        .collect();
    // 1: the least latency; 2: the stream's default on the CPU; 8: what batching can reach.
    for chunk in [1, 2, 8] {
        let mut decoder = codec.streaming_decoder(chunk);
        let mut out = Vec::new();
        let start = Instant::now();
        for frame in codes.chunks_exact(4) {
            engine::pool::step(true, || decoder.push(&codec, frame, &mut out));
        }
        let took = start.elapsed().as_secs_f64();
        println!(
            "streaming decode of {seconds} s, chunk {chunk}: {:.3} s, {:.2} ms per frame",
            took,
            took * 1e3 / frames as f64
        );
    }
    Ok(())
}
