"""Run folders: their typed records (paths relative to the folder), lock, staging and commit.

A convert run folder holds ``job.json`` (the JobSpec as run), ``events.jsonl``, ``model.onnx`` (+ external
data), ``custom_ops/`` (copied in), ``golive.json`` (:class:`ConvertRecord`) and, after ``golive verify``,
``verify.json`` (:class:`VerifyRecord`). A tune folder holds ``tune.json`` (:class:`TuneRecord`),
``report.json``, ``report.html``, ``inputs.npz`` and ``best/`` (``model.onnx``, ``session.json``
(:class:`SessionRecord`), ``custom_ops/``): ``best/`` alone is enough to load the tuned session.

A step builds its output in a ``.STEP.partial-*`` folder inside the run folder and commits it by moving
the files in and writing its record last: a folder without its record is not finished. While a step runs
it holds the folder's lock (``.golive.lock``), so partial folders found by the next holder are stale ones
from a killed run and are swept.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import itertools
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, TypeVar, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from golive._imports import is_import_path, split_file_attr
from golive._io import sync_dir, sync_tree, write_json
from golive._resolve import resolve_source
from golive.errors import DataError, GoliveError, OutputDirError, RunFolderBusyError, SourceNotFoundError, validation_problems
from golive.frontends.hf_tasks import GenerationSpec
from golive.providers import Placement
from golive.runtime import EXTENSIONS, SessionConfig, is_library
from golive.spec import ConvertOptions, TuneOptions, VerifyOptions, map_paths
from golive.tensors import TensorSpec
from golive.verification import VerifyReport

fcntl: ModuleType | None  # None where there is no fcntl (Windows)
try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no folder lock
    fcntl = None

__all__ = [
    "CONVERT_RECORD",
    "JOB_FILE",
    "LOCK_FILE",
    "RECORD_VERSION",
    "SESSION_RECORD",
    "TUNE_RECORD",
    "VERIFY_RECORD",
    "ConvertRecord",
    "RunFolder",
    "SessionRecord",
    "Target",
    "TuneRecord",
    "VerifyRecord",
    "best_folder",
    "carry_custom_ops",
    "check_output_dir",
    "copy_model",
    "fingerprint",
    "finished_tune",
    "from_record",
    "generation_of",
    "model_files",
    "now",
    "options_from_record",
    "parts_of",
    "paths_from_record",
    "paths_to_record",
    "read_convert_record",
    "read_record",
    "resolve_target",
    "source_for",
    "step_key",
    "to_record",
    "tuned_record",
    "write_record",
]

log = logging.getLogger(__name__)

RECORD_VERSION = 1
CONVERT_RECORD, VERIFY_RECORD, TUNE_RECORD, SESSION_RECORD = "golive.json", "verify.json", "tune.json", "session.json"
JOB_FILE, LOCK_FILE = "job.json", ".golive.lock"
CUSTOM_OPS_DIR = "custom_ops"
_OWN = {CONVERT_RECORD, JOB_FILE, TUNE_RECORD, LOCK_FILE, "events.jsonl"}  # a folder holding one of them is golive's
_BOOKKEEPING = {JOB_FILE, LOCK_FILE, "events.jsonl"}


def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------- records


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format_version: int = RECORD_VERSION
    golive_version: str = "dev"
    created: str = Field(default_factory=now)


class ConvertRecord(_Record):
    """golive.json: what convert did, from what, with which options and versions. Paths relative to the folder."""

    source: str = Field(description="the source as given; a path is relative to the run folder")
    framework: str
    source_kind: str
    exporter: str
    exporter_attempts: list[dict[str, Any]] = Field(default_factory=list)
    fallback_reason: str | None = None
    notes: list[str] = Field(default_factory=list)
    options: ConvertOptions
    verify_options: VerifyOptions = Field(default_factory=VerifyOptions)
    opset: dict[str, int]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    export_sizes: dict[str, int] = Field(default_factory=dict)
    input_structure: dict[str, Any] | None = Field(
        default=None,
        description=(
            "nested or keyword-only inputs: how the ONNX inputs (leaves, named by path: hc.0) make up forward()'s arguments"
        ),
    )
    output_structure: Any = Field(
        default=None, description="nested or dict outputs: where each ONNX output lies in what forward() returns"
    )
    custom_ops: list[str] = Field(
        default_factory=list, description="registrations every session needs; files copied into custom_ops/"
    )
    external_data: list[str] = Field(default_factory=list)
    versions: dict[str, str] = Field(default_factory=dict)
    verification: VerifyReport | None = None
    spec_key: str = Field(default="", description="hash of the step's spec and input files: an unchanged key skips the step")
    task: str | None = Field(default=None, description="a Hugging Face folder's task (feature-extraction, text-generation...)")
    task_reason: str | None = Field(default=None, description="how golive told the task (--task, or what config.json says)")
    parts: list[str] = Field(
        default_factory=list,
        description="a model exported as several (an encoder and a decoder): each part is a convert folder of its own, "
        "in the subfolder of its name; this folder holds no model.onnx",
    )
    part: str | None = Field(default=None, description="this folder is that part of the model in the folder above")
    generation: GenerationSpec | None = Field(default=None, description="how the exported model(s) make a generate loop")
    tune_sizes: dict[str, int] = Field(
        default_factory=dict, description="the sizes of the model's usual call (a decode step), which tune measures at"
    )

    @property
    def multipart(self) -> bool:
        return bool(self.parts)


class VerifyRecord(_Record):
    """verify.json: a later ``golive verify`` of a run folder."""

    options: VerifyOptions
    source: str | None = Field(default=None, description="the source verified against, when not the recorded one")
    model_fingerprint: str | None = None
    report: VerifyReport


class TuneRecord(_Record):
    """tune.json: the tune step's own spec, written last: a tune folder without it is not finished."""

    target: str = Field(description="the convert folder or .onnx file tuned, relative to this folder")
    target_fingerprint: str | None = None
    options: TuneOptions
    verify_options: VerifyOptions | None = None
    spec_key: str = ""
    elapsed_s: float = 0.0
    best: str = ""
    speedup: float = 0.0
    parts: list[str] = Field(
        default_factory=list, description="a model converted as parts: each part tuned in the subfolder of its name"
    )
    generation: GenerationSpec | None = Field(
        default=None, description="a generative model: how its tuned parts make a generate loop (golive.generate)"
    )


class SessionRecord(_Record):
    """best/session.json: everything needed to load the tuned model, with custom-op paths relative to best/."""

    session: SessionConfig  # the provider, its device and options, and the session settings
    transforms: list[str] = Field(default_factory=list)
    candidate: str = ""
    placement: Placement | None = None  # which provider ran which nodes when it was measured
    environment: dict[str, Any] = Field(default_factory=dict)
    figures: dict[str, Any] = Field(default_factory=dict)
    inputs: list[TensorSpec] = Field(default_factory=list)
    outputs: list[TensorSpec] = Field(default_factory=list)


R = TypeVar("R", bound=BaseModel)


def read_record(path: Path, kind: type[R]) -> R:
    """A record from disk, or a DataError naming the file and what is wrong with it."""
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"{path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    version = raw.get("format_version", RECORD_VERSION) if isinstance(raw, dict) else None
    if isinstance(version, int) and version > RECORD_VERSION:
        raise DataError(
            f"{path} was written by a newer golive (record format {version}; this golive reads {RECORD_VERSION})",
            hint="upgrade golive: pip install -U golive",
        )
    try:
        return kind.model_validate(raw)
    except ValidationError as exc:
        raise DataError(
            f"{path} is not a valid {kind.__name__}: {validation_problems(exc, limit=3)}",
            hint="it may come from an older golive; run the step again to rewrite it",
        ) from None


def write_record(path: Path, record: BaseModel) -> None:

    write_json(Path(path), record.model_dump_json(indent=2))


# ---------------------------------------------------------------- relative paths


@overload
def to_record(value: str, folder: Path) -> str: ...
@overload
def to_record(value: None, folder: Path) -> None: ...
def to_record(value: str | None, folder: Path) -> str | None:
    """A path as the run folder records it: relative to ``folder`` (``pkg:`` and module names as given)."""
    if value is None or value.startswith("pkg:"):
        return value
    head, attr = split_file_attr(value)
    path = Path(head)
    if not (path.is_absolute() or path.exists()):
        return value  # a module name, or a path that does not exist (reported where it is used)
    rel = Path(os.path.relpath(path.absolute(), Path(folder).absolute())).as_posix()
    if "/" not in rel and rel not in (".", ".."):
        rel = "./" + rel  # a recorded path always has a '/' (or is . or ..): a module name never does
    return rel + attr


@overload
def from_record(value: str, folder: Path) -> str: ...
@overload
def from_record(value: None, folder: Path) -> None: ...
def from_record(value: str | None, folder: Path) -> str | None:
    """The path a record names, made absolute against ``folder`` (``pkg:`` and module names as given)."""
    if value is None or value.startswith("pkg:"):
        return value
    head, attr = split_file_attr(value)
    path = Path(head)
    if path.is_absolute() or not ("/" in head or head.endswith(".py") or head in (".", "..")):
        return value  # absolute already, or a module name (pkg.mod, pkg.mod:Net)
    return os.path.normpath(Path(folder).absolute() / path) + attr


# ---------------------------------------------------------------- reading a run folder back


def read_convert_record(folder: Path, verb: str) -> ConvertRecord:
    """golive.json of a convert output folder, or a clear error when ``folder`` is not one (or not finished)."""
    if not (folder / CONVERT_RECORD).is_file():
        if (folder / "model.onnx").exists() or (folder / "events.jsonl").exists():
            raise DataError(
                f"{folder} holds no finished conversion (no golive.json): the convert step did not complete",
                hint="run the conversion again (golive run JOB or golive convert)",
            )
        raise DataError(
            f"{folder} is not a golive convert output (it has no golive.json)",
            hint=f"{verb} a folder written by golive convert, or an .onnx file",
        )
    return read_record(folder / CONVERT_RECORD, ConvertRecord)


def options_from_record(record: ConvertRecord, folder: Path) -> ConvertOptions:
    """The convert options with their recorded paths made absolute against the run folder."""
    absolute = map_paths(record.options, lambda p: from_record(p, folder))
    return absolute.model_copy(update={"custom_ops": [from_record(c, folder) for c in record.custom_ops]})


def source_for(record: ConvertRecord, folder: Path, override: str | None) -> str:
    """The source a convert folder came from (to verify against, time or export again): the override, or the
    recorded one, which must still be there."""

    if override:
        return resolve_source(override)
    source = from_record(record.source, folder)
    assert source is not None
    if source.startswith("pkg:"):
        return resolve_source(source)
    path = split_file_attr(source)[0]
    if (path.endswith(".py") or not is_import_path(source)) and not Path(path).exists():
        raise SourceNotFoundError(
            f"the source model is not here: golive.json records {record.source} (relative to {folder}), which would be {path}",
            hint="the run folder travelled without it: pass the source with --source PATH (golive.verify(..., source=PATH))",
        )
    return source


def finished_tune(out: Path) -> TuneRecord | None:
    """tune.json of a complete tune folder (tune.json, report.json, best/session.json and best/model.onnx; for a
    model converted as parts, tune.json and each part's complete tune folder), or None: the one rule for "this tune
    folder is finished"."""
    if not (out / TUNE_RECORD).is_file():
        return None
    try:
        record = read_record(out / TUNE_RECORD, TuneRecord)
    except GoliveError:
        return None
    if record.parts:
        return record if all(finished_tune(out / name) is not None for name in record.parts) else None
    if not all((out / name).exists() for name in ("report.json", f"best/{SESSION_RECORD}", "best/model.onnx")):
        return None
    return record


def best_folder(path: str | Path) -> Path:
    """``best/`` of a finished tune folder, or the folder itself when it is a copied ``best/``."""
    path = Path(path)
    if (path / "best").is_dir() or (path / "events.jsonl").exists() or (path / TUNE_RECORD).exists():  # a tune folder
        record = finished_tune(path)
        if record is not None and record.parts:
            raise GoliveError(
                f"{path} holds a model tuned as {len(record.parts)} parts ({', '.join(record.parts)}): each has its best",
                hint=f"load one part ({path / record.parts[0]}), or all of them with golive.load_sessions({str(path)!r})",
            )
        if record is None:
            raise GoliveError(
                f"{path} holds no finished tuning result: the tune step did not complete "
                f"(tune.json, report.json and best/ are written last)",
                hint="run it again: golive tune MODEL -o DIR, or golive jobs retry ID",
            )
        return path / "best"
    if (path / SESSION_RECORD).is_file():
        return path
    raise GoliveError(f"{path} holds no tuning result (no best/session.json)", hint="golive tune MODEL -o DIR")


def tuned_record(tune_dir: str | Path) -> tuple[Path, SessionRecord]:
    """(best/, its SessionRecord with the custom-op paths made absolute): what a tuned session is built from."""
    best = best_folder(tune_dir)
    record = read_record(best / SESSION_RECORD, SessionRecord)
    record.session = record.session.model_copy(update={"custom_ops": [from_record(c, best) for c in record.session.custom_ops]})
    return best, record


@dataclass(frozen=True)
class Target:
    """What a path a user gives names: an .onnx file, a convert folder, a tune folder, or a copied best/ folder."""

    kind: Literal["onnx", "convert", "tune", "best"]
    path: Path

    @property
    def model(self) -> Path:
        """The model file it stands for (a tune folder: its best)."""
        if self.kind == "onnx":
            return self.path
        return self.path / "best" / "model.onnx" if self.kind == "tune" else self.path / "model.onnx"

    @property
    def name(self) -> str:
        """A name for it: the file's stem, the folder's name (a copied best/: its tune folder's)."""
        if self.kind == "onnx":
            return self.path.stem
        return self.path.parent.name if self.kind == "best" and self.path.name == "best" else self.path.name


def resolve_target(path: str | Path, verb: str, *, allowed: tuple[str, ...] = ("onnx", "convert", "tune", "best")) -> Target:
    """The one rule for what a given path is, or a GoliveError saying what was expected (``verb``: what the caller
    does with it, for the message)."""
    path = Path(path)
    kinds = {"onnx": "an .onnx file", "convert": "a convert folder", "tune": "a tune folder", "best": "a tune folder's best/"}
    expected = ", ".join(kinds[k] for k in allowed)
    if not path.exists():
        raise GoliveError(f"{path} does not exist", hint=f"{verb} {expected}")
    target: Target | None = None
    if path.is_file():
        target = Target("onnx", path) if path.suffix == ".onnx" else None
    elif (path / "best").is_dir() or (path / TUNE_RECORD).exists():
        target = Target("tune", path)
    elif (path / SESSION_RECORD).is_file():
        target = Target("best", path)
    elif (path / CONVERT_RECORD).is_file() or (path / "model.onnx").exists():
        target = Target("convert", path)
    if target is None or target.kind not in allowed:
        what = f"is {kinds[target.kind]}" if target else "is none of these"
        raise GoliveError(
            f"{path} {what}; golive can {verb} {expected}", hint=f"golive {verb} a folder golive wrote, or an .onnx file"
        )
    return target


def parts_of(folder: Path) -> list[str]:
    """The parts of a convert or tune folder of a model converted as parts (encoder, decoder), else [] (also for
    anything that is not such a folder)."""
    folder = Path(folder)
    try:
        if (folder / TUNE_RECORD).is_file():
            return read_record(folder / TUNE_RECORD, TuneRecord).parts
        if (folder / CONVERT_RECORD).is_file():
            return read_record(folder / CONVERT_RECORD, ConvertRecord).parts
    except GoliveError:
        return []
    return []


@dataclass(frozen=True)
class ConvertTimes:
    """What a convert run took, read from its events: loading the source model, and exporting this folder's model
    (a part's own export, for a model converted as parts). None where the events do not say."""

    load_s: float | None = None
    export_s: float | None = None


def convert_times(folder: str | Path) -> ConvertTimes:
    """The times of the convert run that made ``folder``, from its events.jsonl (a part's are in the folder above)."""
    from golive.events import read_events

    folder = Path(folder)
    try:
        part = read_record(folder / CONVERT_RECORD, ConvertRecord).part
    except GoliveError:
        return ConvertTimes()
    events, _ = read_events((folder.parent if part else folder) / "events.jsonl")
    load = export = None
    for event, after in itertools.pairwise(events):
        took = max(0.0, after.ts - event.ts)
        if event.step == "load" and load is None:
            load = took
        elif event.step == "export" and export is None and (part is None or f"exporting {part} " in event.message):
            export = took
    return ConvertTimes(load_s=load, export_s=export)


def generation_of(path: Path) -> GenerationSpec:
    """How a generative model's parts make a generate loop, from its convert folder or its tune folder (which carries
    it, so it generates without the convert folder), or a DataError saying why it cannot generate."""
    path = Path(path)
    if (path / TUNE_RECORD).is_file():
        tune = finished_tune(path)
        if tune is None:
            raise DataError(f"{path} holds no finished tuning result", hint="run golive tune again")
        if tune.generation is not None:
            return tune.generation
        path = Path(from_record(tune.target, path))
    if not (path / CONVERT_RECORD).is_file():
        raise DataError(
            f"{path} is not a golive convert folder (no golive.json)",
            hint="generate from what golive convert (or golive tune) wrote for a generative model",
        )
    record = read_record(path / CONVERT_RECORD, ConvertRecord)
    if record.generation is None:
        raise DataError(
            f"{path} holds a model that does not generate (task {record.task or 'unknown'})",
            hint="convert a text-generation or text2text-generation model with its cache (without --no-cache)",
        )
    return record.generation


def carry_custom_ops(entries: Iterable[str], folder: Path) -> list[str]:
    """Copy custom-op libraries and .py modules into ``folder/custom_ops`` and return their record form."""

    recorded = []
    for entry in entries:
        if entry == EXTENSIONS or not (is_library(entry) or entry.endswith(".py")):
            recorded.append(entry)  # a module name: imported from the environment, as a package would be
            continue
        src = Path(entry)
        dest = Path(folder) / CUSTOM_OPS_DIR / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.resolve() != dest.resolve():
            shutil.copy2(src, dest)
        recorded.append(f"{CUSTOM_OPS_DIR}/{src.name}")
    return recorded


OptionsT = TypeVar("OptionsT", VerifyOptions, TuneOptions)


def paths_to_record(options: OptionsT, folder: Path) -> OptionsT:
    """Verify or tune options as a record keeps them: their paths relative to ``folder``."""
    return map_paths(options, lambda p: to_record(p, folder))


def paths_from_record(options: OptionsT, folder: Path) -> OptionsT:
    """Recorded verify or tune options with their paths made absolute against ``folder`` again."""
    return map_paths(options, lambda p: from_record(p, folder))


# ---------------------------------------------------------------- fingerprints


def fingerprint(path: str | Path | None) -> str | None:
    """sha256 of a file's bytes, or of a folder's files (names and bytes); None when it does not exist."""
    if path is None:
        return None
    path = Path(path)
    if not path.exists():
        return None
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for f in files:
        if f != path:
            digest.update(f.relative_to(path).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def model_files(model: str | Path) -> list[Path]:
    """An ONNX model file and the external data files it names (what its bytes are)."""
    import onnx

    model = Path(model)
    files = [model]
    try:
        proto = onnx.load(str(model), load_external_data=False)
    except Exception:  # not readable as ONNX: its own bytes are all there is
        return files
    locations = {
        entry.value
        for t in proto.graph.initializer
        if t.data_location == onnx.TensorProto.EXTERNAL
        for entry in t.external_data
        if entry.key == "location"
    }
    return files + [model.parent / loc for loc in sorted(locations)]


def copy_model(src: Path, dst_dir: Path) -> Path:
    """Copy a model into ``dst_dir`` as model.onnx, with the external data files it names (same names)."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    model, *data = model_files(src)
    shutil.copy2(model, dst_dir / "model.onnx")
    for f in data:  # at the location the model names, relative to it
        target = dst_dir / f.relative_to(src.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
    return dst_dir / "model.onnx"


def step_key(spec: Any, files: Iterable[str | Path | None] = ()) -> str:
    """A step's identity: its spec (as recorded) and the bytes of the files it reads."""
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode())
    for f in files:
        digest.update(b"\0" + (fingerprint(f) or "-").encode())
    return digest.hexdigest()[:32]


# ---------------------------------------------------------------- the folder: lock, stage, commit


def check_output_dir(out: Path) -> None:
    """Fail early, before any work, when ``out`` cannot become a golive output folder."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"output path {out} is a file, not a folder", hint="choose another -o/--output folder")
    if out.is_dir() and any(out.iterdir()) and not any((out / name).exists() for name in _OWN):
        raise OutputDirError(
            f"output folder {out} already holds files that golive did not write",
            hint="choose a new or empty folder; golive replaces only its own earlier output",
        )
    for p in [out.parent, *out.parent.parents]:
        if p.exists():
            if not p.is_dir():
                raise OutputDirError(f"cannot create {out}: {p} is a file", hint="choose another -o/--output folder")
            if not os.access(p, os.W_OK | os.X_OK):
                raise OutputDirError(f"cannot write to {p}", hint="choose a folder you can write to")
            break


class RunFolder:
    """A run folder held by this process: stage a step's output, then commit it with its record last."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path).absolute()
        self.swept: list[str] = []
        self._stages: list[Path] = []

    @classmethod
    @contextlib.contextmanager
    def claim(cls, path: str | Path, *, keep_failed: bool = False) -> Iterator[RunFolder]:
        """Create (or reuse) the folder and hold its lock; on failure remove this run's partial output, and
        the folder itself when this run created it and it holds nothing but bookkeeping."""
        folder = cls(Path(path))
        check_output_dir(folder.path)
        created = not folder.path.exists() or not any(folder.path.iterdir())
        try:
            folder.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputDirError(
                f"cannot create the output folder {folder.path}: {exc.strerror or exc}", hint="choose a folder you can write to"
            ) from exc
        lock = folder._lock()
        try:
            folder._sweep()
            yield folder
        except BaseException:
            for stage in folder._stages:
                shutil.rmtree(stage, ignore_errors=True)
            if created and not keep_failed and {p.name for p in folder.path.iterdir()} <= _BOOKKEEPING:
                shutil.rmtree(folder.path, ignore_errors=True)
            raise
        finally:
            if lock is not None:
                lock.close()

    def _lock(self):
        if fcntl is None:
            return None
        f = open(self.path / LOCK_FILE, "a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip()
            f.close()
            raise RunFolderBusyError(
                f"{self.path} is being written by another golive step ({holder or 'another process'})",
                hint="wait for it to finish, or cancel its job (golive jobs cancel ID)",
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}\n")
        f.flush()
        return f

    def _sweep(self) -> None:
        """Remove partial folders and temporary files left by a killed run (their owner held this lock; now
        this process does). Without a lock (no fcntl) nothing is swept: it could be another process's."""
        if fcntl is None:
            return
        for p in self.path.iterdir():
            if p.name.startswith(".") and any(mark in p.name for mark in (".partial-", ".old-", ".tmp-")):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                self.swept.append(p.name)
        if self.swept:
            log.info("swept %d stale partial folder(s) from a killed run in %s", len(self.swept), self.path)

    def stage(self, step: str) -> Path:
        stage = self.path / f".{step}.partial-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        stage.mkdir()
        self._stages.append(stage)
        return stage

    def commit(self, stage: Path, record_name: str, record: BaseModel, replaces: Iterable[str] = ()) -> None:
        """Move the staged files in, replacing ``replaces`` (and the old record), then write the record."""

        sync_tree(stage)  # the files are on disk before any record says they are there
        (self.path / record_name).unlink(missing_ok=True)  # from here until the end the folder is not finished
        for name in {*replaces, *(p.name for p in stage.iterdir())}:
            _remove(self.path / name)
        for item in stage.iterdir():
            os.replace(item, self.path / item.name)
        sync_dir(self.path)
        write_record(self.path / record_name, record)
        shutil.rmtree(stage, ignore_errors=True)
        self._stages.remove(stage)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:6]}")
        os.replace(path, old)  # out of the way in one step; deleting a big folder takes a while
        shutil.rmtree(old, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()
