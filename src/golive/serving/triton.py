"""golive export-triton: a Triton model repository carrying the tuned session settings.

REPO/NAME/1/model.onnx (and its external data) + REPO/NAME/config.pbtxt for Triton's onnxruntime backend:
inputs and outputs, batching (max_batch_size, dynamic_batching), and the tuned intra/inter-op threads,
execution mode, graph optimization level, memory arena and pattern as the backend's parameters. A tuned
session that leaves out one of ONNX Runtime's optimizers (which Triton cannot express) is exported as the graph
optimized ahead of time, loaded with optimizations off.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from golive._io import folder_in_place
from golive.errors import GoliveError
from golive.providers import CPU
from golive.rundir import SESSION_RECORD, best_folder, parts_of, tuned_record
from golive.runtime import make_session
from golive.serving.grpc_service import triton_config
from golive.serving.model import ServedModel

__all__ = ["export_triton", "export_triton_parts"]

# Triton's onnxruntime backend: optimization.graph.level -1 basic, 1 extended, 2 disabled; unset: all
_LEVELS = {"basic": -1, "extended": 1, "disable": 2}


def export_triton_parts(
    tune_dir: str | Path, repo: str | Path, *, name: str | None = None, max_batch: int = 32, max_delay_ms: float = 0.0
) -> list[Path]:
    """``export_triton``; a model tuned as parts goes in as one Triton model per part, named NAME-PART."""

    parts = parts_of(Path(tune_dir))
    if not parts:
        return [export_triton(tune_dir, repo, name=name, max_batch=max_batch, max_delay_ms=max_delay_ms)]
    base = name or Path(tune_dir).name
    return [
        export_triton(Path(tune_dir) / p, repo, name=f"{base}-{p}", max_batch=max_batch, max_delay_ms=max_delay_ms) for p in parts
    ]


def export_triton(
    tune_dir: str | Path, repo: str | Path, *, name: str | None = None, max_batch: int = 32, max_delay_ms: float = 0.0
) -> Path:
    """Write the model repository; returns the model's folder in it."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    if not (best_folder(tune_dir) / SESSION_RECORD).is_file():
        raise GoliveError(
            f"{tune_dir} is not a finished tune folder (no best/session.json)", hint="export the output folder of golive tune"
        )
    best, record = tuned_record(tune_dir)
    if record.session.custom_ops:
        raise GoliveError(
            "the tuned model needs custom operators, which Triton's onnxruntime backend loads from its own configuration",
            hint="serve it with golive serve, or add the op library to Triton by hand",
        )
    model_name = name or (best.parent.name if best.name == "best" else best.name)
    # the inputs and outputs come from a CPU session of the same model: the tuned provider need not be on this
    # machine, only on Triton's (the accelerator below asks for it there)
    on_cpu = record.session.model_copy(
        update={"providers": [CPU], "provider_options": [], "device_type": None, "device_properties": {}, "cpu_fallback": True}
    )
    served = ServedModel(
        model_name,
        make_session(best / "model.onnx", on_cpu),
        source=str(tune_dir),
        max_batch=max_batch,
        max_delay_ms=max_delay_ms,
    )
    config = triton_config(served, model_config_pb2)
    served.close()
    config.parameters.clear()
    s = record.session
    params = {
        "intra_op_thread_count": s.intra_op_num_threads,
        "inter_op_thread_count": s.inter_op_num_threads,
        "execution_mode": 1 if s.execution_mode == "parallel" else 0,
        "enable_mem_arena": int(s.enable_cpu_mem_arena),
        "enable_mem_pattern": int(s.enable_mem_pattern),
    }
    for key, value in params.items():
        config.parameters[key].string_value = str(value)
    # Triton's backend cannot leave out one optimizer (a tuned model may have undone a fusion that measured slower):
    # such a model goes in with ONNX Runtime's optimizations applied ahead of time, here, and loads with them off.
    ahead = bool(s.disabled_optimizers) and s.graph_optimization_level != "disable"
    level = "disable" if ahead else s.graph_optimization_level
    if level in _LEVELS:
        config.optimization.graph.level = _LEVELS[level]
    gpu = _accelerate(config, s)
    kind = model_config_pb2.ModelInstanceGroup.KIND_GPU if gpu else model_config_pb2.ModelInstanceGroup.KIND_CPU
    config.instance_group.add(kind=kind, count=1)
    repo = Path(repo)
    folder = repo / model_name
    if folder.exists():
        raise GoliveError(f"{folder} exists already", hint="choose another -o REPO or --name, or remove it")
    with folder_in_place(folder) as partial:
        (partial / "1").mkdir()
        if ahead:
            make_session(best / "model.onnx", on_cpu, optimized_model_path=partial / "1" / "model.onnx")
        else:
            for f in best.iterdir():
                if f.name == "model.onnx" or f.name in _external(best / "model.onnx"):
                    shutil.copy2(f, partial / "1" / f.name)
        (partial / "config.pbtxt").write_text(text_format.MessageToString(config))
    return folder


def _accelerate(config: Any, session: Any) -> bool:
    """Triton's execution accelerator for the tuned provider (its onnxruntime backend's names); True for a GPU one.
    OpenVINO's accelerator takes no properties in Triton: its precision and threads are OpenVINO's defaults there."""
    provider = session.providers[0]
    options = {str(k): str(v) for k, v in (session.provider_options[0] if session.provider_options else {}).items()}
    accelerators = config.optimization.execution_accelerators
    if provider == "OpenVINOExecutionProvider":
        accelerators.cpu_execution_accelerator.add(name="openvino")
        return False
    if provider == "TensorrtExecutionProvider":
        trt = accelerators.gpu_execution_accelerator.add(name="tensorrt")
        if options.pop("trt_fp16_enable", "").lower() == "true":
            trt.parameters["precision_mode"] = "FP16"
        for key, value in options.items():
            trt.parameters[key] = value
        return True
    if provider == "CUDAExecutionProvider":
        cuda = accelerators.gpu_execution_accelerator.add(name="cuda")
        for key, value in options.items():
            cuda.parameters[key] = value
        return True
    return False


def _external(model: Path) -> set[str]:
    import onnx

    proto = onnx.load(str(model), load_external_data=False)
    return {e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"}
