"""The example notebooks, executed end to end against a real kernel (nbclient + ipykernel), and what they showed."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import TESTS

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
EXAMPLES = TESTS.parent / "examples"


def execute(name: str, folder: Path):
    """Run examples/NAME in ``folder`` (a copy), as a user runs it; returns the executed notebook."""
    shutil.copy(EXAMPLES / name, folder / name)
    nb = nbformat.read(folder / name, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    nbformat.write(nb, folder / name)  # kept beside the run's files, for a look after a failure
    return nb


def outputs(cell, mime: str) -> list[str]:
    found = []
    for out in cell.get("outputs", []):
        data = out.get("data", {})
        if mime in data:
            found.append(data[mime])
        if mime == "text/plain" and out.get("output_type") == "stream":
            found.append(out["text"])
    return found


def cell_with(nb, source: str):
    return next(c for c in nb.cells if c.cell_type == "code" and source in c.source)


def test_quickstart_notebook(tmp_path):
    nb = execute("quickstart.ipynb", tmp_path)

    convert = cell_with(nb, "golive.convert(")
    shown = "".join(outputs(convert, "text/html"))
    assert "convert: pytorch" in shown and "<span class='ok'>passed</span>" in shown and "verify-outputs" in shown
    bars = [h for h in outputs(convert, "text/html") if "golive-progress" in h]
    assert bars and "data-state='done'" in bars[-1]  # the progress bar, updated in place to its end

    record = json.loads((tmp_path / "runs/mnist/golive.json").read_text())
    max_abs = float(outputs(cell_with(nb, "max_abs = result"), "text/plain")[0])
    assert max_abs == pytest.approx(record["verification"]["outputs"][0]["max_abs"])

    report = json.loads((tmp_path / "runs/mnist-tuned/report.json").read_text())
    printed = outputs(cell_with(nb, "speed-up over ONNX Runtime"), "text/plain")[0]
    assert f"{report['speedup']:.2f}x" in printed and report["best"]["status"] == "passed"
    tune_html = "".join(outputs(cell_with(nb, "golive.tune("), "text/html"))
    assert "All candidates, ranked" in tune_html and report["best"]["id"] in tune_html

    assert "summary-ops" in "".join(outputs(cell_with(nb, "golive.inspect("), "text/html"))
    show = "".join(outputs(cell_with(nb, "view = golive.show("), "text/html"))
    assert re.search(r"<iframe src='http://127\.0\.0\.1:\d+/netron/index\.html\?url=/view/[0-9a-f]{32}/model\.onnx'", show)
    served = int(outputs(cell_with(nb, "urllib.request.urlopen(view.url)"), "text/plain")[0])
    assert served == (tmp_path / "runs/mnist-tuned/best/model.onnx").stat().st_size
    jobs = "".join(outputs(cell_with(nb, "golive.jobs.list("), "text/html"))
    assert "1 job(s)" in jobs and "succeeded" in jobs


def test_kubeflow_notebook(tmp_path):
    nb = execute("kubeflow.ipynb", tmp_path)
    assert (tmp_path / "pipeline.yaml").is_file()
    metrics = outputs(cell_with(nb, 'golive.pipelines.run("job.yaml"'), "text/plain")[0]
    assert "'mnist'" in metrics and "'tabular'" in metrics and "'speedup'" in metrics
    ranking = "".join(outputs(cell_with(nb, 'HTML(open(run["ranking"])'), "text/html"))
    assert "2 tuned model(s)" in ranking and ">mnist<" in ranking and ">tabular<" in ranking
    assert "summary-io" in "".join(outputs(nb.cells[-1], "text/html"))
