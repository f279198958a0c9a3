#!/usr/bin/env python3
"""The reference side of `cargo xtask bench decode`: greedy CFG generation and EnCodec decode in
PyTorch on the same weights and thread count. Prints one JSON line.

    python tests/bench/torch_decode.py MODEL_DIR --steps 100 --threads 2
"""

import argparse
import json
import resource
import statistics
import time

import torch
import transformers
from transformers import AutoTokenizer, LogitsProcessor, LogitsProcessorList, MusicgenForConditionalGeneration

# Timed EnCodec decodes; the best counts (the same number as `xtask/src/bench_decode.rs`).
CODEC_RUNS = 3


class StepClock(LogitsProcessor):
    """Called once per decoder step: records when."""

    def __init__(self):
        self.times = []

    def __call__(self, input_ids, scores):
        self.times.append(time.perf_counter())
        return scores


def peak_rss_mb() -> float:
    """VmHWM of this process. (getrusage's ru_maxrss would include the parent's peak: Linux
    carries it across fork + exec.)"""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", default="80s pop track with bassy drums and synth")
    ap.add_argument("--decode-seconds", type=float, default=10.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model = MusicgenForConditionalGeneration.from_pretrained(args.model, torch_dtype=torch.float32)
    model.eval()
    tok = AutoTokenizer.from_pretrained(args.model)
    inputs = tok([args.prompt], return_tensors="pt")
    with torch.no_grad():
        # warm-up
        model.generate(**inputs, do_sample=False, guidance_scale=3.0, max_new_tokens=4)
        clock = StepClock()
        start = time.perf_counter()
        model.generate(**inputs, do_sample=False, guidance_scale=3.0, max_new_tokens=args.steps,
                       logits_processor=LogitsProcessorList([clock]))
        total = time.perf_counter() - start
        # step i's duration: from the previous step's processor call to this one (the first
        # step includes the text encoder and is left out).
        step_ms = [1000 * (b - a) for a, b in zip(clock.times, clock.times[1:])]

        frames = int(round(args.decode_seconds * 50))
        codes = torch.randint(0, 2048, (1, 1, 4, frames), generator=torch.Generator().manual_seed(0))
        model.audio_encoder.decode(codes[..., :50], [None])  # warm-up
        # Best of CODEC_RUNS, as the Rust side times it: one run moves by a third on a shared
        # machine.
        decode_s = float("inf")
        for _ in range(CODEC_RUNS):
            t0 = time.perf_counter()
            audio = model.audio_encoder.decode(codes, [None]).audio_values
            decode_s = min(decode_s, time.perf_counter() - t0)

    step_ms.sort()
    print(json.dumps({
        "steps": args.steps,
        "total_s": total,
        "step_ms_median": statistics.median(step_ms),
        "step_ms_p90": step_ms[int(0.9 * (len(step_ms) - 1))],
        "decode_s": decode_s,
        "decode_samples": int(audio.shape[-1]),
        "peak_rss_mb": peak_rss_mb(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "attention": getattr(model.config, "_attn_implementation", "eager"),
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
