"""TensorFlow and Keras sources: Keras 3 files, SavedModels (Keras-written and hand-written), frozen graphs."""

from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import onnxruntime as ort
import pytest

import golive
from conftest import lazy_module, read_info

tf = lazy_module("tensorflow")
keras = lazy_module("keras")
pytestmark = pytest.mark.usefixtures("steps_in_place")  # what the converters compute: no TensorFlow import a call


def _cnn():
    keras.utils.set_random_seed(1)
    image = keras.Input((28, 28, 1), name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu")(image)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(image, logits)


def _text_model():
    """Two inputs: token ids through an embedding, and dense features; two named outputs."""
    keras.utils.set_random_seed(2)
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    features = keras.Input((6,), name="features")
    e = keras.layers.Embedding(500, 16)(tokens)
    e = keras.layers.GlobalAveragePooling1D()(e)
    h = keras.layers.Concatenate()([e, keras.layers.Dense(16, activation="relu")(features)])
    scores = keras.layers.Dense(3, name="scores")(h)
    prob = keras.layers.Dense(1, activation="sigmoid", name="prob")(h)
    return keras.Model([tokens, features], [scores, prob])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each Keras model saved both ways: a .keras file and a SavedModel written by model.export."""
    root = tmp_path_factory.mktemp("tf")
    for name, build in (("cnn", _cnn), ("text", _text_model)):
        model = build()
        model.save(root / f"{name}.keras")
        model.export(str(root / f"{name}_savedmodel"), format="tf_saved_model", verbose=False)
    return root


def _flat(text: str) -> str:
    """The CLI's messages with rich's line wrapping undone."""
    return " ".join(text.split())


def _ort(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return {o.name: v for o, v in zip(session.get_outputs(), session.run(None, feeds), strict=True)}


def test_keras_cnn_file_goes_through_keras_export_with_dynamic_batch(saved, tmp_path):
    result = golive.convert(saved / "cnn.keras", tmp_path / "o")
    info = read_info(tmp_path / "o")
    assert result.passed
    assert info["framework"] == "tensorflow" and info["source_kind"] == "keras" and info["exporter"] == "keras"
    assert info["inputs"][0]["shape"] == ["batch", 28, 28, 1]
    assert info["outputs"][0]["name"] == "logits"
    assert {tuple(r.sizes.items()) for r in result.verification.runs} >= {(("batch", 2),), (("batch", 5),)}
    x = np.random.default_rng(0).random((7, 28, 28, 1), dtype=np.float32)  # a size verify did not use
    expected = keras.saving.load_model(saved / "cnn.keras")(x).numpy()
    np.testing.assert_allclose(_ort(result.model_path, {"image": x})["logits"], expected, rtol=1e-4, atol=1e-5)


def test_keras_cnn_savedmodel_goes_through_tf2onnx(saved, tmp_path):
    result = golive.convert(saved / "cnn_savedmodel", tmp_path / "o")
    info = read_info(tmp_path / "o")
    assert result.passed and info["source_kind"] == "saved-model" and info["exporter"] == "tf2onnx"
    assert info["inputs"][0]["shape"] == ["batch", 28, 28, 1]
    x = np.random.default_rng(1).random((3, 28, 28, 1), dtype=np.float32)
    reference = tf.saved_model.load(str(saved / "cnn_savedmodel")).signatures["serving_default"]
    expected = reference(image=tf.constant(x))["output_0"].numpy()
    got = _ort(result.model_path, {"image": x})["output_0"]
    assert np.abs(got - expected).max() < 1e-5


@pytest.mark.parametrize("source", ["text.keras", "text_savedmodel"])
def test_two_input_text_model_both_ways(saved, tmp_path, source):
    result = golive.convert(saved / source, tmp_path / "o")
    info = read_info(tmp_path / "o")
    assert result.passed, result.verification.failures()
    by_name = {s["name"]: s for s in info["inputs"]}
    assert by_name["tokens"]["shape"] == ["batch", "sequence"] and by_name["tokens"]["dtype"] == "int32"
    assert by_name["features"]["shape"] == ["batch", 6]
    sizes = [r.sizes for r in result.verification.runs]
    assert {"batch": 2, "sequence": 11} in sizes and {"batch": 5, "sequence": 8} in sizes
    if source.endswith(".keras"):
        assert info["exporter"] == "keras"
        assert [o["name"] for o in info["outputs"]] == ["scores", "prob"]
        assert by_name["tokens"]["int_range"] == [0, 500]  # the embedding's vocabulary, read from the model


def test_keras_file_through_the_savedmodel_route(saved, tmp_path, cli):
    code, _stdout, stderr = cli("convert", saved / "text.keras", "-o", tmp_path / "o", "--exporter", "tf2onnx")
    assert code == 0, stderr
    info = read_info(tmp_path / "o")
    assert info["exporter"] == "tf2onnx" and info["verification"]["passed"]
    assert [o["name"] for o in info["outputs"]] == ["scores", "prob"]  # mapped back from output_0, output_1
    assert any("SavedModel" in n for n in info["notes"])


@pytest.fixture(scope="module")
def ranking_savedmodel(tmp_path_factory):
    """A hand-written tf.Module whose only signatures are custom ones, with dict outputs."""
    root = tmp_path_factory.mktemp("sig") / "ranker"

    class Ranker(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(tf.random.stateless_normal([3, 4], seed=[1, 2]))
            self.emb = tf.Variable(tf.random.stateless_normal([40, 4], seed=[3, 4]))

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, 3], tf.float32, name="features"),
                tf.TensorSpec([None, None], tf.int64, name="history"),
            ]
        )
        def rank(self, features, history):
            s = tf.matmul(features, self.w) + tf.reduce_mean(tf.gather(self.emb, history), axis=1)
            return {"score": s, "best": tf.argmax(s, axis=1)}

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="features")])
        def embed(self, features):
            return {"embedding": tf.nn.l2_normalize(tf.matmul(features, self.w), axis=1)}

    ranker = Ranker()
    tf.saved_model.save(ranker, str(root), signatures={"rank": ranker.rank, "embed": ranker.embed})
    return root


def test_savedmodel_custom_signature(ranking_savedmodel, tmp_path, cli):
    code, _, stderr = cli("convert", ranking_savedmodel, "-o", tmp_path / "none")
    stderr = _flat(stderr)
    assert code == 2 and "several signatures" in stderr and "--signature" in stderr
    assert not (tmp_path / "none").exists()

    code, stdout, stderr = cli(
        "convert", ranking_savedmodel, "-o", tmp_path / "o", "--signature", "rank", "--int-range", "history=0:40"
    )
    assert code == 0, stderr
    info = read_info(tmp_path / "o")
    assert [s["name"] for s in info["inputs"]] == ["features", "history"]
    assert {o["name"]: o["dtype"] for o in info["outputs"]} == {"best": "int64", "score": "float32"}
    assert info["options"]["signature"] == "rank"
    # verify again later, from the folder: TensorFlow runs the same signature
    code, stdout, stderr = cli("verify", tmp_path / "o", "--dim", "sequence=3,17")
    assert code == 0, stderr
    assert "sequence=17" in stdout

    code, _, stderr = cli("convert", ranking_savedmodel, "-o", tmp_path / "x", "--signature", "nope")
    stderr = _flat(stderr)
    assert code == 2 and "no signature 'nope'" in stderr and "embed, rank" in stderr


def test_savedmodel_without_variables_folder(saved, tmp_path, cli):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes((saved / "cnn_savedmodel" / "saved_model.pb").read_bytes())
    code, _, stderr = cli("convert", broken, "-o", tmp_path / "o")
    stderr = _flat(stderr)
    assert code == 2
    assert "no variables/ folder" in stderr and "hint:" in stderr
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def frozen_graph(tmp_path_factory):
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    root = tmp_path_factory.mktemp("frozen")
    w = tf.Variable(tf.random.stateless_normal([4, 3], seed=[5, 6]))

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def classify(x):
        hidden = tf.nn.relu(tf.matmul(x, w), name="hidden")
        return tf.nn.softmax(hidden, name="probs")

    frozen = convert_variables_to_constants_v2(classify.get_concrete_function())
    tf.io.write_graph(frozen.graph.as_graph_def(), str(root), "classifier.pb", as_text=False)
    return root / "classifier.pb"


def test_frozen_graph_with_named_tensors(frozen_graph, tmp_path, cli):
    code, _stdout, stderr = cli(
        "convert", frozen_graph, "-o", tmp_path / "o", "--input", "x:float32[batch,4]", "--output-names", "probs,hidden"
    )
    assert code == 0, stderr
    info = read_info(tmp_path / "o")
    assert info["source_kind"] == "frozen-graph" and info["exporter"] == "tf2onnx"
    assert [o["name"] for o in info["outputs"]] == ["probs", "hidden"]
    x = np.random.default_rng(2).random((6, 4), dtype=np.float32)
    got = _ort(tmp_path / "o" / "model.onnx", {"x": x})
    np.testing.assert_allclose(got["probs"].sum(axis=1), np.ones(6), rtol=1e-5)
    assert (got["hidden"] >= 0).all()


def test_frozen_graph_guesses_placeholders_and_outputs(frozen_graph, tmp_path):
    result = golive.convert(frozen_graph, tmp_path / "o")
    assert result.passed
    assert [s.name for s in result.record.inputs] == ["x"]
    assert any("--output-names" in n for n in result.record.notes)


@pytest.mark.parametrize("flag,value,role", [("--input", "y:float32[batch,4]", "input"), ("--output-names", "prob", "output")])
def test_frozen_graph_unknown_tensor_name(frozen_graph, tmp_path, cli, flag, value, role):
    code, _, stderr = cli("convert", frozen_graph, "-o", tmp_path / "o", flag, value)
    stderr = _flat(stderr)
    assert code == 2
    assert f"no tensor named {value.split(':')[0]} (given as an {role})" in stderr
    if role == "output":
        assert "close names: probs" in stderr
    assert not (tmp_path / "o").exists()


def test_framework_is_guessed_from_tensorflow_sources(saved, frozen_graph):
    from golive.frontends.base import guess_framework

    for source in (saved / "cnn.keras", saved / "cnn_savedmodel", frozen_graph):
        assert guess_framework(str(source)) == "tensorflow"


def test_mixed_precision_keras_model_is_verified_at_float16_tolerances(tmp_path):
    keras.utils.set_random_seed(3)
    x = keras.Input((8,), name="x")
    h = keras.layers.Dense(64, activation="relu", dtype="mixed_float16")(x)
    y = keras.layers.Dense(3, dtype="float32", name="y")(h)
    keras.Model(x, y).save(tmp_path / "mixed.keras")
    result = golive.convert(tmp_path / "mixed.keras", tmp_path / "o")
    assert result.passed
    assert result.verification.outputs[0].rtol == 1e-2 and result.verification.outputs[0].atol == 1e-3
    assert any("float16" in n for n in result.verification.notes)
    strict = golive.verify(tmp_path / "o", rtol=1e-6, atol=1e-7)  # the user's tolerances win
    assert strict.outputs[0].rtol == 1e-6 and not any("float16" in n for n in strict.notes)


def test_keras_custom_layer_with_an_op_tf2onnx_lacks(tmp_path, cli):
    """--import registers the layer; the op tf2onnx cannot convert is named with the way out, then kept as an
    ai.onnx.contrib node (--custom-translation) and run by a Python implementation (--custom-ops)."""
    import keras_layers
    from conftest import TESTS

    a = keras.Input((3, 3), name="a")
    keras.Model(a, keras_layers.Inverse(name="inverse")(a)).save(tmp_path / "inv.keras")
    rng = np.random.default_rng(4)
    np.savez(tmp_path / "a.npz", a=(rng.random((4, 3, 3)) + 3 * np.eye(3)).astype(np.float32))
    base = ["convert", tmp_path / "inv.keras", "-o", tmp_path / "o", "--data", tmp_path / "a.npz"]

    # a fresh process has never seen the layer (this one has: the test built the model with it)
    fresh = subprocess.run(
        [sys.executable, "-m", "golive", *map(str, base)], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}
    )
    assert fresh.returncode == 2 and "Keras cannot load" in fresh.stderr and "register_keras_serializable" in fresh.stderr

    code, _, err = cli(*base, "--import", "keras_layers")
    err = _flat(err)
    assert code == 2 and "cannot convert the TensorFlow op MatrixInverse" in err
    assert "--custom-translation MatrixInverse=ai.onnx.contrib" in err and "--custom-ops" in err

    code, _, err = cli(
        *base,
        "--import",
        "keras_layers",
        "--custom-translation",
        "MatrixInverse=ai.onnx.contrib",
        "--custom-ops",
        TESTS / "custom_ops_runtime.py",
    )
    assert code == 0, err
    info = read_info(tmp_path / "o")
    assert info["exporter"] == "tf2onnx" and info["verification"]["passed"]
    assert info["custom_ops"] == ["custom_ops/custom_ops_runtime.py"]
    assert golive.inspect(tmp_path / "o").custom_ops == {"ai.onnx.contrib": ["MatrixInverse"]}
