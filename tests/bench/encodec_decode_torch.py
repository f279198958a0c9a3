"""PyTorch reference timing for `cargo run -p engine --example encodec_decode_bench`: EnCodec
decode of SECONDS of audio (50 frames/s, 4 codebooks) with random weights of the real
musicgen-small codec shape, float32, THREADS threads.

    /work/pyenv/bin/python tests/bench/encodec_decode_torch.py [SECONDS [RUNS [THREADS]]]
"""

import sys
import time

import torch
from transformers import EncodecConfig, EncodecModel


def main() -> None:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = EncodecConfig(
        target_bandwidths=[2.2], sampling_rate=32000, audio_channels=1, hidden_size=128,
        num_filters=64, num_residual_layers=1, upsampling_ratios=[8, 5, 4, 4],
        norm_type="weight_norm", kernel_size=7, last_kernel_size=7, residual_kernel_size=3,
        dilation_growth_rate=2, use_causal_conv=False, pad_mode="reflect", compress=2,
        num_lstm_layers=2, trim_right_ratio=1.0, codebook_size=2048, codebook_dim=128,
        use_conv_shortcut=False,
    )
    model = EncodecModel(config).eval()
    frames = seconds * config.frame_rate
    codes = torch.randint(0, 2048, (1, 1, 4, frames))
    times = []
    with torch.inference_mode():
        for _ in range(runs):
            start = time.perf_counter()
            audio = model.decode(codes, [None]).audio_values
            times.append(time.perf_counter() - start)
    assert audio.shape[-1] == frames * 640
    times.sort()
    print(
        f"PyTorch EnCodec decode of {seconds} s ({frames} frames): best {times[0]:.3f} s, "
        f"median {times[len(times) // 2]:.3f} s over {runs} runs, {threads} threads"
    )


if __name__ == "__main__":
    main()
