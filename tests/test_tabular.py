"""scikit-learn, LightGBM and XGBoost sources on the data sets scikit-learn ships."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import golive
from conftest import lazy_module, read_info

# imported when a test first uses them, not by every test process that collects this module
joblib, lgb, sio, xgb = (lazy_module(m) for m in ("joblib", "lightgbm", "skops.io", "xgboost"))
datasets, ensemble, linear_model = (lazy_module(f"sklearn.{m}") for m in ("datasets", "ensemble", "linear_model"))
pipeline, preprocessing = lazy_module("sklearn.pipeline"), lazy_module("sklearn.preprocessing")

pytestmark = pytest.mark.usefixtures("steps_in_place")  # what the steps compute, not where they run


@pytest.fixture(scope="module")
def iris():
    x, y = datasets.load_iris(return_X_y=True)
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def cancer():
    x, y = datasets.load_breast_cancer(return_X_y=True)
    return x.astype(np.float32), y


def test_sklearn_pipeline_scaler_and_classifier(tmp_path, iris):
    x, y = iris
    pipe = pipeline.make_pipeline(preprocessing.StandardScaler(), linear_model.LogisticRegression(max_iter=500)).fit(x, y)
    sio.dump(pipe, tmp_path / "pipe.skops")
    np.savez(tmp_path / "iris.npz", input=x)
    result = golive.convert(tmp_path / "pipe.skops", tmp_path / "o", data=str(tmp_path / "iris.npz"))
    assert result.passed
    info = read_info(tmp_path / "o")
    assert info["framework"] == "sklearn" and info["exporter"] == "skl2onnx"
    label, probs = result.verification.outputs
    assert label.name == "label" and label.label_agreement == 1.0
    assert probs.name == "probabilities" and probs.max_abs < 1e-4
    # plain probability tensor, no ZipMap, and the labels are the pipeline's
    sess = ort.InferenceSession(str(tmp_path / "o" / "model.onnx"))
    got_label, got_probs = sess.run(None, {"input": x})
    assert isinstance(got_probs, np.ndarray) and got_probs.shape == (150, 3)
    assert not any("ZipMap" in op for op in golive.inspect(tmp_path / "o").op_types)
    assert (got_label == pipe.predict(x)).all()


def test_zipmap_on_request(tmp_path, iris):
    x, y = iris
    sio.dump(linear_model.LogisticRegression(max_iter=500).fit(x, y), tmp_path / "lr.skops")
    result = golive.convert(tmp_path / "lr.skops", tmp_path / "o", zipmap=True)
    assert result.passed
    assert "ai.onnx.ml.ZipMap" in golive.inspect(tmp_path / "o").op_types


def test_random_forest_on_breast_cancer(tmp_path, cancer):
    x, y = cancer
    sio.dump(ensemble.RandomForestClassifier(n_estimators=25, random_state=0).fit(x, y), tmp_path / "rf.skops")
    np.save(tmp_path / "x.npy", x)
    result = golive.convert(tmp_path / "rf.skops", tmp_path / "o", data=str(tmp_path / "x.npy"))
    assert result.passed
    assert result.verification.outputs[0].label_agreement == 1.0
    assert {r.sizes["batch"] for r in result.verification.runs} == {569, 572}


def test_random_forest_regressor(tmp_path):
    x, y = datasets.load_diabetes(return_X_y=True)
    sio.dump(ensemble.RandomForestRegressor(n_estimators=10, random_state=0).fit(x, y), tmp_path / "rfr.skops")
    result = golive.convert(tmp_path / "rfr.skops", tmp_path / "o", verify_options={"rtol": 1e-4})
    assert result.passed
    assert [o.name for o in result.verification.outputs] == ["variable"]


def test_lightgbm_booster_text_file(tmp_path, iris):
    x, y = iris
    lgb.train({"objective": "multiclass", "num_class": 3, "verbose": -1}, lgb.Dataset(x, y), 20).save_model(
        tmp_path / "model.txt"
    )
    result = golive.convert(tmp_path / "model.txt", tmp_path / "o")
    assert result.passed
    assert result.record.framework == "lightgbm" and result.record.exporter == "onnxmltools"
    assert result.record.outputs[1].shape == ["batch", 3]


def test_xgboost_json_and_ubj(tmp_path, cancer):
    x, y = cancer
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3}, xgb.DMatrix(x, label=y), 20)
    booster.save_model(tmp_path / "m.json")
    booster.save_model(tmp_path / "m.ubj")
    np.savez(tmp_path / "x.npz", input=x[:50])
    for name in ("m.json", "m.ubj"):
        result = golive.convert(tmp_path / name, tmp_path / f"o_{name}", data=str(tmp_path / "x.npz"))
        assert result.passed and result.record.framework == "xgboost"
        assert result.verification.outputs[0].label_agreement == 1.0


def test_joblib_needs_trust_pickle(tmp_path, iris, cli):
    x, y = iris
    joblib.dump(linear_model.LogisticRegression(max_iter=500).fit(x, y), tmp_path / "m.joblib")
    code, _, err = cli("convert", tmp_path / "m.joblib", "-o", tmp_path / "o")
    assert code == 2 and "pickle" in err and "--trust-pickle" in err and "skops" in err
    assert not (tmp_path / "o").exists()
    code, _, _ = cli("convert", tmp_path / "m.joblib", "-o", tmp_path / "o", "--trust-pickle")
    assert code == 0


def test_skops_file_with_foreign_types_needs_trust(tmp_path, iris, cli, monkeypatch):
    (tmp_path / "myscaler.py").write_text(
        "from sklearn.base import BaseEstimator, TransformerMixin\n"
        "class MyScaler(BaseEstimator, TransformerMixin):\n"
        "    def fit(self, x, y=None):\n        return self\n"
        "    def transform(self, x):\n        return x * 2\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from myscaler import MyScaler

    x, y = iris
    sio.dump(pipeline.make_pipeline(MyScaler(), linear_model.LogisticRegression(max_iter=500)).fit(x, y), tmp_path / "m.skops")
    code, _, err = cli("convert", tmp_path / "m.skops", "-o", tmp_path / "o")
    assert code == 2 and "myscaler.MyScaler" in err and "--trust-pickle" in err
    # trusted, it loads; skl2onnx has no converter for the custom step, and says so
    code, _, err = cli("convert", tmp_path / "m.skops", "-o", tmp_path / "o", "--trust-pickle")
    assert code == 2 and "number of features" in err  # MyScaler does not record n_features_in_
    code, _, err = cli(
        "convert", tmp_path / "m.skops", "-o", tmp_path / "o", "--trust-pickle", "--input", "input:float32[batch,4]"
    )
    assert code == 2 and "skl2onnx cannot convert" in err and "MyScaler" in err
    assert not (tmp_path / "o").exists()


def test_a_tree_model_needs_a_fixed_feature_count(tmp_path, iris, cli):
    x, y = iris
    lgb.train({"objective": "multiclass", "num_class": 3, "verbose": -1}, lgb.Dataset(x, y), 5).save_model(tmp_path / "model.txt")
    code, _, err = cli("convert", tmp_path / "model.txt", "-o", tmp_path / "o", "--input", "input:float32[batch,features]")
    assert code == 2 and "LightGBM model takes one [batch, features] input" in err, err
    assert not (tmp_path / "o").exists()


def test_tuning_a_tree_ensemble_says_which_transforms_cannot_apply(tmp_path, iris):
    """An XGBoost classifier has no MatMul, no standard ONNX operator for ORT's fusions or quantizers: those are
    not tried and the report says why in one sentence, instead of rows failed with their raw exceptions. The
    table's first row is the best, whatever a single figure of another row said."""
    x, y = iris
    model = xgb.XGBClassifier(n_estimators=20, max_depth=3).fit(x, y)
    model.save_model(tmp_path / "m.json")
    golive.convert(tmp_path / "m.json", tmp_path / "o")
    result = golive.tune(tmp_path / "o", tmp_path / "t", budget=6, time_source=False)
    report = result.report
    assert not [c for c in report.candidates if c.status == "failed"], [c.reason for c in report.candidates]
    assert all(not c.transforms or c.transforms == ["ort_optimized_graph"] for c in report.candidates)
    notes = [n for n in report.notes if n.startswith("not applicable, so not tried: ")]
    assert notes and "ort_fusion" in " ".join(notes) and "int8_dynamic" in " ".join(notes)
    assert any("only ai.onnx.ml" in n or "no standard ONNX operators" in n for n in notes)
    ranked = report.ranked()
    assert ranked[0].id == report.best.id
    assert all(report.measured(c).startswith(f"{len(c.p50_runs)}×") for c in ranked if c.p50_runs)
