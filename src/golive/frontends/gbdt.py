"""Gradient-boosted trees: LightGBM booster text files and XGBoost JSON/UBJ model files, via onnxmltools."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from golive.errors import ExportError, ModelLoadError, SourceNotFoundError, first_line, require
from golive.frontends._tabular import classifier_outputs, feature_count, name_batch_axis, tabular_input
from golive.frontends.base import ExportResult, LoadedModel
from golive.spec import ConvertOptions
from golive.tensors import TensorSpec

__all__ = ["FRONTEND"]


class GbdtFrontend:
    name = "gbdt"

    def load(self, source: str, options: ConvertOptions) -> LoadedModel:
        path = Path(source)
        if not path.is_file():
            raise SourceNotFoundError(f"source {source} does not exist or is not a file")
        framework = options.framework or "lightgbm"
        if framework == "xgboost":
            booster, objective, n, classes = _load_xgboost(path)
        else:
            booster, objective, n, classes = _load_lightgbm(path)
        classifier = classes > 0
        return LoadedModel(
            framework=framework,
            source=source,
            model=booster,
            kind="booster",
            inputs=[tabular_input(n)],
            classifier=classifier,
            output_names=["label", "probabilities"] if classifier else ["variable"],
            details={"objective": objective, "classes": classes},
        )

    def export(
        self, loaded: LoadedModel, inputs: list[TensorSpec], sample: dict[str, np.ndarray], path: Path, options: ConvertOptions
    ) -> ExportResult:
        onnxmltools = require("onnxmltools", extra="gbdt", purpose="Converting a gradient-boosted tree model")
        from onnxmltools.convert.common.data_types import FloatTensorType

        n = feature_count(inputs, "XGBoost" if loaded.framework == "xgboost" else "LightGBM")
        initial = [(inputs[0].name, FloatTensorType([None, n]))]
        try:
            if loaded.framework == "xgboost":
                onx = onnxmltools.convert_xgboost(loaded.model, initial_types=initial, target_opset=options.opset)
            else:
                onx = onnxmltools.convert_lightgbm(
                    loaded.model,
                    initial_types=initial,
                    target_opset=options.opset,
                    zipmap=bool(options.zipmap and loaded.classifier),
                )
        except Exception as exc:
            raise ExportError(
                f"onnxmltools cannot convert this {loaded.framework} model (objective {loaded.details['objective']}): {exc}"
            ) from exc
        name_batch_axis(onx)
        path.write_bytes(onx.SerializeToString())
        notes = []
        if options.zipmap and loaded.framework == "xgboost":
            notes.append("the XGBoost converter has no ZipMap option; probabilities stay a plain tensor")
        return ExportResult(exporter="onnxmltools", attempts=[{"exporter": "onnxmltools", "ok": True}], notes=notes)

    def run(self, loaded: LoadedModel, feeds: dict[str, np.ndarray], output_names: list[str]) -> dict[str, np.ndarray]:
        x = next(iter(feeds.values()))
        if loaded.framework == "xgboost":
            import xgboost

            pred = np.asarray(loaded.model.predict(xgboost.DMatrix(x)))
        else:
            pred = np.asarray(loaded.model.predict(x))
        if not loaded.classifier:
            return {output_names[0]: pred.reshape(len(x), -1).astype(np.float32)}
        probs = np.stack([1 - pred, pred], axis=1) if pred.ndim == 1 else pred
        return classifier_outputs(output_names, probs.argmax(axis=1).astype(np.int64), probs)


def _load_lightgbm(path: Path):
    lgb = require("lightgbm", extra="gbdt", purpose="Loading a LightGBM model")
    try:
        booster = lgb.Booster(model_file=str(path))
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load {path.name} as a LightGBM booster text file: {exc}",
            hint="save it with booster.save_model('model.txt'), or pass --framework",
        ) from exc
    objective = str(booster.dump_model().get("objective", ""))
    name = objective.split()[0] if objective else ""
    classes = 0
    if name in ("binary", "cross_entropy"):
        classes = 2
    elif name.startswith("multiclass"):
        classes = int(objective.split("num_class:")[1].split()[0])
    return booster, objective, booster.num_feature(), classes


def _load_xgboost(path: Path):
    xgb = require("xgboost", package="xgboost-cpu", extra="gbdt", purpose="Loading an XGBoost model")
    booster = xgb.Booster()
    try:
        booster.load_model(str(path))
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load {path.name} as an XGBoost model: {first_line(exc, 1000)}",
            hint="save it with booster.save_model('model.json') or 'model.ubj'",
        ) from exc
    learner = json.loads(booster.save_config())["learner"]
    objective = learner["objective"]["name"]
    classes = 0
    if objective.startswith("binary:"):
        classes = 2
    elif objective.startswith("multi:"):
        classes = int(learner["learner_model_param"]["num_class"])
        if objective == "multi:softmax":
            raise ModelLoadError(
                "an XGBoost multi:softmax model gives labels only; golive needs multi:softprob",
                hint="train with objective='multi:softprob'",
            )
    return booster, objective, booster.num_features(), classes


FRONTEND = GbdtFrontend()
