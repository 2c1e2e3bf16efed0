"""Input specs, dynamic axes, integer ranges, test data on disk and synthetic inputs."""

from __future__ import annotations

import numpy as np
import pytest

from golive.errors import DataError, InputSpecError
from golive.tensors import (
    TensorSpec,
    apply_dynamic,
    bind_inputs,
    load_data,
    parse_dim_sizes,
    parse_dynamic,
    parse_input_spec,
    parse_int_range,
    synthesize,
    write_test_data,
)


def test_parse_input_spec_reads_names_types_and_dims():
    spec = parse_input_spec("input_ids:int64[batch,128]")
    assert (spec.name, spec.dtype, spec.shape) == ("input_ids", "int64", ["batch", 128])
    assert parse_input_spec("x:float[1,3,?]").shape == [1, 3, None]
    assert parse_input_spec("s:double[]").shape == []
    assert parse_input_spec("s:double[]").dtype == "float64"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("x:float32(1,2)", "cannot read the input spec"),
        ("x[1,2]", "cannot read the input spec"),
        ("x:floot[1]", "unknown element type 'floot'"),
        ("x:float32[1,-2]", "bad dimension '-2'"),
    ],
)
def test_malformed_input_specs_name_the_problem(text, fragment):
    with pytest.raises(InputSpecError, match=fragment.replace("(", r"\(").replace("[", r"\[")) as err:
        parse_input_spec(text)
    assert err.value.hint


def test_dynamic_axes_and_unknown_names():
    assert parse_dynamic("input_ids:0=batch,1=sequence") == ("input_ids", {0: "batch", 1: "sequence"})
    specs = [TensorSpec(name="x", dtype="float32", shape=[1, 3])]
    assert apply_dynamic(specs, {"x": {0: "batch"}})[0].shape == ["batch", 3]
    with pytest.raises(InputSpecError, match="unknown input"):
        apply_dynamic(specs, {"y": {0: "batch"}})
    with pytest.raises(InputSpecError, match="only 2 axes"):
        apply_dynamic(specs, {"x": {5: "batch"}})
    with pytest.raises(InputSpecError):
        parse_dynamic("input_ids:batch")


def test_int_ranges_and_dim_sizes():
    assert parse_int_range("input_ids=0:30522") == ("input_ids", 0, 30522)
    assert parse_int_range("5:9") == (None, 5, 9)
    with pytest.raises(InputSpecError, match="HIGH > LOW"):
        parse_int_range("9:5")
    assert parse_dim_sizes(["batch=1,7"]) == {"batch": [1, 7]}
    with pytest.raises(InputSpecError):
        parse_dim_sizes(["batch=0"])


def test_synthetic_inputs_respect_dtype_shape_and_range():
    specs = [
        TensorSpec(name="ids", dtype="int64", shape=["batch", "sequence"], int_range=(100, 105)),
        TensorSpec(name="x", dtype="float16", shape=["batch", 4]),
        TensorSpec(name="m", dtype="bool", shape=[3]),
    ]
    feeds = synthesize(specs, {"batch": 3, "sequence": 7}, seed=1)
    assert feeds["ids"].shape == (3, 7) and feeds["ids"].dtype == np.int64
    assert feeds["ids"].min() >= 100 and feeds["ids"].max() < 105
    assert feeds["x"].shape == (3, 4) and feeds["x"].dtype == np.float16
    assert feeds["m"].dtype == np.bool_
    again = synthesize(specs, {"batch": 3, "sequence": 7}, seed=1)
    assert np.array_equal(again["ids"], feeds["ids"])


def test_data_formats_round_trip(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    y = np.ones((3, 2), dtype=np.float32)
    np.savez(tmp_path / "d.npz", x=x)
    np.save(tmp_path / "d.npy", x)
    write_test_data(tmp_path / "zoo" / "test_data_set_0", {"x": x}, {"y": y})
    write_test_data(tmp_path / "zoo" / "test_data_set_1", {"x": x + 1}, {"y": y})
    assert np.array_equal(load_data(tmp_path / "d.npz", ["x"])[0].inputs["x"], x)
    assert np.array_equal(load_data(tmp_path / "d.npy", ["x"])[0].inputs["x"], x)
    sets = load_data(tmp_path / "zoo", ["x"], ["y"])
    assert [s.label for s in sets] == ["test_data_set_0", "test_data_set_1"]
    assert np.array_equal(sets[1].inputs["x"], x + 1) and np.array_equal(sets[0].outputs["y"], y)
    single = load_data(tmp_path / "zoo" / "test_data_set_1", ["x"])
    assert len(single) == 1
    with pytest.raises(DataError, match="2 inputs"):
        load_data(tmp_path / "d.npy", ["a", "b"])
    with pytest.raises(DataError, match="does not exist"):
        load_data(tmp_path / "missing.npz", ["x"])


def test_bind_inputs_checks_names_types_and_shapes():
    specs = [TensorSpec(name="x", dtype="float32", shape=["batch", 4])]
    bound = bind_inputs({"x": np.zeros((2, 4), dtype=np.float64)}, specs, where="t")
    assert bound["x"].dtype == np.float32
    with pytest.raises(DataError, match="unknown input name"):
        bind_inputs({"z": np.zeros((2, 4))}, specs, where="t")
    with pytest.raises(DataError, match="shape"):
        bind_inputs({"x": np.zeros((2, 5), dtype=np.float32)}, specs, where="t")
    with pytest.raises(DataError, match="model wants float32"):
        bind_inputs({"x": np.array([["a"] * 4] * 2)}, specs, where="t")


def test_npz_of_arrays_named_like_np_savez_arguments(tmp_path):
    # np.savez(path, **arrays) takes an array named file or allow_pickle for its own argument; tuning saves inputs
    # and outputs by tensor name, so it writes them with _io.save_npz
    from golive._io import save_npz

    arrays = {"file": np.arange(3), "allow_pickle": np.ones((2, 2), np.float32), "x": np.array(5)}
    save_npz(tmp_path / "a.npz", arrays)
    with np.load(tmp_path / "a.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["allow_pickle", "file", "x"]
        for name, value in arrays.items():
            assert z[name].dtype == value.dtype and np.array_equal(z[name], value)
    sets = load_data(tmp_path / "a.npz", ["file", "allow_pickle"])
    assert np.array_equal(sets[0].inputs["file"], arrays["file"])
