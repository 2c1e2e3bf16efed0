"""SparkML: a saved ``PipelineModel`` folder, converted by onnxmltools' (alpha) SparkML converter, with a fix.

onnxmltools writes a multinomial LogisticRegression's probabilities with a LOGISTIC post-transform and an L1
normalizer where Spark uses softmax: the labels agree, the probabilities do not (off by up to 0.5 on iris).
golive sets the SOFTMAX post-transform on those nodes. The converter needs pandas, and a Spark session: a
local one (``local[1]``, no UI, bound to 127.0.0.1) starts in the step's own process, and verification runs the
same PipelineModel on it. PySpark needs Java (Debian: ``default-jre-headless``).
"""

from __future__ import annotations

import atexit
import os
import shutil
from pathlib import Path

import numpy as np

from golive._io import captured_output
from golive.errors import ExportError, ModelLoadError, SourceNotFoundError, first_line, require
from golive.frontends._tabular import name_batch_axis
from golive.frontends.base import ExportResult, LoadedModel
from golive.spec import ConvertOptions
from golive.tensors import BATCH, TensorSpec

__all__ = ["FRONTEND", "is_spark_pipeline"]

_session = None


def is_spark_pipeline(path: Path) -> bool:
    meta = path / "metadata"
    if not meta.is_dir():
        return False
    return any("org.apache.spark.ml" in p.read_text(errors="replace")[:2000] for p in meta.glob("part-*"))


def _spark():
    """This process's local Spark session (started once, stopped at exit)."""
    global _session
    if _session is not None:
        return _session
    require("pyspark", extra="spark", purpose="Loading a SparkML pipeline")
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        raise ModelLoadError(
            "PySpark needs Java, and there is no java on this machine",
            hint="install a Java runtime: apt-get install default-jre-headless (Debian/Ubuntu), or set JAVA_HOME",
        )
    from pyspark.sql import SparkSession

    with captured_output(("py4j", "pyspark")):  # the JVM's start-up chatter
        _session = (
            SparkSession.builder.master("local[1]")
            .appName("golive")
            .config("spark.ui.enabled", "false")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .getOrCreate()
        )
        _session.sparkContext.setLogLevel("ERROR")
    atexit.register(_session.stop)
    return _session


def _stages(model):
    from pyspark.ml import PipelineModel

    for stage in model.stages:
        if isinstance(stage, PipelineModel):
            yield from _stages(stage)
        else:
            yield stage


def _input_columns(model) -> list[str]:
    """Columns the pipeline reads that no earlier stage writes, in the order it reads them."""
    produced, needed = set(), []
    for stage in _stages(model):
        cols = []
        for param in ("inputCol", "inputCols", "featuresCol"):
            if stage.hasParam(param) and stage.isDefined(param):
                value = stage.getOrDefault(param)
                cols += value if isinstance(value, list) else [value]
        needed += [c for c in cols if c not in produced and c not in needed]
        for param in ("outputCol", "outputCols", "predictionCol", "probabilityCol", "rawPredictionCol"):
            if stage.hasParam(param) and stage.isDefined(param):
                value = stage.getOrDefault(param)
                produced.update(value if isinstance(value, list) else [value])
    return needed


class SparkFrontend:
    name = "spark"

    def load(self, source: str, options: ConvertOptions) -> LoadedModel:
        path = Path(source)
        if not path.exists():
            raise SourceNotFoundError(f"source {source} does not exist")
        if not path.is_dir() or not is_spark_pipeline(path):
            raise ModelLoadError(
                f"{path.name} is not a saved SparkML model (a folder with metadata/ and stages/)",
                hint="save the fitted pipeline with pipeline_model.write().save(path)",
            )
        spark = _spark()
        from pyspark.ml import PipelineModel

        try:
            model = PipelineModel.load(str(path.absolute()))
        except Exception as exc:
            raise ModelLoadError(
                f"Spark cannot load the pipeline in {path.name}: {first_line(exc)}",
                hint="save it with PipelineModel.write().save(path), with this Spark version",
            ) from None
        columns = _input_columns(model)
        inputs = [TensorSpec(name=c, dtype="float32", shape=[BATCH, 1]) for c in columns]
        return LoadedModel(
            framework=self.name,
            source=source,
            model=model,
            kind="PipelineModel",
            inputs=inputs,
            details={"spark": spark, "stages": [type(s).__name__ for s in _stages(model)]},
        )

    def export(
        self, loaded: LoadedModel, inputs: list[TensorSpec], sample: dict[str, np.ndarray], path: Path, options: ConvertOptions
    ) -> ExportResult:
        onnxmltools = require("onnxmltools", extra="spark", purpose="Converting a SparkML pipeline")
        require("pandas", extra="spark", purpose="onnxmltools' SparkML converter")
        from onnxmltools.convert.common.data_types import FloatTensorType

        initial = [(s.name, FloatTensorType([None, 1])) for s in inputs]
        try:
            onx = onnxmltools.convert_sparkml(
                loaded.model, "spark-pipeline", initial, target_opset=options.opset, spark_session=loaded.details["spark"]
            )
        except Exception as exc:
            raise ExportError(
                f"onnxmltools' SparkML converter (alpha) cannot convert this pipeline "
                f"({' → '.join(loaded.details['stages'])}): {type(exc).__name__}: {str(exc)[:300]}",
                hint="it converts, among others: VectorAssembler, StandardScaler, MinMaxScaler, StringIndexer, "
                "OneHotEncoder, Bucketizer, LogisticRegression, LinearRegression, DecisionTree*, "
                "RandomForest*, GBT*, NaiveBayes",
            ) from None
        notes = []
        fixed = _softmax_for_multinomial(onx, loaded.model)
        if fixed is None:
            notes.append(
                "the pipeline has a multinomial LogisticRegression, but its ONNX nodes could not be matched to its "
                "stages: its probabilities keep the converter's logistic post-transform (verify compares them with Spark's)"
            )
        elif fixed:
            notes.append(
                f"{fixed} multinomial LogisticRegression stage(s): probabilities set to softmax, as Spark computes "
                "them (onnxmltools writes a logistic post-transform)"
            )
        name_batch_axis(onx)
        path.write_bytes(onx.SerializeToString())
        return ExportResult(exporter="onnxmltools", attempts=[{"exporter": "onnxmltools", "ok": True}], notes=notes)

    def run(self, loaded: LoadedModel, feeds: dict[str, np.ndarray], output_names: list[str]) -> dict[str, np.ndarray]:
        spark = loaded.details["spark"]
        columns = list(feeds)
        rows = [tuple(float(feeds[c][i].ravel()[0]) for c in columns) for i in range(len(next(iter(feeds.values()))))]
        frame = spark.createDataFrame(rows, columns)
        result = loaded.model.transform(frame)
        missing = [n for n in output_names if n not in result.columns]
        if missing:
            raise ExportError(f"the Spark pipeline has no column {', '.join(missing)} to compare with")
        collected = result.select(*output_names).collect()
        out = {}
        for name in output_names:
            values = [r[name] for r in collected]
            if values and hasattr(values[0], "toArray"):
                out[name] = np.stack([v.toArray() for v in values]).astype(np.float32)
            else:
                out[name] = np.asarray(values, np.float32).reshape(len(values), -1)
        return out


def _softmax_for_multinomial(onx, model) -> int | None:
    """Give multinomial LogisticRegression nodes Spark's softmax; returns how many were fixed. The converter writes
    one LinearClassifier per LogisticRegression stage, in stage order."""
    from pyspark.ml.classification import LogisticRegressionModel

    stages = [s for s in _stages(model) if isinstance(s, LogisticRegressionModel)]
    nodes = [n for n in onx.graph.node if n.op_type == "LinearClassifier"]
    if len(stages) != len(nodes):
        return None if any(s.coefficientMatrix.numRows > 1 for s in stages) else 0
    fixed = 0
    for stage, node in zip(stages, nodes, strict=True):
        if stage.coefficientMatrix.numRows <= 1:
            continue  # binomial: Spark's sigmoid is what the converter writes
        for attr in node.attribute:
            if attr.name == "post_transform" and attr.s == b"LOGISTIC":
                attr.s = b"SOFTMAX"
                fixed += 1
    return fixed


FRONTEND = SparkFrontend()
