"""Tuning on real models with small budgets: every candidate measured in a worker and gated."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import golive
from conftest import TESTS, check_tune_result, zoo
from golive.runtime import SessionConfig
from golive.tuning.space import invalid_reason

pytestmark = pytest.mark.usefixtures("steps_in_place")  # what the steps compute, not where they run


def test_tune_mnist_reaches_every_family(mnist_dir, tmp_path):
    result = golive.tune(mnist_dir, tmp_path / "t")  # --budget auto: its plan reaches every family whatever the load
    check_tune_result(result, tmp_path / "t")
    source = result.report.source  # PyTorch eager, timed on the same inputs beside the ONNX Runtime figures
    assert source["framework"] == "pytorch" and source["p50_ms"] > 0 and source["runs"] >= 3
    assert result.report.speedup_over_source == pytest.approx(source["p50_ms"] / result.best.figures["p50_ms"])
    assert "pytorch source model" in result.report.summary()
    stages = {c.stage for c in result.report.candidates}
    assert {"baseline", "model", "session"} <= stages
    fusions = [c for c in result.report.candidates if c.transforms in (["ort_fusion"], ["onnxscript_fusion"])]
    # each fusion finds nothing to fuse in a CNN, or (a loaded machine: INT8 goes first where the budget cannot pay
    # for a fusion and the INT8 built on it) the budget was spent before it ran
    assert fusions and all(
        (c.status == "invalid" and "nothing to fuse" in c.reason) or (c.status == "skipped" and "budget" in c.reason)
        for c in fusions
    ), [(c.transforms, c.status, c.reason) for c in fusions]
    from golive.optimize import TransformContext, get_transform

    for name in ("ort_fusion", "onnxscript_fusion"):  # what the search reads to call it invalid, whatever the budget
        info = get_transform(name).apply(mnist_dir / "model.onnx", tmp_path / f"{name}.onnx", TransformContext(work_dir=tmp_path))
        assert not info.record()["fused"], (name, info.record())
    # where dynamic INT8 passes the gate, per-token INT8 (the same GEMMs plus quantizing ops) is not tried
    passed = {
        tuple(c.transforms[:-1])
        for c in result.report.candidates
        if c.status == "passed" and c.transforms[-1:] in (["int8_dynamic"], ["int8_dynamic_per_channel"])
    }
    assert passed and not any(
        tuple(c.transforms[:-1]) in passed for c in result.report.candidates if c.transforms[-1:] == ["int8_per_token"]
    )
    assert not (tmp_path / "t" / "work").exists()


def _matmul_stack(path, width: int = 384, depth: int = 6):
    """MatMul + Relu layers: runs of milliseconds, long enough for a busy machine to show in their median."""
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.default_rng(0)
    nodes, weights, name = [], [], "x"
    for i in range(depth):
        weights.append(numpy_helper.from_array((rng.standard_normal((width, width)) / width**0.5).astype(np.float32), f"w{i}"))
        nodes += [helper.make_node("MatMul", [name, f"w{i}"], [f"h{i}"]), helper.make_node("Relu", [f"h{i}"], [f"y{i}"])]
        name = f"y{i}"
    graph = helper.make_graph(
        nodes,
        "stack",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", width])],
        weights,
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)
    return path


_BUSY_SPELL = """
import json, os, subprocess, sys, threading, time

import golive

hogs, judged = [], []
calm = threading.Event()


def spell():
    hog = "print(flush=True)\\nwhile True: pass"
    # on the CPU this process is pinned to, each in a session of its own: with autogroup scheduling a session shares
    # the CPU as one, and golive's step worker starts its own session
    hogs.extend(
        subprocess.Popen([sys.executable, "-c", hog], stdout=subprocess.PIPE, start_new_session=True)
        for _ in range(6)
    )
    for h in hogs:
        h.stdout.readline()  # spinning from here on
    calm.wait(6.0)  # until three more candidates were judged in the spell, or 6 s
    for h in hogs:
        h.kill()


spinner = threading.Thread(target=spell)


def on_event(event):
    row = event.payload.get("candidate")
    if row and row["stage"] in ("model", "session") and row["status"] != "invalid":
        judged.append(row["id"])
        if len(judged) == 1:
            spinner.start()
        if len(judged) == 4:
            calm.set()


try:
    result = golive.tune(
        sys.argv[1],
        sys.argv[2],
        budget=16,
        dim_sizes={"batch": 128},
        on_event=on_event,
        transforms=["int8_dynamic", "int8_dynamic_per_channel", "int8_static_qdq", "int8_blockwise", "int8_qdq_matmul"],
    )
finally:
    if spinner.is_alive():
        spinner.join()
    for h in hogs:
        h.kill()
        h.wait()
rows = [(c.id, c.stage, c.status, c.reason[:60]) for c in result.report.candidates]
print(json.dumps({"notes": result.report.notes, "rows": rows}))
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="pins the search and the busy spell to one CPU (Linux)")
def test_a_busy_spell_during_the_search_is_seen_by_the_baseline_beside_the_candidates(tmp_path):
    """A tune pinned to one CPU (in a process of its own, so its workers inherit the pin); six busy-looping processes
    pinned to the same CPU spin from when the first candidate beside the baseline has been measured until three more
    were judged (at most 6 s): a spell of a few of the yardstick's measurements, so their median stays the usual
    machine's, and one that
    whatever else runs on the other CPU (the other test worker) cannot hide. The baseline timed beside the
    candidates in the spell sees the machine slow down, they are measured again after a pause, and the report
    says the search ran on a busy machine."""
    cpu = min(os.sched_getaffinity(0))
    model = _matmul_stack(tmp_path / "stack.onnx")
    script = f"import os\nos.sched_setaffinity(0, {{{cpu}}})\n" + _BUSY_SPELL
    run = subprocess.run(
        [sys.executable, "-c", script, str(model), str(tmp_path / "t")], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    # the figures taken beside the baseline are replaced on a candidate a duel or confirm re-measures (they alternate
    # instead), so the steadiness note is what tells how many measurements the yardstick was timed beside
    note = next((n for n in out["notes"] if n.startswith(("a busy machine", "a steady machine"))), None)
    assert note is not None, out
    assert int(re.search(r"timed beside (\d+) measurements", note).group(1)) >= 2, note
    assert note.startswith("a busy machine") and "measured again after a pause" in note, out


def test_the_cpus_int8_and_bf16_instruction_sets_steer_the_search_and_are_said(tmp_path):
    """Known before the search starts: where the u8s8 kernel saturates (x86 without VNNI or AMX) dynamic INT8 gets
    7-bit weights, as per-token INT8 does; OpenVINO starts from bf16 on AMX; the report says which plan it took."""
    import platform

    import onnx
    from onnx import numpy_helper

    from golive.cpu import cpu_features
    from golive.optimize import TransformContext, get_transform
    from golive.tuning.space import cpu_plan

    x86 = platform.machine().lower() in ("x86_64", "amd64")
    model = _matmul_stack(tmp_path / "stack.onnx", width=64, depth=2)
    for levels, bits in ((63, 7), (127, 8)):
        for name in ("int8_dynamic", "int8_dynamic_per_channel"):
            out = tmp_path / f"{name}-{levels}.onnx"
            info = get_transform(name).apply(model, out, TransformContext(work_dir=tmp_path, weight_levels=levels))
            assert info.transform == name and info.model == str(out) and info.details["weight_bits"] == bits
            weights = [numpy_helper.to_array(t) for t in onnx.load(out).graph.initializer if t.data_type == onnx.TensorProto.INT8]
            peak = max(int(np.abs(w.astype(np.int16)).max()) for w in weights if w.size > 1)
            assert peak <= 64 if bits == 7 else peak == 127, (name, levels, peak)
    avx2 = cpu_plan(["avx2", "avx512f"], "EPYC", ["CPUExecutionProvider", "OpenVINOExecutionProvider"])
    if x86:
        assert "no INT8 dot-product instructions" in avx2 and "7-bit weights" in avx2
    assert "no native BF16: OpenVINO stays at f32" in avx2
    amx = cpu_plan(["avx512_vnni", "amx_int8", "amx_bf16"], "Xeon", ["CPUExecutionProvider", "OpenVINOExecutionProvider"])
    assert "INT8 dot products with AMX" in amx and "OpenVINO tries bf16 then f32" in amx
    assert "OpenVINO" not in cpu_plan(["avx512_vnni"], "EPYC", ["CPUExecutionProvider"])
    result = golive.tune(model, tmp_path / "t", budget=4, transforms=["int8_dynamic"], providers=["cpu"])
    facts = cpu_features()
    assert cpu_plan(list(facts["isa"]), facts["cpu"], ["CPUExecutionProvider"]) in result.report.notes
    assert any(n.startswith("budget 4 s: the search ends about") for n in result.report.notes)  # an explicit budget


def test_a_candidate_that_kills_its_worker_is_reported_failed(mnist_dir, tmp_path):
    # a user's transform by import path; its model holds a custom op whose kernel kills the measuring process
    passes = tmp_path / "passes"
    passes.mkdir()
    crash = str(shutil.copy(TESTS / "crash_worker.py", passes))
    name = f"{crash}:add_a_node_that_kills_its_process"
    result = golive.tune(mnist_dir, tmp_path / "t", budget=12, transforms=[name], custom_ops=[crash])  # 8 s skipped it under load
    assert [p.name for p in passes.iterdir()] == ["crash_worker.py"]  # its results went to the tune's work folder
    crashed = [c for c in result.report.candidates if c.transforms == [name]]
    assert crashed and crashed[0].status == "failed" and "SIGKILL" in crashed[0].reason, [
        (c.transforms, c.status, c.reason) for c in result.report.candidates
    ]
    assert crashed[0].transform_info[0]["note"] == "the process measuring this model dies"  # the transform itself ran
    assert result.report.best.status == "passed" and result.report.best.transforms != [name]


def test_an_unknown_transform_fails_before_anything_is_measured(mnist_dir, tmp_path, cli):
    code, _, stderr = cli("tune", mnist_dir, "-o", tmp_path / "t", "--transforms", "ort_fusion,no_such_transform")
    assert code == 2 and "unknown transform 'no_such_transform'" in stderr and "int8_per_token" in stderr
    assert not (tmp_path / "t" / "report.json").exists()


def test_an_over_aggressive_candidate_is_rejected(mnist_dir, tmp_path, cli):
    code, stdout, _ = cli(
        "tune", mnist_dir, "-o", tmp_path / "t", "--transforms", "int8_dynamic", "--no-session-search", "--metric", "max_abs=1e-9",
        "--no-time-source",
    )  # fmt: skip
    assert code == 0 and "rejected" in stdout
    report = json.loads((tmp_path / "t" / "report.json").read_text())
    assert report["source"] is None and "the source model was not timed: time_source is off" in report["notes"]
    assert not [c for c in report["candidates"] if c["stage"] == "session"]  # --no-session-search
    int8 = [c for c in report["candidates"] if c["transforms"] == ["int8_dynamic"]]
    assert int8 and int8[0]["status"] == "rejected" and "max_abs" in int8[0]["reason"]
    assert int8[0]["figures"]["p50_ms"] > 0  # rejected with its figures, not hidden
    assert report["best"]["precision"] == "fp32"


def test_impossible_combinations_are_rejected_before_running():
    cpu = ["CPUExecutionProvider"]
    assert "GPU" in invalid_reason(SessionConfig(), ["fp16"], cpu) or "CUDA" in invalid_reason(SessionConfig(), ["fp16"], cpu)
    assert "not available" in invalid_reason(SessionConfig(providers=["CUDAExecutionProvider"]), [], cpu)
    assert "spinning" in invalid_reason(SessionConfig(intra_op_num_threads=1, intra_op_spinning=False), [], cpu)
    assert "parallel" in invalid_reason(SessionConfig(inter_op_num_threads=2), [], cpu)
    assert "one precision" in invalid_reason(SessionConfig(), ["int8_dynamic", "int8_static_qdq"], cpu)
    assert "calibrator" in invalid_reason(SessionConfig(custom_ops=["ops.py"]), ["int8_static_qdq"], cpu)
    assert invalid_reason(SessionConfig(), ["onnxscript_fusion", "int8_dynamic"], cpu) is None
    assert "must come after" in invalid_reason(SessionConfig(), ["int8_dynamic", "onnxscript_fusion"], cpu)


def test_run_job_converts_verifies_and_tunes(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(
        f"source: {zoo('tiny_mlp')}\noutput_dir: out\nconvert:\n  inputs: ['x:float32[batch,4]']\n"
        "tune:\n  budget: 3\n  transforms: []\n  time_source: false\n"
    )
    result = golive.run(job)
    assert result.passed and result.tuning is not None
    assert (tmp_path / "out" / "tuned" / "best" / "session.json").is_file()
    assert golive.load_session(tmp_path / "out" / "tuned").get_inputs()[0].name == "x"


def test_an_int8_candidate_that_flips_predicted_classes_is_rejected_though_its_cosine_passes(tmp_path):
    out = tmp_path / "o"
    assert golive.convert(zoo("CloseTopTwo"), out, inputs=["x:float32[batch,32]"]).passed
    result = golive.tune(
        out, tmp_path / "t", transforms=["int8_dynamic"], dim_sizes={"batch": 256}, time_source=False, session_search=False
    )
    int8 = next(c for c in result.report.candidates if c.transforms == ["int8_dynamic"])
    figures = int8.gate.metrics["output"]
    assert figures["cosine"] >= 0.999  # the scores look alike...
    assert figures["argmax"] < 0.99 and int8.status == "rejected" and "argmax" in int8.reason  # ...the labels do not
    assert result.best.precision == "fp32"
    assert any("class scores" in n for n in result.report.notes)


def test_class_scores_are_told_apart_from_embeddings():
    import onnx
    from onnx import TensorProto, helper

    from golive.tuning.gate import class_score_outputs

    def model(op: str, name: str, shape: list) -> onnx.ModelProto:
        graph = helper.make_graph(
            [helper.make_node(op, ["x"], [name])],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)],
        )
        return helper.make_model(graph)

    assert class_score_outputs(model("LogSoftmax", "output", ["batch", 10])) == {"output"}
    assert class_score_outputs(model("Sigmoid", "probs", ["batch", 3])) == {"probs"}
    assert class_score_outputs(model("Tanh", "pooler_output", ["batch", 384])) == set()  # an embedding
    assert class_score_outputs(model("Softmax", "scores", ["batch", 7, 10])) == set()  # not [batch, classes]
    assert class_score_outputs(model("Softmax", "sentence_embedding", ["batch", 16])) == set()


def test_throughput_tune_searches_the_batch_size(mnist_dir, tmp_path):
    result = golive.tune(
        mnist_dir, tmp_path / "t", budget=4, objective="throughput", max_batch=4, transforms=[], time_source=False
    )
    batches = [c for c in result.report.candidates if c.stage == "batch"]
    assert [c.batch for c in batches] == [1, 2, 4]
    assert all(c.status == "passed" and c.figures["batch"] == c.batch and c.figures["throughput"] > 0 for c in batches)
    assert set(result.report.throughput_by_batch) == {1, 2, 4} and "items/s by batch size" in result.report.summary()
    # time_source=False: a PyTorch convert folder's source is not timed, and the report says why
    assert result.report.source is None and result.report.speedup_over_source is None
    assert "the source model was not timed: time_source is off" in result.report.notes


def test_an_onnx_file_is_tuned_without_a_source_row(tmp_path):
    from conftest import relu_onnx

    events = []
    result = golive.tune(relu_onnx(tmp_path / "m.onnx"), tmp_path / "t", transforms=[], on_event=events.append)
    assert result.report.source is None and result.report.speedup_over_source is None
    assert any("source model was not timed" in n for n in result.report.notes)
    # the default budget is auto: planned from the baseline, said before the search and in the report
    report = result.report
    plan = next(n for n in report.notes if n.startswith("--budget auto:"))
    assert report.budget_auto and f"{report.budget_s:.0f} s planned" in plan
    planned = [e for e in events if e.message.startswith("planned:")]
    assert planned and planned[0].total == int(report.budget_s)
    first_session = next(i for i, e in enumerate(events) if (e.payload or {}).get("candidate", {}).get("stage") == "session")
    assert events.index(planned[0]) < first_session


def test_the_most_promising_candidate_runs_first_and_the_table_fits_100_columns(tmp_path):
    """A MatMul stack (nearly all its work on weight MatMuls): INT8 is expected to gain more than any fp32 fusion, so it is
    built and measured before the second fusion; each candidate carries what was expected of it and what it cost, the
    report says expected beside measured, and the printed table fits a 100-column terminal with its chains whole."""
    from rich.console import Console

    from golive.cli._render import SHORT, render_tune, short_chain

    model = _matmul_stack(tmp_path / "stack.onnx")
    transforms = ["ort_fusion", "onnxscript_fusion", "int8_dynamic"]
    # --budget auto (about 12 s here): an explicit 8 s skipped the INT8 candidate for its cost on a loaded machine
    result = golive.tune(model, tmp_path / "t", dim_sizes={"batch": 32}, transforms=transforms, session_search=False)
    report = result.report
    by = {"+".join(c.transforms): c for c in report.candidates if c.stage == "model"}
    int8, first, second = by["int8_dynamic"], by["ort_fusion"], by["onnxscript_fusion"]
    assert int8.expected.speedup > 1.3 > first.expected.speedup and int8.id < second.id
    assert int8.status == "passed" and int8.cost_s > 0 and int8.expected.cost_s > 0
    assert any(n.startswith("expected -> measured") and "int8_dynamic" in n for n in report.notes)
    console = Console(width=100, record=True)
    render_tune(console, result)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 100
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if " transforms " in line and " session " in line)
    start, end = lines[head].index("transforms"), lines[head].index("session")
    chains: list[str] = []  # the transforms column of each row, its continuation lines joined (a chain breaks between links)
    for line in lines[head + 2 :]:
        if not line.strip():
            break
        cell = line[start:end].strip()
        if line[:start].strip():
            chains.append(cell)
        elif cell:
            chains[-1] += " " + cell
    assert chains == [short_chain(c.transforms) for c in report.ranked()[:12]]
    assert f"{SHORT['int8_dynamic']}=int8_dynamic" in " ".join(text.split())


def test_a_weight_read_through_a_transpose_is_quantized_too(tmp_path):
    """A tied embedding (GPT-2's LM head: the embedding matrix through a Transpose) is a MatMul weight that is not an
    initializer: the quantizer left it fp32 (GPT-2's INT8 decode step then ran slower than fp32). Dynamic INT8 folds the
    Transpose into the weight first, and says so."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from golive.optimize import TransformContext, get_transform
    from golive.runtime import SessionConfig, make_session

    rng = np.random.default_rng(0)
    emb = numpy_helper.from_array(rng.standard_normal((50, 32)).astype(np.float32), "emb")
    w = numpy_helper.from_array((rng.standard_normal((32, 32)) / 6).astype(np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["emb", "ids"], ["h"]),
            helper.make_node("MatMul", ["h", "w"], ["h2"], name="proj"),
            helper.make_node("Transpose", ["emb"], ["emb_t"], perm=[1, 0]),
            helper.make_node("MatMul", ["h2", "emb_t"], ["logits"], name="lm_head"),
        ],
        "tied",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 8, 50])],
        [emb, w],
    )
    src = tmp_path / "tied.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), src)
    out = tmp_path / "int8" / "model.onnx"
    out.parent.mkdir()
    for name in ("int8_dynamic", "int8_dynamic_per_channel"):
        info = get_transform(name).apply(src, out, TransformContext(work_dir=tmp_path)).record()
        assert (
            info["folded_transposes"] == 1
            and info["ops"].get("MatMulInteger", 0) + info["ops"].get("DynamicQuantizeMatMul", 0) == 2
        ), info
        assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx"]  # the folded copy is gone
        ids = {"ids": rng.integers(0, 50, (2, 8)).astype(np.int64)}
        ref = make_session(src, SessionConfig()).run(None, ids)[0]
        got = make_session(out, SessionConfig()).run(None, ids)[0]
        assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.99
