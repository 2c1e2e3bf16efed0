"""Hugging Face folders of every family: task and inputs from the folder, convert and verify, generation through the
exported parts against the source's generate, tune and load the best. Tiny configs of real architectures (hf_zoo.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import golive
from hf_zoo import hf_folder

pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.usefixtures("steps_in_place")]
convert, tune = golive.convert, golive.tune


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return lambda name: hf_folder(name, root)


@pytest.fixture(scope="module")
def converted(folders, tmp_path_factory):
    """Each family converted once (and verified) in this module: name -> ConvertResult."""
    out = tmp_path_factory.mktemp("converted")
    done = {}

    def get(name: str):
        if name not in done:
            done[name] = convert(folders(name), out / name)
        return done[name]

    return get


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


def test_an_encoder_decoder_exports_as_encoder_and_decoder_and_generates_like_its_source(converted, folders):
    result = converted("bart")
    record = result.record
    assert record.task == "text2text-generation" and record.parts == ["encoder", "decoder"]
    assert not (result.output_dir / "model.onnx").exists()
    decoder = json.loads((result.output_dir / "decoder" / "golive.json").read_text())
    names = [i["name"] for i in decoder["inputs"]]
    assert names[:3] == ["input_ids", "encoder_attention_mask", "past_key_values.0.decoder.key"]
    assert "past_key_values.1.encoder.value" in names and decoder["part"] == "decoder"
    assert result.passed, result.verification.failures()
    assert {o.name.split("/")[0] for o in result.verification.outputs} == {"encoder", "decoder"}
    generation = result.verification.generation
    assert generation is not None and generation.equal and generation.new_tokens == 8, generation
    # the same loop by hand through the API, against transformers' generate on another input
    import torch
    import transformers

    source = transformers.BartForConditionalGeneration.from_pretrained(folders("bart")).eval()
    ids = np.array([[5, 9, 13, 40, 22, 7, 3]], dtype=np.int64)
    ours = golive.generate(result.output_dir, {"input_ids": ids, "attention_mask": np.ones_like(ids)}, max_new_tokens=10)
    with torch.no_grad():
        theirs = source.generate(torch.from_numpy(ids), max_new_tokens=10, do_sample=False, num_beams=1)[:, 1:].numpy()
    assert ours.tolist() == theirs.tolist()


def test_speech_to_text_generates_like_whisper_generate(converted):
    result = converted("whisper")
    assert result.record.task == "automatic-speech-recognition" and result.record.parts == ["encoder", "decoder"]
    encoder = result.record.inputs[0]
    assert encoder.name == "input_features" and encoder.shape == ["batch", 16, 100]  # Whisper's fixed window: 2 x 50
    assert result.passed, result.verification.failures()
    generation = result.verification.generation
    assert generation.equal and len(generation.source_tokens[0]) == 8, generation


def test_a_causal_lm_exports_with_its_cache_and_without(converted, folders, tmp_path):
    result = converted("llama")
    record = result.record
    assert record.task == "text-generation" and not record.parts
    shapes = {s.name: s.shape for s in record.inputs}
    assert shapes["attention_mask"] == ["batch", "past_sequence+sequence"]
    assert shapes["past_key_values.1.value"] == ["batch", 1, "past_sequence", 16]  # grouped-query: one key/value head
    assert [o.name for o in record.outputs] == ["logits", *(f"present.{i}.{kv}" for i in range(2) for kv in ("key", "value"))]
    assert record.tune_sizes == {"batch": 1, "sequence": 1, "past_sequence": 32}  # tune measures a decode step
    assert result.passed and result.verification.generation.equal, result.verification.generation
    plain = convert(folders("gpt2"), tmp_path / "gpt2", cache=False)
    assert [s.name for s in plain.record.inputs] == ["input_ids", "attention_mask"]
    assert [o.name for o in plain.record.outputs] == ["logits"] and plain.record.generation is None and plain.passed


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


def test_parts_tune_load_profile_inspect_and_serve(converted, tmp_path):
    """A seq2seq model's parts tuned (each its best), loaded, generating through the tuned parts as through the
    converted ones; profiled and inspected part by part."""
    result = converted("bart")
    tuned = tune(result.output_dir, tmp_path / "tuned", budget=8, time_source=False)
    assert set(tuned.parts) == {"encoder", "decoder"} and tuned.report is None
    for name, part in tuned.parts.items():
        assert part.report.best.status == "passed", (name, part.report.best)
    sessions = golive.load_sessions(tmp_path / "tuned")
    assert set(sessions) == {"encoder", "decoder"}
    with pytest.raises(golive.GoliveError, match="tuned as 2 parts"):
        golive.load_session(tmp_path / "tuned")
    ids = np.array([[5, 9, 13, 40, 22, 7, 3]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    assert (
        golive.generate(tmp_path / "tuned", feeds, max_new_tokens=6).tolist()
        == golive.generate(result.output_dir, feeds, max_new_tokens=6).tolist()
    )
    profile = golive.profile(tmp_path / "tuned", runs=3)
    assert set(profile.parts) == {"encoder", "decoder"}
    assert {p.label for p in profile.parts["decoder"].profiles} == {"best", "baseline"}
    summary = golive.inspect(result.output_dir)
    assert set(summary.parts) == {"encoder", "decoder"} and summary.task.startswith("text2text-generation")
    assert summary.parameters == sum(p.parameters for p in summary.parts.values())

    from golive.serving.model import load_models

    served = load_models(tmp_path / "tuned", name="bart")
    try:
        assert [m.name for m in served] == ["bart-encoder", "bart-decoder"]
    finally:
        for m in served:
            m.close()


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
