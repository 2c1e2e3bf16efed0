"""ONNX files as sources, ONNX test-data folders, and verification against stored outputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import golive

pytestmark = pytest.mark.usefixtures("steps_in_place")  # what the steps compute, not where they run


def _model(path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])
    w = numpy_helper.from_array(np.array([[0.5, -1.0], [2.0, 0.25], [1.5, -0.75]], dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Tanh", ["m"], ["y"])], "g", [x], [y], [w]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="golive-tests")
    onnx.save(model, path)
    return np.array([[0.5, -1.0], [2.0, 0.25], [1.5, -0.75]], dtype=np.float32)


def _write_sets(folder, w, wrong=False):
    rng = np.random.default_rng(0)
    for i in range(3):
        x = rng.standard_normal((4, 3)).astype(np.float32)
        y = np.tanh(x @ w)
        if wrong and i == 2:
            y[0, 0] += 0.1
        golive.write_test_data(folder / f"test_data_set_{i}", {"x": x}, {"y": y})


def test_verify_onnx_against_test_data_sets(tmp_path, cli):
    w = _model(tmp_path / "m.onnx")
    _write_sets(tmp_path / "data", w)
    code, stdout, _ = cli("verify", tmp_path / "m.onnx", "--data", tmp_path / "data")
    assert code == 0 and "PASSED" in stdout
    report = golive.verify(tmp_path / "m.onnx", data=str(tmp_path / "data"))
    assert [r.label for r in report.runs] == ["test_data_set_0", "test_data_set_1", "test_data_set_2"]
    assert report.reference.startswith("expected outputs")


def test_wrong_expected_outputs_fail_with_exit_1(tmp_path, cli):
    w = _model(tmp_path / "m.onnx")
    _write_sets(tmp_path / "data", w, wrong=True)
    code, stdout, _ = cli("verify", tmp_path / "m.onnx", "--data", tmp_path / "data", "--json")
    assert code == 1
    import json

    report = json.loads(stdout)
    assert [r["passed"] for r in report["runs"]] == [True, True, False]
    assert report["outputs"][0]["max_abs"] == pytest.approx(0.1, rel=1e-3)


def test_onnx_source_is_validated_and_copied(tmp_path):
    w = _model(tmp_path / "m.onnx")
    _write_sets(tmp_path / "data", w)
    result = golive.convert(tmp_path / "m.onnx", tmp_path / "o", data=str(tmp_path / "data"))
    assert result.passed and result.record.exporter == "copy"
    copied = onnx.load(str(tmp_path / "o" / "model.onnx"))
    assert copied.producer_name == "golive-tests"
    # without data, the reference is ONNX's own evaluator, independent of ONNX Runtime
    report = golive.verify(tmp_path / "o")
    assert report.passed and report.reference == "ONNX reference evaluator"
    assert {r.sizes["batch"] for r in report.runs} == {4, 7}  # the data's batch of 4, and 4 + 3


def test_inspect_reports_io_ops_and_parameters(tmp_path, cli):
    _model(tmp_path / "m.onnx")
    summary = golive.inspect(tmp_path / "m.onnx")
    assert summary.inputs[0].shape == ["batch", 3] and summary.outputs[0].name == "y"
    assert summary.op_types == {"MatMul": 1, "Tanh": 1}
    assert summary.parameters == 6 and summary.parameter_bytes == 24
    assert summary.opsets == {"ai.onnx": 17} and summary.producer == "golive-tests"
    code, stdout, _ = cli("inspect", tmp_path / "m.onnx", "--json")
    import json

    assert code == 0 and json.loads(stdout)["node_count"] == 2
    code, stdout, _ = cli("inspect", tmp_path / "m.onnx")
    assert "MatMul" in stdout and "batch" in stdout


def test_external_data_is_reported(tmp_path):
    w = _model(tmp_path / "m.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"))
    onnx.save(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    summary = golive.inspect(tmp_path / "ext.onnx")
    assert summary.external_data == ["ext.onnx.data"] and summary.external_bytes >= 24
    _write_sets(tmp_path / "data", w)
    assert golive.verify(tmp_path / "ext.onnx", data=str(tmp_path / "data")).passed


def test_large_models_get_external_data(tmp_path, monkeypatch):
    """Models over the protobuf limit keep their weights in model.onnx.data (the limit is lowered for the test)."""
    from golive.frontends import onnxfile

    w = _model(tmp_path / "m.onnx")
    _write_sets(tmp_path / "data", w)
    monkeypatch.setattr(onnxfile, "_EXTERNAL_THRESHOLD", 10)
    monkeypatch.setattr(onnxfile, "_EXTERNAL_TENSOR_MIN", 0)
    with golive.api.in_this_process():  # the lowered limit lives in this process, not in a worker
        result = golive.convert(tmp_path / "m.onnx", tmp_path / "o", data=str(tmp_path / "data"))
    assert result.passed
    assert result.record.external_data == ["model.onnx.data"]
    assert golive.inspect(tmp_path / "o").external_data == ["model.onnx.data"]
    assert golive.verify(tmp_path / "o", data=str(tmp_path / "data")).passed
