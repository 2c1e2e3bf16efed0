"""The comparison figures: each is checked against a difference we put in on purpose."""

from __future__ import annotations

import numpy as np
import pytest

from golive.verification import compare_outputs, default_tolerance


def test_identical_outputs_pass_with_zero_error():
    a = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    (s,) = compare_outputs({"y": a.copy()}, {"y": a})
    assert s.passed and s.max_abs == 0 and s.mismatch_share == 0


def test_figures_match_a_known_difference():
    expected = np.ones((10, 10), dtype=np.float32)
    actual = expected.copy()
    actual[0, :5] += 0.5  # 5 of 100 elements off by 0.5
    (s,) = compare_outputs({"y": actual}, {"y": expected})
    assert not s.passed
    assert s.max_abs == pytest.approx(0.5)
    assert s.max_rel == pytest.approx(0.5)
    assert s.mismatch_share == pytest.approx(0.05)
    assert s.p99_abs == pytest.approx(0.5)
    rtol, atol = default_tolerance("float32")
    assert s.atol_needed == pytest.approx(0.5 - rtol * 1.0)
    assert s.rtol_needed == pytest.approx(0.5 - atol)
    # the tolerances it names really pass
    (ok,) = compare_outputs({"y": actual}, {"y": expected}, {"y": (rtol, s.atol_needed + 1e-9)})
    assert ok.passed


def test_labels_count_agreement_and_are_exact():
    (s,) = compare_outputs({"label": np.array([0, 1, 2, 2])}, {"label": np.array([0, 1, 2, 1])})
    assert s.label_agreement == pytest.approx(0.75) and not s.passed


def test_nan_in_one_side_fails_and_in_both_passes():
    (s,) = compare_outputs({"y": np.array([np.nan, 1.0])}, {"y": np.array([np.nan, 1.0])})
    assert s.passed
    (s,) = compare_outputs({"y": np.array([np.nan, 1.0])}, {"y": np.array([0.0, 1.0])})
    assert not s.passed and s.max_abs == float("inf")


def test_shape_mismatch_is_reported():
    (s,) = compare_outputs({"y": np.zeros((2, 3))}, {"y": np.zeros((3, 2))})
    assert not s.passed and "shape" in s.note


def test_zipmap_outputs_compare_as_arrays():
    actual = [{0: 0.25, 1: 0.75}, {0: 1.0, 1: 0.0}]
    (s,) = compare_outputs({"p": actual}, {"p": np.array([[0.25, 0.75], [1.0, 0.0]], dtype=np.float32)})
    assert s.passed


def test_an_infinite_relative_error_survives_the_record(tmp_path):
    """An error on an exact zero of the reference has an infinite relative error; the record holding it reads back
    (it was written as null, and golive could not read its own golive.json again)."""
    from golive.rundir import VerifyRecord, read_record, write_record
    from golive.spec import VerifyOptions
    from golive.verification import VerifyReport

    (stats,) = compare_outputs({"y": np.array([0.0, 0.5], np.float32)}, {"y": np.array([0.0, 0.0], np.float32)})
    assert stats.max_rel == float("inf") and stats.rtol_needed == float("inf")
    report = VerifyReport(passed=True, reference="zeros", runs=[], outputs=[stats])
    write_record(tmp_path / "verify.json", VerifyRecord(options=VerifyOptions(), report=report))
    again = read_record(tmp_path / "verify.json", VerifyRecord).report.outputs[0]
    assert again.max_rel == float("inf") and again.rtol_needed == float("inf")
