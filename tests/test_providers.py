"""Execution providers: ONNX Runtime's device API, plugin packages (OpenVINO), the placement audit, and a tuned
provider followed by everything that loads it.

OpenVINO's plugin lists devices on Intel CPUs, GPUs and NPUs only. The onnxruntime-openvino build has the provider
built in and runs on any x86-64 CPU: ``make install-dev`` puts it in .venv/ort-openvino, and
test_openvino_in_the_onnxruntime_openvino_build runs the OpenVINO cases of this file again in a process whose
onnxruntime is that build, so they run on every x86-64 machine, Intel or not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import golive
from golive.providers import CPU, PLUGINS, placement
from golive.runtime import SessionConfig, make_session

OPENVINO = "OpenVINOExecutionProvider"


def _openvino_state() -> tuple[str, int]:
    """(plugin state, devices it lists) for this machine."""
    found = golive.devices()
    plugin = next(p for p in found.plugins if p.provider == OPENVINO)
    return plugin.state, plugin.devices


@pytest.fixture(scope="module")
def openvino():
    state, count = _openvino_state()
    return {"state": state, "devices": count}


needs_openvino = pytest.mark.skipif(
    _openvino_state()[1] == 0,
    reason="OpenVINO lists no device in this process (its plugin runs on Intel CPUs, GPUs and NPUs); "
    "test_openvino_in_the_onnxruntime_openvino_build runs this case with the onnxruntime-openvino build",
)
# The onnxruntime-openvino build beside the venv's onnxruntime (make install-dev; x86-64 Linux)
ORT_OPENVINO = Path(sys.prefix) / "ort-openvino"
OPENVINO_CASES = [
    "test_devices_lists_the_cpu_provider_and_the_openvino_plugin",
    "test_a_tiny_bert_is_tuned_across_cpu_and_openvino",
    "test_no_fallback_rejects_a_candidate_naming_the_op_openvino_does_not_take",
]


def _stub_without(tmp_path: Path, module: str) -> dict[str, str]:
    """An environment in which ``module`` cannot be imported, as on a machine without the package."""
    stub = tmp_path / "stub" / module
    stub.mkdir(parents=True)
    message = f"No module named {module!r}"
    (stub / "__init__.py").write_text(f"raise ImportError({message!r}, name={module!r})\n")
    return {**os.environ, "PYTHONPATH": str(tmp_path / "stub")}


def _matmul_relu(path: Path, k: int = 16, n: int = 8) -> Path:
    from onnx import TensorProto, helper, numpy_helper, save

    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(k, n)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), helper.make_node("Relu", ["h"], ["y"], name="relu")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", n])],
        [w],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)
    return path


@pytest.fixture(scope="module")
def tuned_relu(tmp_path_factory) -> Path:
    from conftest import relu_onnx

    root = tmp_path_factory.mktemp("providers")
    golive.tune(relu_onnx(root / "m.onnx"), root / "tuned", budget=3, transforms=[])
    return root / "tuned"


def _naming_openvino(tuned: Path, dst: Path) -> Path:
    """A copy of a tuned folder whose session.json names OpenVINO (as one tuned on an Intel machine does)."""
    import shutil

    shutil.copytree(tuned, dst)
    record = json.loads((dst / "best" / "session.json").read_text())
    record["session"].update(providers=[OPENVINO], device_type="CPU", device_properties={"INFERENCE_PRECISION_HINT": "f32"})
    (dst / "best" / "session.json").write_text(json.dumps(record))
    return dst


# ---------------------------------------------------------------- devices


def test_devices_lists_the_cpu_provider_and_the_openvino_plugin(cli, openvino):
    code, stdout, _ = cli("devices", "--json")
    assert code == 0
    found = json.loads(stdout)
    cpu = [d for d in found["devices"] if d["provider"] == CPU]
    assert cpu and cpu[0]["device_type"] == "CPU" and cpu[0]["plugin"] is None and CPU in found["providers"]
    plugin = next(p for p in found["plugins"] if p["provider"] == OPENVINO)
    assert plugin["package"] == "onnxruntime-ep-openvino" and plugin["extra"] == "openvino"
    ov = [d for d in found["devices"] if d["provider"] == OPENVINO]
    assert plugin["state"] == openvino["state"] and plugin["devices"] == len(ov)
    assert (OPENVINO in found["providers"]) == bool(ov)  # a plugin counts as available only with a device
    if ov and plugin["state"] == "registered":
        assert all(d["plugin"] == "onnxruntime-ep-openvino" for d in ov)
    if plugin["state"] == "built in":  # the onnxruntime-openvino build: the CPU listed, the plugin not used
        assert [(d["device_type"], d["plugin"], d["ep_metadata"]) for d in ov] == [("CPU", None, {"built_in": "true"})]
    code, stdout, _ = cli("devices")
    assert code == 0 and "CPUExecutionProvider" in stdout and "OpenVINOExecutionProvider" in stdout
    if plugin["state"] == "registered" and not ov:  # e.g. an AMD CPU: installed, and why it shows nothing
        assert "lists no device here" in " ".join(stdout.split()) and "Intel" in stdout
        assert "onnxruntime-openvino build" in " ".join(stdout.split())  # and where to get it for this CPU


def test_without_the_plugin_package_devices_says_what_to_install(tmp_path):
    env = _stub_without(tmp_path, PLUGINS[OPENVINO].module)
    run = subprocess.run([sys.executable, "-m", "golive", "devices"], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "not installed: pip install 'golive[openvino]'" in " ".join(run.stdout.split())


# ---------------------------------------------------------------- a session.json that names a provider not here


def test_a_tune_folder_naming_openvino_where_the_plugin_is_missing_exits_2(tuned_relu, tmp_path):
    folder = _naming_openvino(tuned_relu, tmp_path / "from-intel")
    env = _stub_without(tmp_path, PLUGINS[OPENVINO].module)
    run = subprocess.run(
        [sys.executable, "-m", "golive", "serve", str(folder), "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    message = " ".join(run.stderr.split())
    assert run.returncode == 2, run.stderr
    assert "onnxruntime-ep-openvino, which is not installed" in message and "pip install 'golive[openvino]'" in message
    script = "import golive, sys\ntry:\n    golive.load_session(sys.argv[1])\nexcept golive.GoliveError as e:\n    print(e)\n    sys.exit(2)\n"
    run = subprocess.run([sys.executable, "-c", script, str(folder)], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "golive[openvino]" in run.stdout  # nothing silently runs on CPU


def test_a_tune_folder_naming_openvino_here(tuned_relu, tmp_path, cli, openvino):
    """With the plugin installed: where OpenVINO has a device the session loads on it; where it has none (a non-Intel
    CPU) loading is exit 2 saying so."""
    folder = _naming_openvino(tuned_relu, tmp_path / "from-intel")
    if openvino["devices"]:
        session = golive.load_session(folder)
        assert session.get_providers()[0] == OPENVINO
        return
    code, _, err = cli("serve", folder, "--port", "0")
    message = " ".join(err.split())
    assert code == 2 and "lists no device on this machine" in message and "golive devices" in message


def test_tune_asked_for_a_provider_that_is_not_here_exits_2(tuned_relu, tmp_path, cli, openvino):
    code, _, err = cli("tune", tuned_relu / "best" / "model.onnx", "-o", tmp_path / "t", "--providers", "cuda")
    message = " ".join(err.split())
    assert code == 2 and "CUDAExecutionProvider is not available" in message and "onnxruntime-gpu" in message
    assert not (tmp_path / "t").exists()
    if not openvino["devices"]:
        code, _, err = cli("tune", tuned_relu / "best" / "model.onnx", "-o", tmp_path / "t", "--providers", "openvino")
        assert code == 2 and ("lists no device" in " ".join(err.split()) or "not installed" in err)


def test_export_triton_asks_for_the_openvino_accelerator(tuned_relu, tmp_path, cli):
    """Exporting needs the model's inputs and outputs, not the provider: it works on a machine without it."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    folder = _naming_openvino(tuned_relu, tmp_path / "from-intel")
    code, _, err = cli("export-triton", folder, "-o", tmp_path / "repo", "--name", "relu")
    assert code == 0, err
    config = text_format.Parse((tmp_path / "repo" / "relu" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    accelerators = config.optimization.execution_accelerators
    assert [a.name for a in accelerators.cpu_execution_accelerator] == ["openvino"]
    assert (
        not accelerators.gpu_execution_accelerator
        and config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    )


# ---------------------------------------------------------------- placement audit


def test_the_tune_report_and_session_json_say_where_the_nodes_ran(tuned_relu):
    report = json.loads((tuned_relu / "report.json").read_text())
    best = report["best"]
    assert best["placement"] == {
        "provider": CPU,
        "nodes": 1,
        "by_provider": {CPU: 1},
        "fallback": {},
    }
    assert all(c["placement"]["nodes"] == 1 for c in report["candidates"] if c["status"] == "passed")
    record = json.loads((tuned_relu / "best" / "session.json").read_text())
    assert record["placement"] == best["placement"] and record["session"]["providers"] == [CPU]
    html = (tuned_relu / "report.html").read_text()
    assert "Where the nodes ran" in html and "its one node on CPU" in html


def test_placement_counts_nodes_by_provider_and_names_the_fallback_ops(tmp_path):
    model = _matmul_relu(tmp_path / "m.onnx")
    where = placement(make_session(model, SessionConfig(), record_placement=True), CPU)
    assert where is not None and where.nodes == 2 and where.by_provider == {CPU: 2} and where.describe() == "all 2 nodes on CPU"
    # as an OpenVINO session would report a Shape and a Gather it did not take
    other = where.model_copy(
        update={"provider": OPENVINO, "nodes": 10, "by_provider": {OPENVINO: 7, CPU: 3}, "fallback": {"Gather": 2, "Shape": 1}}
    )
    assert other.describe() == "7 of 10 nodes on OpenVINO; 3 fell back to CPU: 2 Gather, 1 Shape"


# ---------------------------------------------------------------- the search space per provider


def test_each_provider_has_its_own_knobs_and_transforms():
    from golive.optimize import get_transform
    from golive.tuning.space import default_session, session_knobs, session_precision, with_knob

    ov = dict(session_knobs(OPENVINO, cores=2, isa=["avx2"]))
    assert ov["device_properties.INFERENCE_PRECISION_HINT"] == ["f32"]  # no native bf16: not offered
    amx = dict(session_knobs(OPENVINO, cores=2, isa=["amx_bf16"]))
    assert amx["device_properties.INFERENCE_PRECISION_HINT"] == ["bf16", "f32"]  # OpenVINO's own default on AMX first
    avx512 = dict(session_knobs(OPENVINO, cores=2, isa=["avx512_bf16"]))
    assert avx512["device_properties.INFERENCE_PRECISION_HINT"] == ["f32", "bf16"]
    assert "device_properties.PERFORMANCE_HINT" in ov and "intra_op_num_threads" not in ov
    assert "device_properties.NUM_STREAMS" in dict(session_knobs(OPENVINO, cores=2, isa=[], objective="throughput"))
    assert "intra_op_num_threads" in dict(session_knobs(CPU, cores=2, isa=[]))
    bf16 = with_knob(SessionConfig(providers=[OPENVINO]), "device_properties.INFERENCE_PRECISION_HINT", "bf16")
    assert session_precision(bf16) == "bf16" and "precision=bf16" in bf16.describe()
    assert session_precision(SessionConfig()) is None
    trt = with_knob(SessionConfig(providers=["TensorrtExecutionProvider"]), "provider_options.trt_fp16_enable", "True")
    assert trt.provider_options == [{"trt_fp16_enable": "True"}] and session_precision(trt) == "fp16"
    assert default_session(CPU) == SessionConfig()
    # contrib-op fusions and QOperator INT8 are the CPU provider's; OpenVINO's INT8 is QDQ
    for name in ("ort_fusion", "int8_dynamic", "int8_per_token", "int8_blockwise", "split_skip_layernorm"):
        assert get_transform(name).unavailable_for(OPENVINO), name
    for name in ("torchscript_export", "int8_qdq_matmul", "int8_static_qdq", "fixed_shape"):
        assert get_transform(name).unavailable_for(OPENVINO) is None, name
    assert get_transform("int8_qdq_matmul").unavailable_for(CPU)


def test_gpu_candidates_io_binding_cuda_graphs_and_tensorrt_caches_are_declared_and_built(tmp_path):
    """No GPU here: the GPU knobs are declared, a CUDA graph implies IO binding, TensorRT's options cache engines
    beside the model, a server drops the graph capture; IO binding itself runs for real on the CPU provider."""
    from golive.runtime import _provider_options, bound_runner, without_graph_capture
    from golive.tuning.space import invalid_reason, session_knobs, with_knob
    from golive.tuning.worker import MeasureTask, measure

    cuda, trt = "CUDAExecutionProvider", "TensorrtExecutionProvider"
    cuda_knobs, trt_knobs = dict(session_knobs(cuda, cores=2, isa=[])), dict(session_knobs(trt, cores=2, isa=[]))
    assert cuda_knobs["io_binding"] == [False, True] and cuda_knobs["provider_options.enable_cuda_graph"] == ["0", "1"]
    assert trt_knobs["io_binding"] == [False, True] and trt_knobs["provider_options.trt_cuda_graph_enable"] == ["False", "True"]
    assert "io_binding" not in dict(session_knobs(CPU, cores=2, isa=[]))
    graph = with_knob(SessionConfig(providers=[cuda]), "provider_options.enable_cuda_graph", "1")
    assert graph.graph_capture() and graph.bound() and not SessionConfig(providers=[cuda]).bound()
    assert graph.describe() == "CUDA enable_cuda_graph=1"
    prefer = with_knob(graph, "provider_options.prefer_nhwc", "1")
    served = without_graph_capture(prefer)
    assert not served.graph_capture() and served.provider_options == [{"prefer_nhwc": "1"}]
    assert "IO binding" in invalid_reason(SessionConfig(io_binding=True), [], [CPU])
    assert invalid_reason(SessionConfig(providers=[cuda], io_binding=True), [], [cuda, CPU]) is None

    from conftest import relu_onnx

    (tmp_path / "models").mkdir()
    model = relu_onnx(tmp_path / "models" / "m.onnx")
    options = _provider_options(SessionConfig(providers=[trt, cuda, CPU]), model)[0]
    assert options["trt_engine_cache_enable"] == "True" and options["trt_timing_cache_enable"] == "True"
    assert options["trt_engine_cache_path"] == str((tmp_path / "models" / "trt_cache").resolve())
    own = with_knob(SessionConfig(providers=[trt]), "provider_options.trt_engine_cache_path", str(tmp_path / "engines"))
    own = with_knob(own, "provider_options.trt_timing_cache_enable", "False")
    options = _provider_options(own, model)[0]
    assert options["trt_engine_cache_path"] == str(tmp_path / "engines") and options["trt_timing_cache_enable"] == "False"
    assert _provider_options(SessionConfig(), model) is None

    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    session = make_session(model, SessionConfig())
    run, outputs = bound_runner(session, {"x": x})
    run()
    np.testing.assert_array_equal(outputs()[0], np.maximum(x, 0))
    # output buffers shaped before the first run (as a CUDA graph, captured during it, needs)
    run, outputs = bound_runner(session, {"x": x}, like=[np.empty((3, 4), np.float32)])
    run()
    np.testing.assert_array_equal(outputs()[0], np.maximum(x, 0))
    np.savez(tmp_path / "in.npz", x=x)
    for bound in (False, True):  # the worker's timing loop through IO binding gives the outputs the plain run gives
        out = tmp_path / f"out-{bound}.npz"
        task = MeasureTask(
            model=str(model),
            session=SessionConfig(io_binding=bound),
            inputs=str(tmp_path / "in.npz"),
            outputs=str(out),
            max_seconds=0.3,
            warmup=2,
            min_runs=5,
            max_runs=1000,
            stable_within=0.05,
        )
        figures = measure(task).figures
        assert figures["p50_ms"] > 0 and figures["runs"] >= 5
        with np.load(out) as z:
            np.testing.assert_array_equal(z["y"], np.maximum(x, 0))


def test_the_qdq_matmul_transform_quantizes_only_matmuls(tmp_path):
    from golive.optimize import TransformContext, get_transform
    from golive.tuning.gate import cosine

    model = _matmul_relu(tmp_path / "m.onnx", k=64, n=32)
    rng = np.random.default_rng(1)
    calibration = [{"x": rng.normal(size=(4, 64)).astype(np.float32)} for _ in range(8)]
    ctx = TransformContext(calibration=calibration, work_dir=tmp_path)
    info = get_transform("int8_qdq_matmul").apply(model, tmp_path / "q.onnx", ctx).details
    assert info["op_types"] == ["MatMul"] and info["activations"] == "uint8"
    import onnx

    ops = [n.op_type for n in onnx.load(tmp_path / "q.onnx").graph.node]
    assert ops.count("QuantizeLinear") >= 1 and "MatMul" in ops and "Relu" in ops
    feeds = {"x": rng.normal(size=(4, 64)).astype(np.float32)}
    ref = make_session(model).run(None, feeds)[0]
    got = make_session(tmp_path / "q.onnx").run(None, feeds)[0]
    assert cosine(got, ref) > 0.99


def test_a_plugin_transform_asked_for_where_its_provider_is_not_searched_is_said(tmp_path):
    from conftest import relu_onnx

    result = golive.tune(
        relu_onnx(tmp_path / "m.onnx"), tmp_path / "t", budget=3, transforms=["int8_qdq_matmul"], providers=["cpu"]
    )
    assert any(n.startswith("int8_qdq_matmul was not tried: int8_qdq_matmul is for OpenVINO only") for n in result.report.notes)
    assert not any("int8_qdq_matmul" in c.transforms for c in result.report.candidates)


# ---------------------------------------------------------------- OpenVINO at work (Intel machines)


@needs_openvino
def test_a_tiny_bert_is_tuned_across_cpu_and_openvino(tmp_path_factory, tmp_path):
    from transformers import BertConfig, BertModel

    torch = pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("ov-bert")
    torch.manual_seed(0)
    BertModel(
        BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=1000)
    ).eval().save_pretrained(root / "bert")
    from conftest import steps_here

    with steps_here():
        golive.convert(root / "bert", root / "onnx")
        result = golive.tune(
            root / "onnx", tmp_path / "t", budget=12, providers=["cpu", "openvino"], transforms=[], time_source=False
        )
    providers = {c.session.providers[0] for c in result.report.candidates if c.status == "passed"}
    assert providers == {CPU, OPENVINO}
    lines = result.report.placement_lines()
    assert lines and any("OpenVINO" in line for line in lines)
    ov = [c for c in result.report.candidates if c.session.providers[0] == OPENVINO and c.status == "passed"]
    assert all(c.placement and c.placement.provider == OPENVINO and c.placement.by_provider.get(OPENVINO) for c in ov)
    # the best, whichever provider won, reloaded in a fresh process and served, with the outputs it was tuned with
    feeds = dict(np.load(tmp_path / "t" / "inputs.npz"))
    expected = dict(np.load(tmp_path / "t" / "best" / "outputs.npz"))
    script = (
        "import golive, numpy as np, sys\n"
        "s = golive.load_session(sys.argv[1])\n"
        "feeds = dict(np.load(sys.argv[2]))\n"
        "np.savez(sys.argv[3], **dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds))))\n"
        "print(s.get_providers()[0])\n"
    )
    np.savez(tmp_path / "feeds.npz", **feeds)
    run = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "t"), str(tmp_path / "feeds.npz"), str(tmp_path / "fresh.npz")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == result.report.best.session.providers[0]
    fresh = dict(np.load(tmp_path / "fresh.npz"))
    for name, value in expected.items():
        np.testing.assert_allclose(fresh[name], value, rtol=1e-4, atol=1e-4)
    served = _served_outputs(tmp_path / "t", feeds, tmp_path)
    for name, value in expected.items():
        np.testing.assert_allclose(served[name], value, rtol=1e-4, atol=1e-4)


def _served_outputs(folder: Path, feeds: dict[str, np.ndarray], logs: Path) -> dict[str, np.ndarray]:
    """The outputs ``golive serve`` gives for ``feeds`` over KServe v2 HTTP (the server started and stopped here)."""
    import signal
    import urllib.request

    from conftest import free_port

    http, grpc = free_port(), free_port()
    with open(logs / "serve.log", "w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "golive",
                "serve",
                str(folder),
                "--name",
                "bert",
                "--port",
                str(http),
                "--grpc-port",
                str(grpc),
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        try:
            line = proc.stdout.readline() if proc.stdout else ""
            assert line.startswith(f"golive serve: http://127.0.0.1:{http}"), (line, (logs / "serve.log").read_text())
            kinds = {np.dtype("int64"): "INT64", np.dtype("int32"): "INT32", np.dtype("float32"): "FP32"}
            body = {
                "inputs": [
                    {"name": k, "shape": list(v.shape), "datatype": kinds[v.dtype], "data": v.ravel().tolist()}
                    for k, v in feeds.items()
                ]
            }
            request = urllib.request.Request(
                f"http://127.0.0.1:{http}/v2/models/bert/infer",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=120) as answer:
                outputs = json.loads(answer.read())["outputs"]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    return {o["name"]: np.asarray(o["data"], dtype=np.float32).reshape(o["shape"]) for o in outputs}


@needs_openvino
def test_no_fallback_rejects_a_candidate_naming_the_op_openvino_does_not_take(tmp_path):
    """A model with an operator from ONNX Runtime's own domain next to standard ones: OpenVINO leaves it to the CPU
    provider, and with --no-fallback the candidate on OpenVINO is rejected, the operator named."""
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["h"], name="relu"),
            helper.make_node("FastGelu", ["h"], ["y"], name="gelu", domain="com.microsoft"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)], ir_version=10
    )
    save(model, tmp_path / "m.onnx")
    with pytest.raises(golive.GoliveError, match="FastGelu"):
        make_session(tmp_path / "m.onnx", SessionConfig(providers=[OPENVINO], cpu_fallback=False))
    result = golive.tune(
        tmp_path / "m.onnx", tmp_path / "t", budget=10, providers=["openvino"], cpu_fallback=False, transforms=[]
    )
    ov = [c for c in result.report.candidates if c.session.providers[0] == OPENVINO]
    assert ov and all(c.status == "rejected" and "FastGelu" in c.reason and "--no-fallback" in c.reason for c in ov)


@pytest.mark.skipif(
    not (ORT_OPENVINO / "onnxruntime").is_dir() or _openvino_state()[0] == "built in",
    reason="no onnxruntime-openvino build beside this venv (make install-dev puts it there on x86-64 Linux), "
    "or this process runs it already",
)
def test_openvino_in_the_onnxruntime_openvino_build(tmp_path):
    """The OpenVINO cases again, in a process whose onnxruntime is the onnxruntime-openvino build (OpenVINO built
    in): golive names the provider the classic way there, and it runs on this CPU whatever its vendor."""
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-n",
            "0",
            "-q",
            "-p",
            "no:cacheprovider",
            "--basetemp",
            str(tmp_path / "t"),
            "-k",
            " or ".join(OPENVINO_CASES),
            __file__,
        ],
        env={**os.environ, "PYTHONPATH": str(ORT_OPENVINO)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert f"{len(OPENVINO_CASES)} passed" in run.stdout, run.stdout[-2000:]
