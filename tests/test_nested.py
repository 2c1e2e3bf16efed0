"""Nested inputs and outputs: the talk's LSTM call (input, (h0, c0)), its RNNModel (input, hidden), dict and
keyword-only arguments, nested outputs; both exporters; output shapes that carry their dynamic axes."""

from __future__ import annotations

import json

import numpy as np
import pytest

import golive
from conftest import read_info, zoo

pytestmark = pytest.mark.usefixtures("steps_in_place")  # what the steps compute, not where they run

LSTM_INPUTS = ["input:float32[sequence,batch,10]", "hc.0:float32[2,batch,20]", "hc.1:float32[2,batch,20]"]
TWO_SIZES = {"sequence": [5, 11], "batch": [1, 3]}


def test_the_talks_lstm_call_with_a_tuple_argument(tmp_path, cli):
    out = tmp_path / "lstm"
    result = golive.convert(zoo("TalkLSTM"), out, inputs=LSTM_INPUTS, verify_options={"dim_sizes": TWO_SIZES})
    assert result.passed
    runs = {json.dumps(r.sizes, sort_keys=True) for r in result.verification.runs}
    assert {json.dumps(s, sort_keys=True) for s in ({"sequence": 11, "batch": 1}, {"sequence": 5, "batch": 3})} <= runs
    info = read_info(out)
    assert info["input_structure"] == {"args": ["input", {"tuple": ["hc.0", "hc.1"]}], "kwargs": {}}
    assert info["output_structure"] == {"tuple": ["output_0", {"tuple": ["output_1.0", "output_1.1"]}]}
    # the recorded output shapes say which axes follow the inputs' dynamic axes
    assert {o["name"]: o["shape"] for o in info["outputs"]} == {
        "output_0": ["sequence", "batch", 20],
        "output_1.0": [2, "batch", 20],
        "output_1.1": [2, "batch", 20],
    }
    # the dynamo export baked the traced sequence length into a Reshape: golive saw it and used the TorchScript exporter
    dynamo = info["exporter_attempts"][0]
    assert info["exporter"] == "torchscript" and not dynamo["ok"] and "runs only at the traced sizes" in dynamo["error"]
    code, stdout, _ = cli("inspect", out)
    assert code == 0 and "hc[0]" in stdout and "returned[1][1]" in stdout

    # verify again (the structure comes from golive.json), and from an .npz keyed by the inputs' paths
    rng = np.random.default_rng(3)
    data = {
        "input": rng.standard_normal((7, 2, 10)).astype(np.float32),
        "hc.0": rng.standard_normal((2, 2, 20)).astype(np.float32),
        "hc.1": rng.standard_normal((2, 2, 20)).astype(np.float32),
    }
    np.savez(tmp_path / "data.npz", **data)
    report = golive.verify(out, data=str(tmp_path / "data.npz"))
    assert report.passed and report.runs[0].sizes == {"sequence": 7, "batch": 2}


def test_the_talks_rnn_model_with_its_hidden_state_tuple(tmp_path):
    out = tmp_path / "rnn"
    result = golive.convert(
        zoo("TalkRNNModel"),
        out,
        int_ranges=["input=0:50"],
        inputs=["input:int64[sequence,batch]", "hidden.0:float32[2,batch,24]", "hidden.1:float32[2,batch,24]"],
        verify_options={"dim_sizes": TWO_SIZES},
    )
    assert result.passed
    assert [o.shape for o in result.record.outputs] == [["sequence", "batch", 50], [2, "batch", 24], [2, "batch", 24]]
    import torch

    from zoo import TalkRNNModel

    tokens = np.array([[1, 2], [3, 4], [5, 6]], np.int64)
    h = np.zeros((2, 2, 24), np.float32)
    with torch.no_grad():
        expected, (_h1, c1) = TalkRNNModel()(torch.from_numpy(tokens), (torch.from_numpy(h), torch.from_numpy(h)))
    import onnxruntime as ort

    got = ort.InferenceSession(str(out / "model.onnx")).run(None, {"input": tokens, "hidden.0": h, "hidden.1": h})
    np.testing.assert_allclose(got[0], expected.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[2], c1.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_dict_and_keyword_only_inputs_and_dict_outputs(tmp_path, exporter):
    out = tmp_path / exporter
    result = golive.convert(
        zoo("DictInput"),
        out,
        exporter=exporter,
        inputs=["features.values:float32[batch,6]", "features.scale:float32[batch,1]", "mask:float32[batch,4]"],
    )
    assert result.passed and result.record.exporter == exporter
    assert result.record.input_structure == {
        "args": [{"dict": {"values": "features.values", "scale": "features.scale"}}],
        "kwargs": {"mask": "mask"},
    }
    assert [o.name for o in result.record.outputs] == ["logits", "extra.0", "extra.1"]
    assert [o.shape for o in result.record.outputs] == [["batch", 4], ["batch"], ["batch"]]
    summary = golive.inspect(out)
    assert summary.origins["mask"] == "mask (keyword-only)" and summary.origins["extra.1"] == "returned['extra'][1]"


def test_tuning_a_nested_model_times_its_source(tmp_path):
    out = tmp_path / "lstm"
    assert golive.convert(zoo("TalkLSTM"), out, inputs=LSTM_INPUTS).passed
    tuned = golive.tune(out, tmp_path / "tuned", budget=6, transforms=[], dim_sizes={"sequence": 8, "batch": 1})
    assert tuned.report.source is not None and tuned.report.source["p50_ms"] > 0  # the source called with its tuple


@pytest.mark.parametrize(
    "inputs, message",
    [
        (["input:float32[sequence,batch,10]", "hc.0:float32[2,batch,20]", "hc.2:float32[2,batch,20]"], "numbered [0, 2]"),
        (
            ["input:float32[sequence,batch,10]", "hc:float32[2,batch,20]", "hc.1:float32[2,batch,20]"],
            "named both as a tensor and",
        ),
        (
            ["input:float32[sequence,batch,10]", "state.0:float32[2,batch,20]", "state.1:float32[2,batch,20]"],
            "forward() has no argument state",
        ),
        (["input:float32[sequence,batch,10]", "hc.0:float32[2,batch,20]", "hc.h:float32[2,batch,20]"], "mix numbers and names"),
    ],
)
def test_bad_nested_inputs_say_what_is_wrong(tmp_path, cli, inputs, message):
    args = [a for spec in inputs for a in ("--input", spec)]
    code, _, err = cli("convert", zoo("TalkLSTM"), "-o", tmp_path / "x", *args)
    assert code == 2 and message in " ".join(err.split())
    assert not (tmp_path / "x").exists()
