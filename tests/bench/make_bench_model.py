#!/usr/bin/env python3
"""A random-weight MusicGen with the real facebook/musicgen-small shape, for `cargo xtask bench`.

24 decoder blocks, d_model 1024, 16 heads, ffn 4096, 4 × 2048 codes; a T5-base text encoder
(12 layers, d_model 768, 12 heads, d_ff 3072, vocab 32128); the real EnCodec 32 kHz (64 filters,
hidden 128, strides 8·5·4·4, 2 LSTM layers). About 2.4 GB in f32: made on demand, never committed.
Same hub layout as the test fixtures (weight_g / weight_v names, tokenizer.json from the fixtures).

    python tests/bench/make_bench_model.py OUT_DIR
"""

import math
import shutil
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "fixtures"))
import make_fixtures as fx  # noqa: E402  (layout helpers shared with the fixtures)

from transformers import EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, MusicgenForConditionalGeneration, T5Config  # noqa: E402


def main() -> None:
    out = Path(sys.argv[1])
    torch.manual_seed(0)
    t5 = T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_decoder_layers=12,
                  num_heads=12, relative_attention_num_buckets=32, relative_attention_max_distance=128,
                  dropout_rate=0.0, feed_forward_proj="relu", is_encoder_decoder=True,
                  pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    encodec = EncodecConfig(target_bandwidths=[2.2], sampling_rate=32000, audio_channels=1, normalize=False,
                            chunk_length_s=None, overlap=None, hidden_size=128, num_filters=64,
                            num_residual_layers=1, upsampling_ratios=[8, 5, 4, 4], norm_type="weight_norm",
                            kernel_size=7, last_kernel_size=7, residual_kernel_size=3, dilation_growth_rate=2,
                            use_causal_conv=False, pad_mode="reflect", compress=2, num_lstm_layers=2,
                            trim_right_ratio=1.0, codebook_size=2048, codebook_dim=128, use_conv_shortcut=False)
    decoder = MusicgenDecoderConfig(vocab_size=2048, max_position_embeddings=2048, num_hidden_layers=24,
                                    ffn_dim=4096, num_attention_heads=16, hidden_size=1024, dropout=0.0,
                                    activation_function="gelu", num_codebooks=4, audio_channels=1,
                                    pad_token_id=2048, bos_token_id=2048, scale_embedding=False,
                                    tie_word_embeddings=False)
    config = MusicgenConfig(text_encoder=t5.to_dict(), audio_encoder=encodec.to_dict(), decoder=decoder.to_dict())
    model = MusicgenForConditionalGeneration(config)
    model.generation_config = fx.generation_config()
    with torch.no_grad():
        for layer in model.audio_encoder.quantizer.layers:
            cb = layer.codebook
            cb.embed.normal_()
            cb.embed_avg.copy_(cb.embed)
            cb.cluster_size.fill_(1.0)
            cb.inited.fill_(1.0)
        for head in model.decoder.lm_heads:
            head.weight.normal_(0.0, 6.0 / math.sqrt(head.weight.shape[1]))
    model.eval()
    fx.save_model(model, out, sharded=False)
    tok = HERE.parent / "fixtures" / "musicgen-tiny"
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tok / name, out / name)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
