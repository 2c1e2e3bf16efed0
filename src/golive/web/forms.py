"""The web app's form fields, built from the same pydantic declarations as the CLI options (golive.spec):
one name, type, default and help text per knob, wherever it is shown.

A field's value arrives from the browser as text (or a checkbox's bool, or a list of picked choices);
``parse`` turns it into what the spec model takes, and the model validates it as it validates a job file.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from golive.errors import GoliveError, validation_problems
from golive.spec import ConvertOptions, TuneOptions, VerifyOptions

__all__ = ["CONVERT_FIELDS", "TUNE_FIELDS", "VERIFY_FIELDS", "Field", "parse_section"]

Kind = Literal["choice", "bool", "int", "float", "text", "lines", "sizes", "size", "numbers", "multi"]


@dataclass
class Field:
    section: str
    name: str
    kind: Kind
    help: str
    default: Any
    choices: list[str] = field(default_factory=list)
    optional: bool = False
    advanced: bool = False
    placeholder: str = ""
    choice_help: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")

    @property
    def id(self) -> str:
        return f"{self.section}.{self.name}"

    def shown_default(self) -> str:
        """The default as the form shows it."""
        d = self.default
        if d is None:
            return ""
        if isinstance(d, dict):
            return "\n".join(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in d.items())
        if isinstance(d, list):
            return "\n".join(map(str, d))
        return str(d).lower() if isinstance(d, bool) else str(d)


def _kind(annotation: Any) -> tuple[Kind, list[str], bool]:
    """The form kind of a pydantic annotation, its choices, and whether None is allowed."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    optional = False
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        optional = len(rest) < len(args)
        if len(rest) > 1:  # seconds or a word (a budget of 60, or auto): typed as text, read by the spec's validator
            return "text", [], optional
        annotation = rest[0]
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return "choice", [str(a) for a in args], optional
    if annotation is bool:
        return "bool", [], optional
    if annotation is int:
        return "int", [], optional
    if annotation is float:
        return "float", [], optional
    if annotation is str:
        return "text", [], optional
    if origin is list:
        return "lines", [], optional
    if origin is dict:
        value = args[1]
        if typing.get_origin(value) is list:
            return "sizes", [], optional
        return ("size" if value is int else "numbers"), [], optional
    raise TypeError(f"no form kind for {annotation!r}")


def _fields(
    section: str,
    model: type[BaseModel],
    names: list[str],
    *,
    advanced: AbstractSet[str] = frozenset(),
    placeholders: dict[str, str] | None = None,
) -> list[Field]:
    out = []
    for name in names:
        info = model.model_fields[name]
        kind, choices, optional = _kind(info.annotation)
        default = info.get_default(call_default_factory=True)
        out.append(
            Field(
                section,
                name,
                kind,
                info.description or "",
                default,
                choices,
                optional,
                name in advanced,
                (placeholders or {}).get(name, ""),
            )
        )
    return out


CONVERT_FIELDS = _fields(
    "convert",
    ConvertOptions,
    [
        "framework",
        "task",
        "cache",
        "inputs",
        "dynamic",
        "output_names",
        "int_ranges",
        "exporter",
        "opset",
        "signature",
        "constant_folding",
        "zipmap",
        "verify",
        "custom_ops",
    ],
    advanced={
        "exporter",
        "opset",
        "signature",
        "constant_folding",
        "zipmap",
        "custom_ops",
        "int_ranges",
        "output_names",
        "cache",
    },
    placeholders={
        "inputs": "x:float32[batch,1,28,28]",
        "dynamic": "input_ids:0=batch,1=sequence",
        "int_ranges": "input_ids=0:30522",
        "custom_ops": "onnxruntime_extensions, or a path under an allowed root",
    },
)
VERIFY_FIELDS = _fields(
    "verify",
    VerifyOptions,
    ["dim_sizes", "rtol", "atol", "batches", "seed"],
    advanced={"rtol", "atol", "batches", "seed"},
    placeholders={"dim_sizes": "batch=1,7"},
)
TUNE_FIELDS = _fields(
    "tune",
    TuneOptions,
    ["budget", "objective", "providers", "transforms", "metrics", "dim_sizes", "fixed_shape", "concurrency", "max_batch", "seed"],
    advanced={"concurrency", "max_batch", "seed"},
    placeholders={"dim_sizes": "batch=1\nsequence=128", "providers": "cpu"},
)


def _transform_choices() -> None:
    from golive.frontends.hf_tasks import TASKS
    from golive.optimize import TRANSFORMS

    for f in CONVERT_FIELDS:
        if f.name == "task":  # the tasks golive knows: a choice, guessed from config.json when left empty
            f.kind = "choice"
            f.choices = list(TASKS)
            f.choice_help = dict(TASKS)
    for f in TUNE_FIELDS:
        if f.name == "transforms":
            f.kind = "multi"
            f.choices = list(TRANSFORMS)
            f.choice_help = {name: t.help for name, t in TRANSFORMS.items()}


_transform_choices()


def _pairs(text: str | list[Any], what: str) -> list[tuple[str, str]]:
    pairs = []
    for line in _lines(text):
        key, eq, value = line.partition("=")
        if not eq or not key.strip():
            raise GoliveError(f"cannot read {what} {line!r}", hint="write one NAME=VALUE per line")
        pairs.append((key.strip(), value.strip()))
    return pairs


def _lines(text: Any) -> list[str]:
    if isinstance(text, list):
        return [str(t).strip() for t in text if str(t).strip()]
    return [line.strip() for line in str(text or "").splitlines() if line.strip()]


def parse_value(f: Field, raw: Any) -> Any:
    """The value of one field from what the browser sent; ``...`` when left empty (the default applies)."""
    label = f"{f.section} {f.label}"
    if f.kind == "bool":
        return bool(raw) if not isinstance(raw, str) else raw.lower() in ("1", "true", "on", "yes")
    if f.kind == "multi":
        picked = _lines(raw)
        unknown = sorted(set(picked) - set(f.choices))
        if unknown:
            raise GoliveError(f"unknown {label}: {', '.join(unknown)}", hint="pick from: " + ", ".join(f.choices))
        return picked or ...
    text = "" if raw is None else raw if isinstance(raw, (str, list)) else str(raw)
    if isinstance(text, str) and not text.strip():
        return ...
    try:
        if f.kind in ("int", "float"):
            return (int if f.kind == "int" else float)(str(text).strip())
        if f.kind in ("text", "choice"):
            return str(text).strip()
        if f.kind == "lines":
            items = _lines(text)
            return (
                items if f.name in ("inputs", "dynamic") else [p.strip() for line in items for p in line.split(",") if p.strip()]
            )
        if f.kind == "sizes":
            return {k: [int(x) for x in v.split(",") if x.strip()] for k, v in _pairs(text, label)}
        if f.kind == "size":
            return {k: int(v) for k, v in _pairs(text, label)}
        if f.kind == "numbers":
            return {k: float(v) for k, v in _pairs(text, label)}
    except ValueError:
        raise GoliveError(
            f"cannot read {label} {str(text).strip()!r}",
            hint=f"expected {'a number' if f.kind in ('int', 'float') else 'NAME=NUMBER lines'}: {f.help}",
        ) from None
    raise AssertionError(f.kind)


def parse_section(fields: list[Field], model: type[BaseModel], values: dict[str, Any], base: dict[str, Any] | None = None):
    """Validate a section of the form into ``model`` (fields left empty keep their default, or ``base``'s)."""
    known = {f.name: f for f in fields}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise GoliveError(f"unknown {model.__name__} field(s): {', '.join(unknown)}")
    data = dict(base or {})
    for name, raw in values.items():
        value = parse_value(known[name], raw)
        if value is not ... and known[name].kind == "numbers":
            data[name] = {**known[name].default, **value}  # each metric given replaces that metric's default
        elif value is not ...:
            data[name] = value
        elif known[name].kind == "multi":
            data.pop(name, None)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise GoliveError(f"invalid {fields[0].section} settings: {validation_problems(exc, empty=model.__name__)}") from None
