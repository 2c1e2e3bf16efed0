"""The command line as a new user meets it: fast help, short errors with exit code 2, nothing half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import zoo

ROOT = Path(__file__).parents[1]


def _golive(*args, env=None, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "golive", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=600,
    )


_HEAVY = (
    "torch",
    "onnxruntime",
    "onnx",
    "numpy",
    "scipy",
    "pandas",
    "sklearn",
    "transformers",
    "tensorflow",
    "lightgbm",
    "xgboost",
    "fastapi",
    "starlette",
    "uvicorn",
    "jinja2",
    "kfp",
    "tritonclient",
    "playwright",
)


def test_help_imports_no_framework():
    # What keeps --help fast is what it does not import; that is checked here, not a wall-clock time.
    code = (
        "import sys; from golive.cli import app; from typer.testing import CliRunner; "
        "r = CliRunner().invoke(app, ['--help']); "
        f"heavy = [m for m in {_HEAVY!r} if m in sys.modules]; "
        "print(r.exit_code, heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(maxsplit=1)
    assert out[0] == "0"
    assert out[1].strip() == "[]", f"golive --help imported {out[1]}"
    proc = _golive("--help")
    assert proc.returncode == 0 and "convert" in proc.stdout and "verify" in proc.stdout


def test_import_golive_is_lazy():
    code = "import golive, sys; print([m for m in ('torch', 'onnxruntime', 'pydantic') if m in sys.modules])"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "not_a_model.bin").write_bytes(b"\x00\x01garbage")
    good = d / "good.onnx"
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), good)
    (d / "truncated.onnx").write_bytes(good.read_bytes()[:40])
    (d / "a_file").write_text("x")
    torch.save(torch.nn.Linear(4, 2), d / "pickled.pt")
    np.savez(d / "wrong_names.npz", nope=np.zeros((2, 4), dtype=np.float32))
    return d


ERROR_CASES = {
    "missing file": (["convert", "{d}/nothere.pt", "-o", "{o}"], "does not exist"),
    "wrong framework": (["convert", "{d}/pickled.pt", "-o", "{o}", "--framework", "sklearn"], "--framework sklearn right"),
    "unknown framework": (["convert", "{d}/good.onnx", "-o", "{o}", "--framework", "caffe"], "framework"),
    "malformed --input": (["convert", zoo("MnistCNN"), "-o", "{o}", "--input", "x=float32(1,28)"], "NAME:DTYPE[DIM,...]"),
    "unknown input name": (["convert", "{d}/good.onnx", "-o", "{o}", "--input", "z:float32[batch,4]"], "unknown input"),
    "unknown name in data": (
        ["convert", "{d}/good.onnx", "-o", "{o}", "--data", "{d}/wrong_names.npz"],
        "unknown input name(s) nope",
    ),
    "corrupt onnx": (["convert", "{d}/truncated.onnx", "-o", "{o}"], "truncated or corrupt"),
    "not a model": (["convert", "{d}/not_a_model.bin", "-o", "{o}"], "not a PyTorch file"),
    "unsupported operator": (
        ["convert", zoo("UsesCustomOp"), "-o", "{o}", "--input", "x:float32[2,3]"],
        "golive_test::fancy_sin",
    ),
    "pickle without trust": (["convert", "{d}/pickled.pt", "-o", "{o}"], "--trust-pickle"),
    "output under a file": (["convert", "{d}/good.onnx", "-o", "{d}/a_file/out"], "is a file"),
    "output folder with other files": (["convert", "{d}/good.onnx", "-o", "{d}"], "did not write"),
    "bad tolerance": (["verify", "{d}/good.onnx", "--rtol", "tight"], "cannot read --rtol"),
    "unknown --dim": (["verify", "{d}/good.onnx", "--dim", "sequence=3,4"], "not a dynamic axis"),
    "verify missing": (["verify", "{d}/nothere"], "does not exist"),
    "inspect corrupt": (["inspect", "{d}/truncated.onnx"], "truncated or corrupt"),
    "bad job file": (["run", "{d}/a_file"], "job file"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_user_errors_exit_2_with_a_message_and_no_output(case, files, tmp_path, cli):
    args, fragment = ERROR_CASES[case]
    out = tmp_path / "out"
    args = [a.format(d=files, o=out) for a in args]
    code, stdout, stderr = cli(*args)
    assert code == 2, (stdout, stderr)
    assert fragment in " ".join(stderr.split()), stderr  # rich wraps at 80 columns, in long paths too (xdist's are longer)
    assert "Traceback" not in stderr
    assert not out.exists()
    assert not [p for p in files.iterdir() if p.name.startswith(".")], "a partial folder was left behind"


def test_errors_have_no_traceback_unless_debug(files, tmp_path):
    proc = _golive("convert", files / "truncated.onnx", "-o", tmp_path / "o")
    assert proc.returncode == 2 and "error:" in proc.stderr and "Traceback" not in proc.stderr
    proc = _golive("convert", files / "truncated.onnx", "-o", tmp_path / "o", env={"GOLIVE_DEBUG": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ModelLoadError" in proc.stderr


def test_run_job_file_and_replay(tmp_path, files):
    job = tmp_path / "job.yaml"
    job.write_text(f"source: {files / 'good.onnx'}\noutput_dir: out\nverify:\n  batches: 2\n  dim_sizes:\n    batch: [3, 6]\n")
    proc = _golive("run", job, "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["verification"]["passed"]
    assert sorted({r["sizes"]["batch"] for r in info["verification"]["runs"]}) == [3, 6]
    saved = json.loads((tmp_path / "out" / "job.json").read_text())
    assert saved["verify"]["dim_sizes"] == {"batch": [3, 6]} and saved["version"] == 1
    # the saved spec replays from anywhere
    proc = _golive("run", tmp_path / "out" / "job.json", cwd="/")
    assert proc.returncode == 0 and "PASSED" in proc.stdout


def test_verify_exit_codes(tmp_path, cli):
    out = tmp_path / "o"
    code, _, _ = cli("convert", zoo("LoopAdd"), "-o", out, "--input", "x:float32[batch,4]", "--no-verify")
    assert code == 0 and json.loads((out / "golive.json").read_text())["verification"] is None
    code, stdout, _ = cli("verify", out)
    assert code == 1 and "FAILED" in stdout
    code, stdout, _ = cli("verify", out, "--dim", "batch=2")  # only the traced size
    assert code == 0 and "PASSED" in stdout
    saved = json.loads((out / "verify.json").read_text())
    assert saved["options"]["dim_sizes"] == {"batch": [2]} and saved["report"]["passed"]


def test_missing_optional_dependency_names_the_extra(tmp_path):
    import lightgbm as lgb

    x = np.random.default_rng(0).standard_normal((40, 3))
    lgb.train({"objective": "regression", "verbose": -1}, lgb.Dataset(x, x[:, 0]), 3).save_model(tmp_path / "m.txt")
    # a lightgbm that cannot be imported, first on the path of the caller (and so of golive's worker process)
    (tmp_path / "shadow" / "lightgbm").mkdir(parents=True)
    (tmp_path / "shadow" / "lightgbm" / "__init__.py").write_text(
        "raise ImportError(\"No module named 'lightgbm'\", name='lightgbm')\n"
    )
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path / 'shadow')!r})\n"
        "import golive\n"
        f"golive.convert({str(tmp_path / 'm.txt')!r}, {str(tmp_path / 'o')!r})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    # raised in the worker, raised again in the caller as itself
    assert "golive.errors.MissingDependencyError" in proc.stderr and "pip install 'golive[gbdt]'" in proc.stderr
    assert not (tmp_path / "o").exists()
    proc = _golive("convert", tmp_path / "m.txt", "-o", tmp_path / "o", env={"PYTHONPATH": str(tmp_path / "shadow")})
    assert proc.returncode == 2 and "pip install 'golive[gbdt]'" in proc.stderr and "Traceback" not in proc.stderr
