"""What a Hugging Face model folder is: its task, the parts it exports to, and the inputs each takes.

Read from ``config.json`` and the preprocessor file beside it (``preprocessor_config.json``) as plain JSON, with no
transformers import, so the web app can say what it found before anything converts. The loader
(``frontends/_hf_models.py``) builds the modules that export; this module only decides.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from golive.errors import FrameworkError, ModelLoadError
from golive.tensors import TensorSpec

__all__ = [
    "TASKS",
    "GenerationSpec",
    "TaskGuess",
    "guess_task",
    "is_hf_folder",
    "read_config",
]

# The tasks by the names users know (Hugging Face's pipeline names) -> what golive exports for each.
TASKS: dict[str, str] = {
    "feature-extraction": "one model: the hidden states (and pooled output) of the encoder",
    "fill-mask": "one model: token logits",
    "text-classification": "one model: class logits",
    "token-classification": "one model: per-token class logits",
    "question-answering": "one model: start and end logits",
    "image-classification": "one model: class logits from pixel_values",
    "image-segmentation": "one model: per-pixel logits from pixel_values",
    "object-detection": "one model: boxes and class logits from pixel_values",
    "audio-classification": "one model: class logits from the waveform",
    "automatic-speech-recognition": "CTC models: one model, per-frame token logits; encoder-decoder models (Whisper, "
    "Speech2Text): an encoder and a decoder with its key/value cache",
    "text2text-generation": "an encoder and a decoder with its key/value cache (T5, BART, Marian...)",
    "text-generation": "one decoder with its key/value cache (past in, present out); --no-cache: logits only",
    "zero-shot-image-classification": "one model with both towers: image-text logits and both embeddings",
}
GENERATIVE = ("text2text-generation", "text-generation")

# architecture name endings -> task (checked in this order; the first that matches decides)
_HEADS: list[tuple[str, str]] = [
    ("ForCausalLM", "text-generation"),
    ("LMHeadModel", "text-generation"),
    ("ForCTC", "automatic-speech-recognition"),
    ("ForSpeechSeq2Seq", "automatic-speech-recognition"),
    ("ForSeq2SeqLM", "text2text-generation"),
    ("MTModel", "text2text-generation"),
    ("ForImageClassification", "image-classification"),
    ("ForImageClassificationWithTeacher", "image-classification"),
    ("ForAudioClassification", "audio-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForQuestionAnswering", "question-answering"),
    ("ForMaskedLM", "fill-mask"),
    ("ForSemanticSegmentation", "image-segmentation"),
    ("ForObjectDetection", "object-detection"),
]

Modality = Literal["text", "vision", "audio", "speech", "text+vision"]
_SPEECH_TYPES = {"whisper", "speech_to_text", "speech_encoder_decoder", "seamless_m4t"}
_AUDIO_TYPES = {"wav2vec2", "hubert", "wavlm", "data2vec-audio", "unispeech", "unispeech-sat", "sew", "sew-d", "wav2vec2-bert"}
_VISION_TYPES = {"resnet", "convnext", "convnextv2", "regnet", "efficientnet", "mobilenet_v1", "mobilenet_v2", "levit"}


class GenerationSpec(BaseModel):
    """How the exported parts make a greedy generate loop: which outputs feed which inputs, and the token rules of
    the model's generation_config.json."""

    kind: Literal["decoder", "encoder-decoder"]
    encoder: str | None = Field(default=None, description="the encoder part (encoder-decoder models)")
    decoder: str | None = Field(default=None, description="the decoder part; None: the model itself (decoder-only)")
    cache: list[tuple[str, str]] = Field(default_factory=list, description="(past input, present output) of the decoder")
    cross: list[tuple[str, str]] = Field(
        default_factory=list, description="(encoder output, decoder input): the cross-attention keys and values"
    )
    encoder_mask: tuple[str, str] | None = Field(
        default=None, description="(encoder attention-mask input, the decoder input that takes it)"
    )
    attention_mask: str | None = None
    position_ids: str | None = None
    decoder_start_token_id: int | None = None
    eos_token_id: list[int] = Field(default_factory=list)
    pad_token_id: int | None = None
    forced_bos_token_id: int | None = None
    forced_eos_token_id: int | None = None
    suppress_tokens: list[int] = Field(default_factory=list)
    begin_suppress_tokens: list[int] = Field(default_factory=list)
    max_length: int | None = Field(default=None, description="the most positions the model takes (prompt + new tokens)")
    min_length: int = Field(default=0, description="no end token before this many tokens (prompt or start token included)")
    min_new_tokens: int = Field(default=0, description="no end token before this many new tokens")
    no_repeat_ngram_size: int = Field(default=0, description="no n-gram of this size twice")
    repetition_penalty: float = Field(default=1.0, description="logits of tokens already in the sequence divided by this")
    bad_words: list[int] = Field(default_factory=list, description="tokens never generated (one-token bad_words_ids)")
    left_out: dict[str, Any] = Field(
        default_factory=dict,
        description="settings of the generation config this loop does not follow (their neutral values are what the "
        "generation check gives the source's generate too)",
    )

    def parts(self) -> list[str]:
        """The parts the loop runs (none: a decoder-only model in one piece)."""
        return [p for p in (self.encoder, self.decoder) if p]


class TaskGuess(BaseModel):
    """A Hugging Face folder's task, how it was decided, and the inputs of what it exports."""

    task: str
    reason: str
    architecture: str | None
    model_type: str | None
    modality: Modality
    encoder_decoder: bool = False
    inputs: list[TensorSpec] = Field(description="the inputs of the whole model (encoder-only tasks: of the one model)")
    dim_sizes: dict[str, int] = Field(default_factory=dict, description="sizes to trace the export at")

    @property
    def generative(self) -> bool:
        return self.task in GENERATIVE or (self.task == "automatic-speech-recognition" and self.encoder_decoder)

    def describe(self) -> str:
        what = self.architecture or self.model_type or "the model"
        return f"{what}: task {self.task} ({self.reason}); exports {TASKS.get(self.task, 'one model')}"


def is_hf_folder(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / "config.json").is_file()


def read_config(folder: str | Path, name: str = "config.json") -> dict[str, Any]:
    """A JSON file of the folder as a dict ({} when absent, ModelLoadError when unreadable)."""
    path = Path(folder) / name
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}", hint="the folder should hold what save_pretrained wrote") from None
    if not isinstance(value, dict):
        raise ModelLoadError(f"{path} is not a JSON object")
    return value


def guess_task(folder: str | Path, task: str | None = None) -> TaskGuess:
    """The task of a Hugging Face folder (``task`` overrides the guess) and the inputs it takes."""
    folder = Path(folder)
    config = read_config(folder)
    if not (folder / "config.json").is_file():
        raise FrameworkError(f"{folder} has no config.json", hint="a Hugging Face model folder is what save_pretrained writes")
    if not config.get("architectures") and not config.get("model_type"):
        raise FrameworkError(
            f"the config.json in {folder} names neither its architectures nor its model_type",
            hint="save the model with save_pretrained, which writes both",
        )
    pre = read_config(folder, "preprocessor_config.json")
    archs = config.get("architectures") or []
    arch = archs[0] if archs else None
    model_type = config.get("model_type")
    modality = _modality(config)
    enc_dec = bool(config.get("is_encoder_decoder"))
    if task is not None:
        if task not in TASKS:
            raise FrameworkError(f"unknown task {task!r}", hint="--task takes one of " + ", ".join(TASKS))
        reason = "--task"
    else:
        task, reason = _task_from(arch, model_type, modality, enc_dec)
    try:
        inputs, sizes = _inputs(config, pre, modality, task)
    except (TypeError, ValueError, AttributeError, KeyError) as exc:  # a value of the wrong type in the JSON files
        raise ModelLoadError(
            f"cannot read the inputs of {arch or model_type} from config.json / preprocessor_config.json in {folder}: "
            f"{type(exc).__name__}: {exc}",
            hint="check those files (save_pretrained writes them), or give the inputs from a factory in a .py file with --input",
        ) from exc
    return TaskGuess(
        task=task,
        reason=reason,
        architecture=arch,
        model_type=model_type,
        modality=modality,
        encoder_decoder=enc_dec,
        inputs=inputs,
        dim_sizes=sizes,
    )


def _task_from(arch: str | None, model_type: str | None, modality: Modality, enc_dec: bool) -> tuple[str, str]:
    what = f"the architecture {arch}" if arch else f"model_type {model_type}"
    if arch is None:
        if enc_dec:
            task = "automatic-speech-recognition" if modality == "speech" else "text2text-generation"
            return task, f"config.json names no architecture; {what} is an encoder-decoder"
        return _bare(modality), f"config.json names no architecture: the bare {modality} model"
    for ending, task in _HEADS:
        if arch.endswith(ending):
            return task, f"{what} ends in {ending}"
    if arch.endswith("ForConditionalGeneration"):
        if enc_dec:
            task = "automatic-speech-recognition" if modality == "speech" else "text2text-generation"
            return task, f"{what} is an encoder-decoder that generates ({modality} in)"
        raise FrameworkError(
            f"golive cannot export {arch} from its folder: it generates text from {modality} through one decoder "
            "(a multimodal language model), which golive does not export yet",
            hint="export its parts from a factory in a .py file (golive convert model.py:make_part --input ...)",
        )
    if arch.endswith("ForSequenceClassification"):
        task = "audio-classification" if modality in ("audio", "speech") else "text-classification"
        return task, f"{what} ends in ForSequenceClassification ({modality} in)"
    if arch.endswith("Model"):
        if modality == "text+vision":
            return "zero-shot-image-classification", f"{what} holds a text and a vision tower"
        if enc_dec:
            return "text2text-generation", f"{what} is an encoder-decoder"
        return _bare(modality), f"{what} is the bare {modality} model"
    raise FrameworkError(
        f"golive cannot tell the task of {arch} ({model_type}): its head is not one golive knows",
        hint="name it with --task (" + ", ".join(TASKS) + "), or give its inputs with --input NAME:DTYPE[DIMS] "
        "from a factory in a .py file",
    )


def _bare(modality: Modality) -> str:
    return "zero-shot-image-classification" if modality == "text+vision" else "feature-extraction"


def _modality(config: dict[str, Any]) -> Modality:
    model_type = config.get("model_type")
    if config.get("text_config") and config.get("vision_config"):
        return "text+vision"
    if model_type in _SPEECH_TYPES or "num_mel_bins" in config:
        return "speech"
    if model_type in _AUDIO_TYPES or "conv_dim" in config or "feat_extract_norm" in config:
        return "audio"
    if model_type in _VISION_TYPES or "num_channels" in config or "image_size" in config or "patch_size" in config:
        return "vision"
    return "text"


# ---------------------------------------------------------------- inputs by modality


def text_inputs(config: dict[str, Any], prefix: str = "", sequence: str = "sequence") -> list[TensorSpec]:
    vocab = config.get("vocab_size")
    specs = [
        TensorSpec(name=f"{prefix}input_ids", dtype="int64", shape=["batch", sequence], int_range=(0, vocab) if vocab else None),
        TensorSpec(name=f"{prefix}attention_mask", dtype="int64", shape=["batch", sequence], int_range=(1, 2)),
    ]
    types = config.get("type_vocab_size")
    if types:
        specs.append(TensorSpec(name="token_type_ids", dtype="int64", shape=["batch", sequence], int_range=(0, types)))
    return specs


def max_positions(config: dict[str, Any]) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "max_target_positions", "n_ctx"):
        value = config.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _image_size(config: dict[str, Any], pre: dict[str, Any]) -> tuple[int, int]:
    size = config.get("image_size")
    if isinstance(size, int):
        return size, size
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return int(size[0]), int(size[1])
    for key in ("crop_size", "size"):  # what the preprocessor hands the model
        value = pre.get(key)
        if key == "crop_size" and not pre.get("do_center_crop", True):
            continue
        if isinstance(value, int):
            return value, value
        if isinstance(value, dict):
            if "height" in value and "width" in value:
                return int(value["height"]), int(value["width"])
            if "shortest_edge" in value and key == "size":
                return int(value["shortest_edge"]), int(value["shortest_edge"])
    return 224, 224


def _pixel_range(pre: dict[str, Any]) -> tuple[float, float]:
    """The range of pixel values the preprocessor hands the model: [0, 1] rescaled, then normalized."""
    mean, std = pre.get("image_mean"), pre.get("image_std")
    if pre.get("do_normalize", True) and isinstance(mean, list) and isinstance(std, list) and mean and std:
        lows = [(0 - m) / s for m, s in zip(mean, std, strict=False)]
        highs = [(1 - m) / s for m, s in zip(mean, std, strict=False)]
        return round(min(lows), 4), round(max(highs), 4)
    return (0.0, 1.0) if pre.get("do_rescale", False) else (-1.0, 1.0)


def vision_inputs(config: dict[str, Any], pre: dict[str, Any]) -> list[TensorSpec]:
    h, w = _image_size(config, pre)
    channels = config.get("num_channels") or 3
    return [TensorSpec(name="pixel_values", dtype="float32", shape=["batch", channels, h, w], float_range=_pixel_range(pre))]


def audio_inputs(config: dict[str, Any], pre: dict[str, Any]) -> list[TensorSpec]:
    normalized = pre.get("do_normalize", True)
    return [
        TensorSpec(
            name="input_values", dtype="float32", shape=["batch", "samples"], float_range=None if normalized else (-1.0, 1.0)
        )
    ]


def speech_inputs(config: dict[str, Any], pre: dict[str, Any]) -> list[TensorSpec]:
    mels = config.get("num_mel_bins") or pre.get("feature_size") or 80
    frames: int | str = "frames"
    if config.get("model_type") == "whisper":  # Whisper's encoder takes exactly its 30 s window (3000 frames)
        frames = 2 * int(config.get("max_source_positions") or 1500)
    return [TensorSpec(name="input_features", dtype="float32", shape=["batch", mels, frames], float_range=(-1.0, 1.0))]


def _inputs(
    config: dict[str, Any], pre: dict[str, Any], modality: Modality, task: str
) -> tuple[list[TensorSpec], dict[str, int]]:
    sizes = {"batch": 2}
    positions = max_positions(config)
    sequence = 16 if positions is None else max(2, min(16, positions // 2))
    if modality == "text+vision":
        text = config.get("text_config") or {}
        text_positions = max_positions(text) or positions
        sizes["sequence"] = 16 if text_positions is None else max(2, min(16, text_positions // 2))
        specs = text_inputs(text)
        specs = [s for s in specs if s.name != "token_type_ids"]
        return specs + vision_inputs(config.get("vision_config") or {}, pre), sizes
    if modality == "vision":
        return vision_inputs(config, pre), sizes
    if modality == "audio":
        sizes["samples"] = int(pre.get("sampling_rate") or 16000)
        return audio_inputs(config, pre), sizes
    if modality == "speech":
        sizes["frames"] = 100
        return speech_inputs(config, pre), sizes
    sizes["sequence"] = sequence
    specs = text_inputs(config)
    if task in GENERATIVE:
        specs = [s for s in specs if s.name != "token_type_ids"]
    return specs, sizes
