#!/usr/bin/env python3
"""The reference side of `cargo xtask bench decode`: greedy CFG generation and EnCodec decode in
PyTorch on the same weights and thread count. Prints one JSON line.

    python tests/bench/torch_decode.py MODEL_DIR --steps 100 --threads 2 [--linears best]

The reference should be PyTorch's best on the machine at hand. The decoder's linear layers run
through one of PyTorch's two f32 CPU paths: `aten` (the default `nn.Linear`, MKL's sgemm in the
pip wheels) or `onednn` (`torch.utils.mkldnn`'s `MkldnnLinear`, oneDNN's inner product). Which is
faster for a 2-row product depends on the CPU: on an AMD EPYC (Zen 5) MKL's sgemm read 9–13 GB/s
of weights where oneDNN read 24. `--linears best` (the default) times a short run with each and
keeps the faster. Tried on that EPYC and not used: `torch.compile` of the decoder's forward (86 ms
a step against eager's 67–82, its shapes recompiling as the cache grows) and transformers' static
key/value cache (200 steps: 80.8 / 78.7 ms against the dynamic cache's 81.2 / 79.5).
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
# Steps of each trial run when `--linears best` chooses the linear layers' path.
TRIAL_STEPS = 24


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


def swap_linears(decoder: torch.nn.Module, to_onednn: bool) -> None:
    """Swaps every `nn.Linear` inside `decoder` (blocks and LM heads) for oneDNN's
    `MkldnnLinear` with the same f32 weights, or back, one layer at a time, each old layer
    dropped as it goes. (The loaded weights are pages of the memory-mapped checkpoint, which
    stay resident: with oneDNN's copies, the peak memory reported holds the decoder twice.)"""
    from torch.utils import mkldnn

    kinds = (torch.nn.Linear, mkldnn.MkldnnLinear)
    # The parents only: a list holding the layers themselves would keep every old weight alive.
    parents = [m for m in decoder.modules() if any(type(c) in kinds for c in m.children())]
    for parent in parents:
        for name in [n for n, c in parent.named_children() if type(c) in kinds]:
            child = getattr(parent, name)
            if to_onednn and type(child) is torch.nn.Linear:
                setattr(parent, name, mkldnn.to_mkldnn(child))
            elif not to_onednn and type(child) is mkldnn.MkldnnLinear:
                weight = child.weight.to_dense()
                dense = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
                dense.weight = torch.nn.Parameter(weight, requires_grad=False)
                if child.bias.to_dense().abs().max() > 0:
                    dense.bias = torch.nn.Parameter(child.bias.to_dense(), requires_grad=False)
                setattr(parent, name, dense)


def timed_generate(model, inputs, steps: int) -> tuple:
    """Greedy CFG generation of `steps` steps; returns (total seconds, sorted step ms). Step i's
    duration runs from the previous step's processor call to this one (the first step includes
    the text encoder and is left out)."""
    clock = StepClock()
    start = time.perf_counter()
    model.generate(**inputs, do_sample=False, guidance_scale=3.0, max_new_tokens=steps,
                   logits_processor=LogitsProcessorList([clock]))
    total = time.perf_counter() - start
    return total, sorted(1000 * (b - a) for a, b in zip(clock.times, clock.times[1:]))


def warm_up(model, inputs) -> None:
    model.generate(**inputs, do_sample=False, guidance_scale=3.0, max_new_tokens=4)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", default="80s pop track with bassy drums and synth")
    ap.add_argument("--decode-seconds", type=float, default=10.0)
    ap.add_argument("--linears", choices=["best", "aten", "onednn"], default="best",
                    help="the decoder's linear layers: PyTorch's default path, oneDNN's, or the "
                         "faster of the two in a short trial (default)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model = MusicgenForConditionalGeneration.from_pretrained(args.model, torch_dtype=torch.float32)
    model.eval()
    tok = AutoTokenizer.from_pretrained(args.model)
    inputs = tok([args.prompt], return_tensors="pt")
    trial_ms = {}
    with torch.no_grad():
        warm_up(model, inputs)
        linears = args.linears
        if linears == "best":
            trial_ms["aten"] = statistics.median(timed_generate(model, inputs, TRIAL_STEPS)[1])
            swap_linears(model.decoder, to_onednn=True)
            warm_up(model, inputs)
            trial_ms["onednn"] = statistics.median(timed_generate(model, inputs, TRIAL_STEPS)[1])
            linears = min(trial_ms, key=trial_ms.get)
            if linears == "aten":
                swap_linears(model.decoder, to_onednn=False)
                warm_up(model, inputs)
        elif linears == "onednn":
            swap_linears(model.decoder, to_onednn=True)
            warm_up(model, inputs)
        total, step_ms = timed_generate(model, inputs, args.steps)

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
        "linears": linears,
        "trial_step_ms": trial_ms,
    }))


if __name__ == "__main__":
    main()
