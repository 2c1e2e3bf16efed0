"""Hugging Face folders of every family: task and inputs from the folder, convert and verify, generation through the
exported parts against the source's generate, tune and load the best. Tiny configs of real architectures (hf_zoo.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import golive

pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.usefixtures("steps_in_place")]
convert, tune = golive.convert, golive.tune


@pytest.mark.parametrize(
    ("name", "task", "inputs"),
    [
        ("vit", "image-classification", {"pixel_values": ["batch", 3, 32, 32]}),
        ("resnet", "image-classification", {"pixel_values": ["batch", 3, 64, 64]}),
        ("convnext", "image-classification", {"pixel_values": ["batch", 3, 32, 32]}),
        ("wav2vec2", "automatic-speech-recognition", {"input_values": ["batch", "samples"]}),
        (
            "clip",
            "zero-shot-image-classification",
            {"input_ids": ["batch", "sequence"], "attention_mask": ["batch", "sequence"], "pixel_values": ["batch", 3, 32, 32]},
        ),
    ],
)
def test_a_folder_in_one_piece_converts_and_verifies_with_the_inputs_of_its_task(converted, name, task, inputs):
    result = converted(name)
    record = result.record
    assert record.task == task and record.task_reason and not record.parts
    assert {s.name: s.shape for s in record.inputs} == inputs
    assert result.passed, result.verification.failures()
    if name == "vit":  # the preprocessor's mean and std give the pixel range: [0, 1] normalized by 0.5, 0.5
        assert record.inputs[0].float_range == (-1.0, 1.0)
    if name == "clip":
        assert {"logits_per_image", "logits_per_text", "text_embeds", "image_embeds"} <= {o.name for o in record.outputs}
    if name == "wav2vec2":  # verified at a second length of the waveform too
        assert {r.sizes.get("samples") for r in result.verification.runs} == {1600, 1603}


def test_task_override_and_a_folder_whose_task_cannot_be_told(folders, tmp_path, cli):
    vit = folders("vit")
    features = convert(vit, tmp_path / "features", task="feature-extraction")
    assert features.record.task == "feature-extraction" and features.record.task_reason == "--task"
    assert "last_hidden_state" in {o.name for o in features.record.outputs} and features.passed
    odd = tmp_path / "odd"
    odd.mkdir()
    config = json.loads((vit / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps({**config, "architectures": ["ViTForMaskedImageModeling"]}))
    code, stdout, stderr = cli("convert", odd, "-o", tmp_path / "out")
    text = " ".join((stdout + stderr).split())
    assert code == 2
    assert "cannot tell the task of ViTForMaskedImageModeling" in text and "--task" in text
    assert not (tmp_path / "out").exists()
    code, stdout, stderr = cli("convert", vit, "-o", tmp_path / "out", "--task", "speech-to-pictures")
    assert code == 2 and "unknown task 'speech-to-pictures'" in " ".join((stdout + stderr).split())
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["vit", "wav2vec2"])
def test_a_vision_and_an_audio_model_tune_to_a_best_that_passed(converted, tmp_path, name):
    result = converted(name)
    tuned = tune(result.output_dir, tmp_path / "tuned", budget=5, time_source=False)
    assert tuned.report.best.status == "passed"
    session = golive.load_session(tmp_path / "tuned")
    shape = (1, 3, 32, 32) if name == "vit" else (1, 1600)
    (logits,) = session.run(
        None, {session.get_inputs()[0].name: np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)}
    )
    assert np.isfinite(logits).all() and logits.shape[0] == 1
