"""What the search expects of a candidate before it runs, and how long it measures one."""

from __future__ import annotations

import time

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper, save

from golive.errors import InputSpecError
from golive.spec import TuneOptions
from golive.tuning.estimate import Estimator, OpMix, cpu_class, measure_seconds
from golive.tuning.worker import time_runs


def _conv_net(path):
    """Two 3x3 convolutions on a 64x64 image: nearly all of its work in Conv."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((32, 16, 3, 3)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1]),
        ],
        "convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 64, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w1, w2],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)
    return path


def test_the_op_mix_and_the_cpu_decide_what_int8_is_expected_to_gain(tmp_path):
    from test_tune import _matmul_stack

    stack = OpMix.of(_matmul_stack(tmp_path / "stack.onnx"), {"x": (128, 384)})
    assert stack.inferred and stack.weights > 0.8 and stack.conv == 0 and stack.size_mb > 3
    convs = OpMix.of(_conv_net(tmp_path / "convs.onnx"), {"x": (1, 3, 64, 64)})
    assert convs.inferred and convs.conv > 0.8 and convs.weights == 0
    assert abs(stack.weights + stack.activations + stack.conv + stack.rest - 1) < 1e-9
    vnni, avx2 = (Estimator(mix=stack, cpu=c, run_ms=1.0, seconds=0.3) for c in ("vnni", "avx2"))
    # INT8 on weight MatMuls: the largest lever, larger with INT8 dot products; the fp32 fusions a few percent at most
    assert vnni.speedup(["int8_dynamic"]) > avx2.speedup(["int8_dynamic"]) > 1.3 > vnni.speedup(["ort_fusion"]) >= 1.0
    conv = Estimator(mix=convs, cpu="vnni", run_ms=1.0, seconds=0.3)
    # dynamic INT8 turns Conv into the slow ConvInteger; static QDQ (QLinearConv) is Conv's INT8 route
    assert conv.speedup(["int8_dynamic"]) < 1.0 < conv.speedup(["int8_static_qdq"])
    assert cpu_class(["avx2", "avx512f", "avx512_vnni"]) == "vnni" and cpu_class(["avx2"]) == "avx2"
    assert cpu_class(["avx512_vnni", "amx_int8"]) == "amx" and cpu_class([], "CUDAExecutionProvider") == "gpu"
    # a chain prefix already built costs nothing again; real costs rescale the estimate
    built = {"ort_fusion"}
    assert vnni.build_seconds(["ort_fusion", "int8_dynamic"], built) < vnni.build_seconds(["ort_fusion", "int8_dynamic"])
    before = vnni.build_seconds(["int8_dynamic"])
    vnni.learn_build(["int8_dynamic"], set(), 2 * before)
    assert vnni.build_seconds(["int8_dynamic"]) == pytest.approx(2 * before)


def test_a_measurement_scales_with_the_models_run_time():
    assert measure_seconds(0.005) == 0.3 and measure_seconds(0.2) / 0.0002 > 1499  # many runs for a stable median
    assert measure_seconds(5.0) == 1.0  # 200 runs
    assert measure_seconds(250.0) == pytest.approx(2.5)  # 10 runs: a slow model judged in seconds
    assert measure_seconds(2000.0) == 4.0


def test_a_clearly_slower_candidate_stops_timing_early():
    def run():
        time.sleep(0.002)

    slow = time_runs(run, 2.0, warmup=1, min_runs=20, give_up_above_ms=1.0)
    # after a tenth of its time (0.2 s, ~100 runs) where 2 s would have taken ~900
    assert slow.get("stopped_early") and slow["runs"] < 200 and slow["p50_ms"] > 1.0
    close = time_runs(run, 0.2, warmup=1, min_runs=5, give_up_above_ms=50.0)
    assert "stopped_early" not in close


def test_the_budget_is_seconds_or_auto(tmp_path, cli):
    assert TuneOptions().budget == "auto" and TuneOptions(budget="AUTO").budget == "auto"
    assert TuneOptions(budget="30").budget == 30.0
    for bad in ("soon", 0, -5):
        with pytest.raises(InputSpecError):
            TuneOptions(budget=bad)
    from test_tune import _matmul_stack

    model = _matmul_stack(tmp_path / "stack.onnx", width=8, depth=1)
    code, out, err = cli("tune", model, "-o", tmp_path / "t", "--budget", "soon")
    assert code == 2 and "cannot read the budget 'soon'" in err + out and not (tmp_path / "t").exists()


def test_a_re_export_and_the_source_timing_are_priced_from_what_the_convert_run_took(mnist_dir):
    """The convert run's events say how long loading the source and exporting it took: a TorchScript re-export does
    both again, and timing the source loads it again; the size-based priors alone under-priced a Whisper-size encoder's
    re-export threefold."""
    from golive.rundir import convert_times

    times = convert_times(mnist_dir)
    assert times.load_s is not None and times.export_s is not None and times.load_s > 0 and times.export_s > 0
    mix = OpMix.of(mnist_dir / "model.onnx", {"x": (1, 1, 28, 28)})
    plain = Estimator(mix=mix, cpu="vnni", run_ms=1.0, seconds=0.3)
    known = Estimator(mix=mix, cpu="vnni", run_ms=1.0, seconds=0.3, source_load_s=30.0, export_s=20.0)
    assert known.build_seconds(["torchscript_export"]) == pytest.approx(0.8 * 50.0)  # above the prior for a small model
    assert plain.build_seconds(["torchscript_export"]) < 10 and plain.build_seconds(["ort_fusion"]) == known.build_seconds(
        ["ort_fusion"]
    )
    assert known.ending_seconds(source=True) - plain.ending_seconds(source=True) == pytest.approx(29.0)  # 30 s, not 1 s
    assert convert_times(mnist_dir / "nothing-here") == type(times)()  # not a convert folder: nothing known
