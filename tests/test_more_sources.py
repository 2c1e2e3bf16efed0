"""The rest of the talk's converter list: LibSVM, Core ML and SparkML sources, each verified against outputs
computed independently of the ONNX model (libsvm's own prediction, numpy from the same weights, Spark)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest

import golive
from conftest import read_info
from golive.frontends.base import guess_framework

pytestmark = pytest.mark.usefixtures("steps_in_place")  # what the converters compute, not where they run


def iris():
    from sklearn.datasets import load_iris

    return load_iris(return_X_y=True)


# ---------------------------------------------------------------- LibSVM


@pytest.fixture(scope="module")
def svm_models(tmp_path_factory):
    pytest.importorskip("libsvm")
    from libsvm.svmutil import svm_save_model, svm_train
    from sklearn.datasets import load_diabetes

    folder = tmp_path_factory.mktemp("libsvm")
    X, y = iris()
    rows = [{k + 1: float(v) for k, v in enumerate(r)} for r in X]
    made = {}
    for name, opts, labels in [
        ("csvc_prob", "-s 0 -t 2 -b 1 -q", y),
        ("nusvc", "-s 1 -t 1 -q", y),
        ("binary_prob", "-s 0 -t 0 -b 1 -q", (y > 1).astype(float)),
        ("binary", "-s 0 -t 3 -q", (y > 0).astype(float)),
    ]:
        svm_save_model(str(folder / f"{name}.model"), svm_train(list(labels), rows, opts))
        made[name] = folder / f"{name}.model"
    Xd, yd = load_diabetes(return_X_y=True)
    svm_save_model(
        str(folder / "svr.model"),
        svm_train(list(yd / 100), [{k + 1: float(v) for k, v in enumerate(r)} for r in Xd], "-s 3 -t 2 -c 10 -q"),
    )
    made["svr"] = folder / "svr.model"
    np.save(folder / "iris.npy", X.astype(np.float32))
    np.save(folder / "diabetes.npy", Xd.astype(np.float32))
    return folder, made


@pytest.mark.parametrize(
    "name, outputs",
    [
        ("csvc_prob", ["label", "probabilities"]),
        ("nusvc", ["label", "decision_values"]),
        ("binary_prob", ["label", "probabilities"]),
        ("binary", ["label", "decision_values"]),
        ("svr", ["value"]),
    ],
)
def test_libsvm_models_match_svm_predict(svm_models, tmp_path, name, outputs):
    from libsvm.svmutil import svm_load_model, svm_predict

    folder, made = svm_models
    data = folder / ("diabetes.npy" if name == "svr" else "iris.npy")
    assert guess_framework(str(made[name])) == "libsvm"
    result = golive.convert(str(made[name]), tmp_path / name, data=str(data))
    assert result.passed, result.verification.failures()
    assert result.record.exporter == "golive-libsvm" and [o.name for o in result.record.outputs] == outputs
    # and against libsvm's own svm_predict on the same rows (nu-SVC: its Python wrapper overflows a buffer, see libsvm.py)
    if name != "nusvc":
        X = np.load(data)
        model = svm_load_model(str(made[name]))
        flags = "-b 1 -q" if "prob" in name else "-q"
        labels, _, values = svm_predict([0] * len(X), [{k + 1: float(v) for k, v in enumerate(r)} for r in X], model, flags)
        got = ort.InferenceSession(str(tmp_path / name / "model.onnx")).run(None, {"input": X})
        if name == "svr":
            np.testing.assert_allclose(got[0].ravel(), labels, rtol=1e-3, atol=1e-3)
        else:
            assert (got[0] == np.asarray(labels)).all()
            np.testing.assert_allclose(got[1], np.asarray(values), rtol=1e-3, atol=1e-4)


def test_libsvm_inspect_and_tune(svm_models, tmp_path, cli):
    _folder, made = svm_models
    out = tmp_path / "svc"
    assert golive.convert(str(made["csvc_prob"]), out).passed
    code, stdout, _ = cli("inspect", out)
    assert code == 0 and "SVMClassifier" in stdout
    tuned = golive.tune(out, tmp_path / "tuned", budget=4, transforms=[], time_source=False)
    assert tuned.best.status == "passed"


# ---------------------------------------------------------------- Core ML


@pytest.fixture(scope="module")
def coreml_models(tmp_path_factory):
    pytest.importorskip("coremltools")
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder
    from coremltools.models.tree_ensemble import TreeEnsembleRegressor
    from coremltools.models.utils import save_spec

    folder = tmp_path_factory.mktemp("coreml")
    rng = np.random.default_rng(0)
    W1, b1, W2, b2 = rng.standard_normal((8, 4)), rng.standard_normal(8), rng.standard_normal((3, 8)), rng.standard_normal(3)
    nn = NeuralNetworkBuilder([("x", datatypes.Array(4))], [("probs", datatypes.Array(3))])
    nn.add_inner_product("fc1", W1, b1, 4, 8, True, "x", "h")
    nn.add_activation("relu", "RELU", "h", "hr")
    nn.add_inner_product("fc2", W2, b2, 8, 3, True, "hr", "z")
    nn.add_softmax("softmax", "z", "probs")
    save_spec(nn.spec, str(folder / "mlp.mlmodel"))
    X = rng.standard_normal((12, 4)).astype(np.float32)
    z = np.maximum(X @ W1.T + b1, 0) @ W2.T + b2
    p = np.exp(z - z.max(1, keepdims=True))
    np.savez(folder / "mlp.npz", x=X, probs=(p / p.sum(1, keepdims=True)).astype(np.float32))

    trees = TreeEnsembleRegressor([("x", datatypes.Array(3))], "y")
    trees.add_branch_node(0, 0, 0, 0.5, "BranchOnValueLessThan", 1, 2)
    trees.add_leaf_node(0, 1, 1.0)
    trees.add_branch_node(0, 2, 2, -0.2, "BranchOnValueLessThan", 3, 4)
    trees.add_leaf_node(0, 3, 2.0)
    trees.add_leaf_node(0, 4, 3.0)
    trees.add_branch_node(1, 0, 1, 0.0, "BranchOnValueLessThan", 1, 2)
    trees.add_leaf_node(1, 1, -0.5)
    trees.add_leaf_node(1, 2, 0.25)
    trees.set_default_prediction_value(0.1)
    save_spec(trees.spec, str(folder / "trees.mlmodel"))
    Xt = rng.standard_normal((20, 3)).astype(np.float32)
    yt = np.where(Xt[:, 0] < 0.5, 1.0, np.where(Xt[:, 2] < -0.2, 2.0, 3.0)) + np.where(Xt[:, 1] < 0, -0.5, 0.25) + 0.1
    np.savez(folder / "trees.npz", x=Xt, y=yt.astype(np.float32).reshape(-1, 1))
    return folder


@pytest.mark.parametrize("name, output", [("mlp", "probs"), ("trees", "y")])
def test_coreml_models_match_numpy_from_the_same_weights(coreml_models, tmp_path, name, output):
    folder = coreml_models
    assert guess_framework(str(folder / f"{name}.mlmodel")) == "coreml"
    result = golive.convert(str(folder / f"{name}.mlmodel"), tmp_path / name, data=str(folder / f"{name}.npz"))
    assert result.passed and result.verification.reference.startswith("expected outputs in")
    with np.load(folder / f"{name}.npz") as z:
        session = ort.InferenceSession(str(tmp_path / name / "model.onnx"))
        got = session.run([output], {session.get_inputs()[0].name: z["x"].astype(np.float32)})[0]
        np.testing.assert_allclose(got.reshape(z[output].shape), z[output], rtol=1e-5, atol=1e-6)


def test_coreml_without_expected_outputs_is_never_called_passed(coreml_models, tmp_path, cli):
    model = coreml_models / "mlp.mlmodel"
    code, _, err = cli("convert", model, "-o", tmp_path / "a")
    assert code == 2 and "nothing independent to verify against" in " ".join(err.split()) and not (tmp_path / "a").exists()
    code, stdout, _ = cli("convert", model, "-o", tmp_path / "b", "--no-verify", "--json")
    assert code == 0 and json.loads(stdout)["verification"] is None


def test_coreml_bad_inputs(coreml_models, tmp_path, cli):
    (tmp_path / "broken.mlmodel").write_bytes(b"\x00\x01not a model")
    (tmp_path / "prog.mlpackage").mkdir()
    for source, text in [
        (tmp_path / "broken.mlmodel", "not a readable Core ML model"),
        (tmp_path / "prog.mlpackage", "Core ML package (an ML program)"),
        (tmp_path / "missing.mlmodel", "does not exist"),
    ]:
        code, _, err = cli("convert", source, "-o", tmp_path / "out")
        assert code == 2 and text in " ".join(err.split()), (source, err)
        assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- SparkML


@pytest.fixture(scope="module")
def spark_pipeline(tmp_path_factory):
    pytest.importorskip("pyspark")
    if not shutil.which("java"):
        pytest.skip("no Java runtime (make test installs default-jre-headless)")
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import StandardScaler, VectorAssembler

    from golive.frontends.spark import _spark

    folder = tmp_path_factory.mktemp("spark")
    # the session golive's SparkML frontend starts in this process (one JVM, stopped at exit), which the convert below,
    # run here too (steps_in_place), uses again: a JVM start is 10 s
    spark = _spark()
    X, y = iris()
    frame = spark.createDataFrame(
        [(*tuple(map(float, r)), float(t)) for r, t in zip(X, y, strict=True)], ["a", "b", "c", "d", "label"]
    )
    model = Pipeline(
        stages=[
            VectorAssembler(inputCols=["a", "b", "c", "d"], outputCol="raw"),
            StandardScaler(inputCol="raw", outputCol="features", withMean=True, withStd=True),
            LogisticRegression(featuresCol="features", labelCol="label", maxIter=50),
        ]
    ).fit(frame)
    model.write().overwrite().save(str(folder / "pipeline"))
    expected = np.array([r["probability"].toArray() for r in model.transform(frame).select("probability").collect()])
    np.savez(folder / "rows.npz", **{c: X[:, i : i + 1].astype(np.float32) for i, c in enumerate("abcd")})
    return folder, expected


def test_spark_pipeline_verified_against_spark(spark_pipeline, tmp_path):
    folder, expected = spark_pipeline
    assert guess_framework(str(folder / "pipeline")) == "spark"
    result = golive.convert(str(folder / "pipeline"), tmp_path / "out", data=str(folder / "rows.npz"))
    assert result.passed and result.verification.reference == "spark source model"
    assert any("softmax" in n for n in read_info(tmp_path / "out")["notes"])
    X, _ = iris()
    got = ort.InferenceSession(str(tmp_path / "out" / "model.onnx")).run(
        ["probability"], {c: X[:, i : i + 1].astype(np.float32) for i, c in enumerate("abcd")}
    )[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)  # Spark's softmax probabilities, not the converter's logistic ones


def test_spark_bad_inputs(tmp_path, cli):
    (tmp_path / "notspark" / "metadata").mkdir(parents=True)
    (tmp_path / "notspark" / "stages").mkdir()
    code, _, err = cli("convert", tmp_path / "notspark", "-o", tmp_path / "out")
    assert code == 2 and "not a saved SparkML model" in " ".join(err.split())
    assert not (tmp_path / "out").exists()


def test_libsvm_bad_inputs(tmp_path, cli):
    pytest.importorskip("libsvm")
    (tmp_path / "half.model").write_text("svm_type c_svc\nkernel_type rbf\n")
    (tmp_path / "other.model").write_text("not a model at all\n")
    code, _, err = cli("convert", tmp_path / "half.model", "-o", tmp_path / "out")
    assert code == 2 and "libsvm cannot read half.model" in " ".join(err.split())
    code, _, err = cli("convert", tmp_path / "other.model", "-o", tmp_path / "out", "--framework", "libsvm")
    assert code == 2 and "is not a LibSVM model file" in " ".join(err.split())
    assert not (tmp_path / "out").exists()
