"""golive profile: ONNX Runtime's per-node profile on the optimized graph, traced back to the original nodes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import golive
from golive.profiling import ProfileReport

pytestmark = pytest.mark.usefixtures("steps_in_place")  # what the steps compute, not where they run


def _dominant(path: Path, size: int = 1024) -> Path:
    """A large MatMul beside cheap ops: it must dominate any honest profile."""
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.default_rng(0)
    big = numpy_helper.from_array(rng.normal(size=(size, size)).astype(np.float32), "w_big")
    small = numpy_helper.from_array(rng.normal(size=(size,)).astype(np.float32), "b_small")
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"], name="cheap_relu"),
            helper.make_node("MatMul", ["r", "w_big"], ["h"], name="big_matmul"),
            helper.make_node("Sigmoid", ["h"], ["s"], name="cheap_sigmoid"),
            helper.make_node("Mul", ["s", "b_small"], ["y"], name="cheap_mul"),
        ],
        "dominant",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", size])],
        [big, small],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_the_planted_dominant_node_has_the_largest_share(tmp_path, cli):
    model = _dominant(tmp_path / "m.onnx")
    code, stdout, err = cli("profile", model, "--dim", "batch=64", "--runs", "10", "--json")
    assert code == 0, err
    report = json.loads(stdout)
    (p,) = report["profiles"]
    top = p["nodes"][0]
    assert top["name"] == "big_matmul" and top["op_type"] == "MatMul" and top["provider"] == "CPUExecutionProvider"
    assert top["share"] > 0.5 and top["share"] == max(n["share"] for n in p["nodes"])
    assert top["inputs"][0] == "float[64,1024]"
    assert abs(sum(n["share"] for n in p["nodes"]) - 1) < 1e-6 and p["op_types"][0]["op_type"] == "MatMul"
    assert 0.2 < p["coverage"] <= 1.05 and p["wall_us"] > 0 and p["total_us"] > 0 and p["overhead"] > 0
    # every node of the optimized graph is in the profile or listed as not timed, with why
    import onnx

    folder = tmp_path / "m-profile"
    optimized = onnx.load(folder / p["optimized_model"], load_external_data=False).graph
    timed = {n["name"] for n in p["nodes"]}
    untimed = {n["name"] for n in p["not_timed"]}
    assert {n.name for n in optimized.node} <= timed | untimed and all(n["why"] for n in p["not_timed"])
    assert (folder / "profile.json").is_file() and (folder / "overlay.json").is_file()
    overlay = json.loads((folder / "overlay.json").read_text())
    assert overlay["graphs"]["model"]["nodes"]["big_matmul"]["share"] == pytest.approx(top["share"], abs=1e-4)
    code, stdout, _ = cli("profile", model, "--dim", "batch=64", "--runs", "5")
    assert code == 0 and "big_matmul" in stdout and "MatMul" in stdout


def test_bad_input_exits_2_and_writes_nothing(tmp_path, cli):
    code, _, err = cli("profile", tmp_path / "missing.onnx")
    assert code == 2 and "does not exist" in " ".join(err.split())
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    code, _, err = cli("profile", tmp_path / "broken.onnx")
    assert code == 2 and "not a readable ONNX model" in " ".join(err.split())
    assert not (tmp_path / "broken-profile").exists() and not (tmp_path / ".broken-profile.partial").exists()
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [helper.make_node("NoSuchOperator", ["x"], ["y"], name="odd")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "odd.onnx")
    code, _, err = cli("profile", tmp_path / "odd.onnx")
    assert code == 2 and "ONNX Runtime cannot load the model" in " ".join(err.split())
    assert not (tmp_path / "odd-profile").exists() and not (tmp_path / ".odd-profile.partial").exists()
    unfinished = tmp_path / "tuned"
    (unfinished / "best").mkdir(parents=True)
    code, _, err = cli("profile", unfinished)
    assert code == 2 and "no finished tuning result" in " ".join(err.split())
    assert not (unfinished / "profile").exists()
    model = _dominant(tmp_path / "m.onnx")
    code, _, err = cli("profile", model, "--dim", "sequence=3")
    assert code == 2 and "not a dynamic axis" in " ".join(err.split())


@pytest.fixture(scope="module")
def tuned_bert(tmp_path_factory) -> Path:
    """A 2-layer BERT built in code, converted, tuned briefly on the export route (TorchScript + ORT's fusions)."""
    from transformers import BertConfig, BertModel

    torch = pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("profile-bert")
    torch.manual_seed(0)
    BertModel(
        BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=1000)
    ).eval().save_pretrained(root / "bert")
    golive.convert(root / "bert", root / "onnx")
    golive.tune(
        root / "onnx",
        root / "tuned",
        # --budget auto plans the route's export whatever the load (an explicit 20 s, priced from the convert's export
        # under the suite's load, left it out)
        dim_sizes={"batch": 1, "sequence": 64},  # long enough that fused attention's lead stands out of a busy machine's noise
        time_source=False,
        transforms=["torchscript_export"],  # the route: the export, then ONNX Runtime's fusions
        session_search=False,
    )
    return root / "tuned"


def test_a_tuned_bert_shows_its_fused_ops_and_what_they_replaced(tuned_bert, tmp_path):
    report = golive.profile(tuned_bert)
    best, baseline = report.get("best"), report.get("baseline")
    assert best is not None and baseline is not None
    attention = [n for n in best.nodes if n.op_type in ("Attention", "QAttention")]
    assert attention and all(n.provider == "CPUExecutionProvider" for n in attention)
    for node in attention:  # each fused attention stands for the original ops it replaced
        assert node.replaced_ops.get("Softmax") == 1 and node.replaced_ops.get("MatMul", 0) >= 1, node.replaced_ops
    skip = [n for n in baseline.nodes if n.op_type == "SkipLayerNormalization"]
    assert skip and all(n.replaced and n.replaced != [n.name] for n in skip)
    assert any(n.replaced_ops.get("LayerNormalization") for n in skip)
    assert report.comparison() and "<table" in report._repr_html_() and "<svg" in report._repr_html_()
    # the tune report's own "where the time goes", written by tune for its best
    tuned = json.loads((tuned_bert / "report.json").read_text())
    ops = {r["op_type"] for r in tuned["time_by_op"]}
    assert "Attention" in ops or "QAttention" in ops
    assert "Where the time goes" in (tuned_bert / "report.html").read_text()
    # profile.json of a moved run folder still loads: its paths are relative
    moved = tmp_path / "moved"
    shutil.copytree(tuned_bert, moved)
    again = ProfileReport.model_validate_json((moved / "profile" / "profile.json").read_text())
    assert again.get("best").model == "../best/model.onnx" and (moved / "profile" / again.get("best").optimized_model).is_file()
