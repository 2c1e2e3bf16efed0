"""Operators ONNX lacks: translated to ONNX ops at export, or kept as custom-domain nodes whose
implementation (a Python function through onnxruntime-extensions, or a compiled library) is
registered on every session golive makes: convert's verify, verify later, tune, load_session."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

import golive
from conftest import TESTS, lazy_module, read_info, zoo

ortx = lazy_module("onnxruntime_extensions")  # its import pulls in transformers and torch: when first used

EXPORT = TESTS / "custom_ops_export.py"
RUNTIME = TESTS / "custom_ops_runtime.py"


def _flat(text: str) -> str:
    return " ".join(text.split())


def _dense_then_fancy_sin(x: np.ndarray) -> np.ndarray:
    """zoo.DenseThenCustomOp in numpy (its Linear's weights as torch.manual_seed(0) makes them), so the test process
    never runs the custom operator itself."""
    import torch

    torch.manual_seed(0)
    fc = torch.nn.Linear(32, 32)
    with torch.no_grad():
        return (np.sin(fc(torch.from_numpy(x)).numpy()) * 2).astype(np.float32)


def _domains(path: Path) -> set[tuple[str, str]]:
    return {(n.domain, n.op_type) for n in onnx.load(str(path)).graph.node}


def test_translation_to_standard_onnx_ops(tmp_path):
    result = golive.convert(
        zoo("UsesCustomOp"), tmp_path / "o", inputs=["x:float32[batch,3]"], custom_translation=[f"{EXPORT}:TO_ONNX"]
    )
    assert result.passed and result.record.exporter == "dynamo"
    assert all(domain == "" for domain, _ in _domains(result.model_path))
    assert ("", "Sin") in _domains(result.model_path)
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(4, 3)
    got = ort.InferenceSession(str(result.model_path)).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, np.sin(x) * 2 + 1, rtol=1e-5, atol=1e-6)


def test_translation_without_types_is_refused_with_the_fix(tmp_path, cli_process):
    code, _, err = cli_process(
        "convert",
        zoo("UsesCustomOp"),
        "-o",
        tmp_path / "o",
        "--input",
        "x:float32[2,3]",
        "--custom-translation",
        f"{EXPORT}:UNTYPED",
    )
    err = _flat(err)
    assert code == 2 and "no return type annotation" in err and "-> FLOAT" in err
    assert not (tmp_path / "o").exists()


def test_custom_node_needs_its_implementation(tmp_path, cli_process):
    code, _, err = cli_process(
        "convert",
        zoo("UsesCustomOp"),
        "-o",
        tmp_path / "o",
        "--input",
        "x:float32[2,3]",
        "--custom-translation",
        f"{EXPORT}:TO_CUSTOM_NODE",
    )
    err = _flat(err)
    assert code == 2
    assert "custom operator ai.onnx.contrib::FancySin" in err and "--custom-ops" in err
    assert not (tmp_path / "o").exists()

    code, _, err = cli_process(
        "convert",
        zoo("UsesCustomOp"),
        "-o",
        tmp_path / "o",
        "--input",
        "x:float32[2,3]",
        "--custom-translation",
        f"{EXPORT}:TO_CUSTOM_NODE",
        "--custom-ops",
        tmp_path / "nope.so",
    )
    assert code == 2 and "nope.so does not exist" in _flat(err)


def test_python_custom_op_is_verified_then_carried_through_verify_tune_and_load_session(tmp_path, cli_process):
    out, tuned = tmp_path / "o", tmp_path / "t"
    code, stdout, err = cli_process(
        "convert",
        zoo("DenseThenCustomOp"),
        "-o",
        out,
        "--input",
        "x:float32[batch,32]",
        "--custom-translation",
        f"{EXPORT}:TO_CUSTOM_NODE",
        "--custom-ops",
        RUNTIME,
    )
    assert code == 0, err
    info = read_info(out)
    assert ("ai.onnx.contrib", "FancySin") in _domains(out / "model.onnx")
    assert info["custom_ops"] == ["custom_ops/custom_ops_runtime.py"]  # copied into the run folder
    assert (out / "custom_ops" / "custom_ops_runtime.py").read_text() == Path(RUNTIME).read_text()
    assert info["verification"]["passed"] and info["verification"]["reference"] == "pytorch source model"
    assert golive.inspect(out).custom_ops == {"ai.onnx.contrib": ["FancySin"]}

    # verify later, with no flag: the registration comes from golive.json
    code, stdout, err = cli_process("verify", out, "--dim", "batch=1,9")
    assert code == 0, err
    assert "batch=9" in stdout

    # tune: every candidate's worker process registers the Python op again, INT8 included
    # --budget auto plans every candidate it names (about 20 s here): a small explicit budget, which also pays the measuring
    # forkserver's start (it imports onnxruntime-extensions, transformers, torch), skipped int8_dynamic on a loaded CI machine
    result = golive.tune(
        out, tuned, budget="auto", transforms=["int8_dynamic", "int8_static_qdq"], time_source=False, session_search=False
    )
    assert result.best.status == "passed"
    by_chain = {tuple(c.transforms): c for c in result.report.candidates if c.stage == "model"}
    assert by_chain[("int8_dynamic",)].status in ("passed", "rejected")  # built, run with the op, and gated
    assert by_chain[("int8_dynamic",)].gate.metrics
    assert by_chain[("int8_static_qdq",)].status == "invalid" and "calibrator" in by_chain[("int8_static_qdq",)].reason
    saved = json.loads((tuned / "best" / "session.json").read_text())
    assert saved["session"]["custom_ops"] == ["custom_ops/custom_ops_runtime.py"]  # best/ carries its own copy
    assert (tuned / "best" / "custom_ops" / "custom_ops_runtime.py").read_text() == Path(RUNTIME).read_text()

    session = golive.load_session(tuned)
    x = np.linspace(-2, 2, 160, dtype=np.float32).reshape(5, 32)
    expected = _dense_then_fancy_sin(x)
    atol = 1e-5 if result.best.precision == "fp32" else 0.05
    np.testing.assert_allclose(session.run(None, {"x": x})[0], expected, rtol=1e-3, atol=atol)


def test_compiled_custom_op_library(tmp_path):
    """onnxruntime-extensions' compiled library, given by path like any custom-op .so, runs ai.onnx.contrib::Inverse."""
    library = ortx.get_library_path()
    rng = np.random.default_rng(0)
    a = (rng.random((3, 3)) + 3 * np.eye(3)).astype(np.float32)  # well conditioned
    b = rng.random((3, 2)).astype(np.float32)
    np.savez(tmp_path / "data.npz", a=a, b=b)
    result = golive.convert(
        zoo("SolvesWithInverse"),
        tmp_path / "o",
        inputs=["a:float32[3,3]", "b:float32[3,2]"],
        data=str(tmp_path / "data.npz"),
        custom_translation=[f"{EXPORT}:INVERSE_TO_CONTRIB"],
        custom_ops=[library],
    )
    assert result.passed, result.verification.failures()
    assert ("ai.onnx.contrib", "Inverse") in _domains(result.model_path)
    assert result.record.custom_ops == [f"custom_ops/{Path(library).name}"]  # copied into the run folder
    assert (tmp_path / "o" / result.record.custom_ops[0]).read_bytes() == Path(library).read_bytes()
    report = golive.verify(tmp_path / "o", data=str(tmp_path / "data.npz"))  # the library registered from golive.json
    assert report.passed


def test_onnx_file_with_custom_nodes_verifies_against_expected_outputs(tmp_path, cli):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Inverse", ["a"], ["inverse"], domain="ai.onnx.contrib")],
        "inverse",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info("inverse", TensorProto.FLOAT, [4, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("ai.onnx.contrib", 1)])
    onnx.save(model, tmp_path / "inverse.onnx")
    a = (np.random.default_rng(1).random((4, 4)) + 4 * np.eye(4)).astype(np.float32)
    np.savez(tmp_path / "cases.npz", a=a, inverse=np.linalg.inv(a).astype(np.float32))

    # no reference can run ai.onnx.contrib::Inverse, so synthetic inputs prove nothing: say so, write nothing
    code, _, err = cli("convert", tmp_path / "inverse.onnx", "-o", tmp_path / "o", "--custom-ops", "onnxruntime_extensions")
    err = _flat(err)
    assert code == 2 and "ai.onnx.contrib::Inverse" in err and "expected outputs" in err
    assert not (tmp_path / "o").exists()

    code, _stdout, err = cli(
        "convert",
        tmp_path / "inverse.onnx",
        "-o",
        tmp_path / "o",
        "--custom-ops",
        "onnxruntime_extensions",
        "--data",
        tmp_path / "cases.npz",
    )
    assert code == 0, err
    assert read_info(tmp_path / "o")["verification"]["reference"].startswith("expected outputs")
    code, _, err = cli("verify", tmp_path / "inverse.onnx", "--data", tmp_path / "cases.npz")
    assert code == 2 and "--custom-ops" in _flat(err)  # a bare .onnx file carries no registration
