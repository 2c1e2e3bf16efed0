"""scikit-learn estimators and pipelines, exported with skl2onnx.

Models are read from skops files (only the types skops trusts, unless --trust-pickle);
joblib/pickle files need --trust-pickle because unpickling runs code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from golive.errors import ExportError, FrameworkError, ModelLoadError, SourceNotFoundError, UntrustedPickleError, require
from golive.frontends._tabular import classifier_outputs, feature_count, name_batch_axis, tabular_input
from golive.frontends.base import ExportResult, LoadedModel
from golive.frontends.onnxfile import rename_values
from golive.spec import ConvertOptions
from golive.tensors import TensorSpec

__all__ = ["FRONTEND"]

_PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
_KNOWN_LIBRARIES = {"sklearn", "numpy", "scipy", "builtins", "collections"}


class SklearnFrontend:
    name = "sklearn"

    def load(self, source: str, options: ConvertOptions) -> LoadedModel:
        require("sklearn", package="scikit-learn", extra="sklearn", purpose="Converting a scikit-learn model")
        path = Path(source)
        if not path.is_file():
            raise SourceNotFoundError(f"source {source} does not exist or is not a file")
        if path.suffix.lower() in _PICKLE_SUFFIXES:
            model = _load_pickle(path, options.trust_pickle)
            kind = "pickle"
        else:
            model = _load_skops(path, options.trust_pickle)
            kind = "skops"
        if not hasattr(model, "predict") or not hasattr(model, "get_params"):
            raise FrameworkError(f"{path.name} holds a {type(model).__name__}, not a scikit-learn estimator")
        from sklearn.base import is_classifier
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        try:
            check_is_fitted(model)
        except NotFittedError as exc:
            raise ModelLoadError(
                f"the {type(model).__name__} in {path.name} is not fitted", hint="fit the estimator before saving it"
            ) from exc
        n = _n_features(model)
        classifier = bool(is_classifier(model))
        return LoadedModel(
            framework=self.name,
            source=source,
            model=model,
            kind=kind,
            inputs=[tabular_input(n)] if n else None,
            classifier=classifier,
            output_names=["label", "probabilities"] if classifier else ["variable"],
            details={"estimator": type(model).__name__},
        )

    def export(
        self, loaded: LoadedModel, inputs: list[TensorSpec], sample: dict[str, np.ndarray], path: Path, options: ConvertOptions
    ) -> ExportResult:
        skl2onnx = require("skl2onnx", extra="sklearn", purpose="Converting a scikit-learn model")
        from skl2onnx.common.data_types import FloatTensorType

        model = loaded.model
        n = feature_count(inputs, "scikit-learn")
        convert_options = None
        if loaded.classifier:
            final = model.steps[-1][1] if hasattr(model, "steps") else model
            convert_options = {type(final): {"zipmap": bool(options.zipmap)}}
        target_opset = {"": options.opset, "ai.onnx.ml": 3} if options.opset else None
        try:
            onx = skl2onnx.convert_sklearn(
                model,
                initial_types=[(inputs[0].name, FloatTensorType([None, n]))],
                options=convert_options,
                target_opset=target_opset,
            )
        except Exception as exc:
            raise ExportError(
                f"skl2onnx cannot convert the {type(model).__name__}: {exc}",
                hint="skl2onnx lists the estimators it supports; a custom estimator needs a registered converter",
            ) from exc
        name_batch_axis(onx)
        _rename_outputs(onx, loaded.output_names if not options.zipmap else None)
        path.write_bytes(onx.SerializeToString())
        return ExportResult(exporter="skl2onnx", attempts=[{"exporter": "skl2onnx", "ok": True}])

    def run(self, loaded: LoadedModel, feeds: dict[str, np.ndarray], output_names: list[str]) -> dict[str, np.ndarray]:
        x = next(iter(feeds.values()))
        model = loaded.model
        if loaded.classifier:
            return classifier_outputs(output_names, np.asarray(model.predict(x)), np.asarray(model.predict_proba(x)))
        pred = np.asarray(model.predict(x))
        return {output_names[0]: pred.reshape(len(x), -1)}


def _n_features(model) -> int | None:
    """Number of input features: the estimator's own, or the first pipeline step that knows it."""
    n = getattr(model, "n_features_in_", None)
    if n is None and hasattr(model, "steps"):
        first = model.steps[0][1]
        n = getattr(first, "n_features_in_", None)
    return int(n) if n is not None else None


def _rename_outputs(onx, names: list[str] | None) -> None:
    """skl2onnx calls them output_label/output_probability/variable; golive uses label/probabilities/variable."""

    if names and len(names) == len(onx.graph.output):
        rename_values(onx, {o.name: n for o, n in zip(onx.graph.output, names, strict=True)})


def _load_skops(path: Path, trust: bool):
    sio = require("skops.io", package="skops", extra="sklearn", purpose="Reading a skops file")
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:
        raise ModelLoadError(
            f"cannot read {path.name} as a skops file: {exc}", hint="save the model with skops.io.dump(model, 'model.skops')"
        ) from exc
    # skops rebuilds objects with its own loaders instead of unpickling; classes of the libraries golive
    # already runs (scikit-learn's Tree, numpy, scipy) are safe to rebuild, anything else needs the opt-in.
    foreign = [t for t in untrusted if t.split(".")[0] not in _KNOWN_LIBRARIES]
    if foreign and not trust:
        raise UntrustedPickleError(
            f"{path.name} holds types from outside scikit-learn, numpy and scipy: {', '.join(foreign)}",
            hint="loading them may run their code; if you trust the file, pass --trust-pickle",
        )
    try:
        return sio.load(path, trusted=untrusted or None)
    except Exception as exc:
        raise ModelLoadError(f"cannot load {path.name}: {exc}") from exc


def _load_pickle(path: Path, trust: bool):
    if not trust:
        raise UntrustedPickleError(
            f"{path.name} is a pickle file; loading it runs whatever code it holds",
            hint="save the model with skops (skops.io.dump(model, 'model.skops')), or pass --trust-pickle if you trust the file",
        )
    import joblib

    try:
        return joblib.load(path)
    except Exception as exc:
        raise ModelLoadError(f"cannot unpickle {path.name}: {exc}") from exc


FRONTEND = SklearnFrontend()
