"""golive as a Kubeflow pipeline: the compiled KFP v2 YAML, and real local runs through kfp.local."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import relu_onnx, zoo

pytest.importorskip("kfp")

import golive
from golive import pipelines

MNIST = {"source": zoo("MnistCNN"), "convert": {"inputs": ["x:float32[batch,1,28,28]"]}}


def write_job(path: Path, job: dict) -> Path:
    path.write_text(yaml.safe_dump(job))
    return path


@pytest.fixture
def mnist_job(tmp_path) -> Path:
    return write_job(
        tmp_path / "mnist.yaml",
        {**MNIST, "output_dir": "ignored", "tune": {"budget": 5, "dim_sizes": {"batch": 1}, "time_source": False}},
    )


@pytest.fixture
def fanout_job(tmp_path) -> Path:
    relu_onnx(tmp_path / "relu.onnx")
    return write_job(
        tmp_path / "fanout.yaml",
        {
            "name": "two-models",
            "models": [{"name": "mnist", **MNIST}, {"name": "relu", "source": "relu.onnx"}],
            "tune": {"budget": 4, "transforms": [], "time_source": False},
            "resources": {"tune": {"cpu": 2, "memory": "4Gi"}},
        },
    )


def compiled(job: Path, tmp_path: Path, image: str = "registry.example/golive:1") -> dict:
    return yaml.safe_load(pipelines.compile(job, tmp_path / "p.yaml", image=image).read_text())


def test_one_model_compiles_to_convert_tune_report(mnist_job, tmp_path):
    spec = compiled(mnist_job, tmp_path)
    assert sorted(spec["components"]) == ["comp-convert", "comp-report", "comp-tune"]
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["tune"]["dependentTasks"] == ["convert"]
    assert tasks["tune"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"] == {
        "outputArtifactKey": "model",
        "producerTask": "convert",
    }
    assert tasks["report"]["inputs"]["parameters"]["summary"]["taskOutputParameter"]["producerTask"] == "tune"
    assert tasks["tune"]["cachingOptions"] == {}  # caching off: timings are of their moment
    item = json.loads(spec["root"]["inputDefinitions"]["parameters"]["item"]["defaultValue"])
    assert (
        item["name"] == "mnistcnn"
        and item["job"]["tune"]["budget"] == 5
        and item["job"]["convert"]["inputs"] == MNIST["convert"]["inputs"]
    )
    assert spec["root"]["inputDefinitions"]["parameters"]["item"]["parameterType"] == "STRING"
    tune = spec["components"]["comp-tune"]
    assert tune["inputDefinitions"]["artifacts"]["model"]["artifactType"]["schemaTitle"] == "system.Model"
    outs = {k: v["artifactType"]["schemaTitle"] for k, v in tune["outputDefinitions"]["artifacts"].items()}
    assert outs == {"tuned": "system.Model", "metrics": "system.Metrics", "report": "system.HTML"}
    executors = spec["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {"registry.example/golive:1"}
    resources = executors["exec-tune"]["container"]["resources"]
    assert resources["resourceCpuRequest"] == resources["resourceCpuLimit"] == "2" and resources["resourceMemoryLimit"] == "8Gi"
    assert "pip install" not in json.dumps(executors)  # the image has golive and kfp: nothing installed at run time


def test_fan_out_compiles_to_a_parallel_for_and_a_ranking(fanout_job, tmp_path):
    spec = compiled(fanout_job, tmp_path)
    assert sorted(spec["components"]) == ["comp-convert", "comp-for-loop-1", "comp-rank", "comp-tune"]
    loop = spec["root"]["dag"]["tasks"]["for-loop-1"]
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--items"
    items = spec["root"]["inputDefinitions"]["parameters"]["items"]
    assert items["parameterType"] == "LIST" and [json.loads(i)["name"] for i in items["defaultValue"]] == ["mnist", "relu"]
    assert json.loads(items["defaultValue"][1])["job"]["source"] == str(
        fanout_job.parent / "relu.onnx"
    )  # relative to the job file
    rank = spec["root"]["dag"]["tasks"]["rank"]
    assert rank["dependentTasks"] == ["for-loop-1"]
    assert spec["deploymentSpec"]["executors"]["exec-tune"]["container"]["resources"]["resourceMemoryLimit"] == "4Gi"


def test_the_users_model_names_are_kept(tmp_path):
    from golive.pipelines.components import rank_html

    path = write_job(
        tmp_path / "j.yaml",
        {"models": [{"name": "hidden_alpha", "source": "a.onnx"}, {"name": "hidden_beta", "source": "b.onnx"}]},
    )
    spec = pipelines.load_pipeline_job(path)
    assert [i.name for i in spec.items] == ["hidden_alpha", "hidden_beta"]
    compiled = pipelines.compile(path, tmp_path / "p.yaml")  # KFP takes them as they are
    items = yaml.safe_load(compiled.read_text())["root"]["inputDefinitions"]["parameters"]["items"]
    assert [json.loads(i)["name"] for i in items["defaultValue"]] == ["hidden_alpha", "hidden_beta"]
    row = {"name": "hidden_alpha", "objective": "latency", "best": "original", "metrics": {"p50_ms": 1.0}, "summary": ""}
    assert "<td>hidden_alpha</td>" in rank_html([row, {**row, "name": "hidden_beta"}])


def test_targets_multiply_the_items(tmp_path):
    job = write_job(
        tmp_path / "t.yaml",
        {
            **MNIST,
            "targets": [
                {"name": "latency", "tune": {"objective": "latency"}},
                {"name": "throughput", "tune": {"objective": "throughput", "max_batch": 8}},
            ],
        },
    )
    spec = pipelines.load_pipeline_job(job)
    assert [i.name for i in spec.items] == ["mnistcnn-latency", "mnistcnn-throughput"]
    assert spec.items[1].job.tune.objective == "throughput" and spec.items[1].job.tune.max_batch == 8


def test_bad_pipeline_jobs_say_what_is_wrong(tmp_path, cli):
    cases = {
        "half a cpu": ({**MNIST, "resources": {"tune": {"cpu": 1.5}}}, "needs whole CPUs"),
        "no model": ({"tune": {"budget": 5}}, "names no model"),
        "unknown": ({**MNIST, "colour": "red"}, "unknown field(s) colour"),
        "twins": ({"models": [MNIST, MNIST]}, "two items are named alike"),
        "memory": ({**MNIST, "resources": {"convert": {"memory": "lots"}}}, "not a Kubernetes memory quantity"),
    }
    for name, (job, text) in cases.items():
        path = write_job(tmp_path / f"{name}.yaml", job)
        code, _, err = cli("pipeline", "compile", path, "-o", tmp_path / f"{name}-p.yaml")
        assert code == 2 and text in " ".join(err.split()), (name, err)
        assert not (tmp_path / f"{name}-p.yaml").exists()
    code, _, err = cli("pipeline", "run", write_job(tmp_path / "ok.yaml", MNIST))
    assert code == 2 and "--local, or --host URL" in err


def test_submitting_to_an_unreachable_cluster_fails_clearly(mnist_job, cli):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = cli("pipeline", "run", mnist_job, "--host", f"http://127.0.0.1:{port}")
    assert code == 2 and f"cannot submit to Kubeflow Pipelines at http://127.0.0.1:{port}" in " ".join(err.split())


def _check_item(item: dict) -> None:
    record = json.loads((Path(item["convert"]) / "golive.json").read_text())
    assert record["verification"]["passed"] is True
    assert (Path(item["tuned"]) / "best" / "model.onnx").is_file() and (Path(item["tuned"]) / "report.json").is_file()
    assert item["metrics"]["speedup"] > 0 and item["metrics"]["p50_ms"] > 0 and item["metrics"]["min_cosine"] > 0.99
    assert "<h1>golive tune:" in Path(item["report"]).read_text()


def test_local_run_of_one_model(mnist_job, tmp_path, cli):
    code, stdout, err = cli("pipeline", "run", mnist_job, "--local", "-o", tmp_path / "root", "--json")
    assert code == 0, err
    run = json.loads(stdout)
    item = run["items"]["mnistcnn"]
    _check_item(item)
    session = golive.load_session(item["tuned"])
    assert session.run(None, {"x": np.zeros((3, 1, 28, 28), np.float32)})[0].shape == (3, 10)
    # the KFP metrics artifact carries the figures the UI lists
    out = json.loads((Path(item["tuned"]).parent / "executor_output.json").read_text())
    logged = out["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert logged["speedup"] == pytest.approx(item["metrics"]["speedup"]) and "p99_ms" in logged
    assert "1 tuned model(s)" in Path(run["ranking"]).read_text()
    # the tune component's HTML, as the KFP UI shows it, says where the time goes by op type
    from golive.pipelines.components import report_html

    assert "Where the time goes" in report_html(item["tuned"]) and "<td>Conv</td>" in report_html(item["tuned"])


def test_local_run_of_a_two_model_fan_out(fanout_job, tmp_path):
    run = pipelines.run(fanout_job, tmp_path / "root")  # from Python: in a worker process (kfp.local keeps global state)
    assert sorted(run["items"]) == ["mnist", "relu"]
    for item in run["items"].values():
        _check_item(item)
    relu = golive.load_session(run["items"]["relu"]["tuned"])
    x = np.array([[-1, 2, -3, 4]], np.float32)
    np.testing.assert_array_equal(relu.run(None, {"x": x})[0], np.maximum(x, 0))
    ranking = Path(run["ranking"]).read_text()
    assert "2 tuned model(s)" in ranking and "<td>mnist</td>" in ranking and "<td>relu</td>" in ranking


def test_kfp_and_the_frameworks_share_one_protobuf():
    """kfp 2.x needs protobuf < 7: onnx, onnxruntime, tensorflow, tf2onnx and kfp import together in one process."""
    code = "import google.protobuf, onnx, onnxruntime, tensorflow, tf2onnx, kfp, kfp.dsl; print(google.protobuf.__version__)"
    version = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()[-1]
    assert int(version.split(".")[0]) < 7
