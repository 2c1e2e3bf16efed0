"""Every Hugging Face family golive takes from a folder: convert, verify, tune at batch 1, and the tuned speed-up over
PyTorch eager on the same inputs (tune times the source beside the candidates: the part's PyTorch module, eager, its
default threads).

Models are random-weight configs of real architectures at small but realistic sizes (the layer widths of the
small checkpoints, fewer layers where a 2-core machine would take minutes a run), saved with save_pretrained and
converted as a user would. A generative model's decoder is measured at a decode step (batch 1, one new token, a past
of 128 tokens, 32 for an encoder-decoder): the call a generate loop repeats.

    .venv/bin/python benchmarks/hf_families.py [--budget 30] [--only vit,whisper] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import golive


def _configs(T) -> dict:
    bert = {"hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072}
    return {
        "vit": lambda: T.ViTForImageClassification(
            T.ViTConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=6, intermediate_size=1536, num_labels=10)
        ),
        "resnet": lambda: T.ResNetForImageClassification(
            T.ResNetConfig(depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], layer_type="basic", num_labels=10)
        ),
        "convnext": lambda: T.ConvNextForImageClassification(
            T.ConvNextConfig(depths=[1, 1, 3, 1], hidden_sizes=[48, 96, 192, 384], num_labels=10)
        ),
        "wav2vec2": lambda: T.Wav2Vec2ForCTC(
            T.Wav2Vec2Config(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024, vocab_size=32)
        ),
        "whisper": lambda: T.WhisperForConditionalGeneration(
            T.WhisperConfig(
                d_model=384,
                encoder_layers=4,
                decoder_layers=4,
                encoder_attention_heads=6,
                decoder_attention_heads=6,
                encoder_ffn_dim=1536,
                decoder_ffn_dim=1536,
                suppress_tokens=[],
                begin_suppress_tokens=[],
            )
        ),
        "t5": lambda: T.T5ForConditionalGeneration(
            T.T5Config(d_model=512, d_kv=64, d_ff=2048, num_layers=4, num_heads=8, decoder_start_token_id=0)
        ),
        "clip": lambda: T.CLIPModel(
            T.CLIPConfig(
                text_config={"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024},
                vision_config={"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024},
            )
        ),
        "distilbert": lambda: T.DistilBertForSequenceClassification(T.DistilBertConfig(n_layers=6)),
        "roberta": lambda: T.RobertaForSequenceClassification(T.RobertaConfig(num_hidden_layers=4, **bert)),
        "gpt2": lambda: T.GPT2LMHeadModel(T.GPT2Config(n_layer=4)),
        "llama": lambda: T.LlamaForCausalLM(
            T.LlamaConfig(
                hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4, intermediate_size=1408
            )
        ),
    }


def _dims(name: str) -> dict[str, int]:
    """batch 1, and the lengths a user measures at: 128 text tokens, one second of audio."""
    if name in ("distilbert", "roberta"):
        return {"batch": 1, "sequence": 128}
    if name == "clip":  # its text tower takes 77 positions
        return {"batch": 1, "sequence": 64}
    if name == "wav2vec2":
        return {"batch": 1, "samples": 16000}
    return {"batch": 1}


def main() -> None:
    import torch
    import transformers as T

    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=float, default=30.0)
    parser.add_argument("--only", default="")
    parser.add_argument("--keep", default="")
    args = parser.parse_args()
    T.utils.logging.set_verbosity_error()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="golive-hf-"))
    configs = _configs(T)
    names = [n for n in configs if not args.only or n in args.only.split(",")]
    from golive.cpu import cpu_features

    features = cpu_features()
    print(f"CPU: {platform.machine()}, {features}")
    print(f"torch {torch.__version__}, transformers {T.__version__}; tune --budget {args.budget:g} at batch 1")
    rows = []
    for name in names:
        folder = root / "src" / name
        if not (folder / "config.json").exists():
            torch.manual_seed(0)
            configs[name]().eval().save_pretrained(folder)
        started = time.perf_counter()
        converted = golive.convert(folder, root / "out" / name)
        convert_s = time.perf_counter() - started
        v = converted.verification
        generation = (
            "" if v is None or v.generation is None else ("tokens equal" if v.generation.equal else v.generation.summary())
        )
        started = time.perf_counter()
        tuned = golive.tune(root / "out" / name, root / "tuned" / name, budget=args.budget, dim_sizes=_dims(name))
        tune_s = time.perf_counter() - started
        for part, report in tuned.reports.items():
            source = report.source or {}
            rows.append(
                {
                    "family": name,
                    "task": converted.record.task,
                    "part": part,
                    "exporter": converted.record.exporter,
                    "verified": v.passed if v is not None else None,
                    "generation": generation,
                    "best": report.best.label(),
                    "baseline_ms": report.baseline.shown_p50(),
                    "best_ms": report.best.shown_p50(),
                    "pytorch_ms": source.get("p50_ms"),
                    "over_ort": report.speedup,
                    "over_pytorch": report.speedup_over_source,
                    "convert_s": round(convert_s, 1),
                    "tune_s": round(tune_s, 1),
                }
            )
            r = rows[-1]
            print(
                f"{name:10s} {r['task']:30s} {part:8s} verified={r['verified']} {generation:12s} "
                f"pytorch {r['pytorch_ms'] or 0:8.2f} ms  ORT default {r['baseline_ms']:8.2f} ms  best {r['best_ms']:8.2f} ms  "
                f"{r['over_ort']:.2f}x ORT  {r['over_pytorch'] or 0:.2f}x PyTorch  ({r['best']})",
                flush=True,
            )
    (root / "hf_families.json").write_text(json.dumps(rows, indent=1))
    print(f"rows in {root / 'hf_families.json'}")


if __name__ == "__main__":
    main()
