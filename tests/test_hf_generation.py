"""Hugging Face models that generate: encoder-decoder parts (BART, Whisper) and a causal LM with its cache, each
generating through the exported model(s) as the source's generate does; parts tuned, loaded, profiled and served."""

from __future__ import annotations

import json

import numpy as np
import pytest

import golive

pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.usefixtures("steps_in_place")]
convert, tune = golive.convert, golive.tune


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
