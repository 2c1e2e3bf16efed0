"""Hugging Face folders as the modules that export: one per task, or an encoder and a decoder with its cache.

``hf_tasks`` decides the task and the inputs from the folder's JSON; this module loads the model with transformers
and wraps it in modules that take flat tensors and return flat tensors, named:

- encoder-only tasks (classification, feature extraction, CTC, CLIP...): the model's own input and output names;
- text-generation (decoder-only, with the cache): ``input_ids``, ``attention_mask`` over past and new tokens,
  ``position_ids``, ``past_key_values.N.key|value`` -> ``logits``, ``present.N.key|value`` (ONNX Runtime GenAI's and
  Optimum's names), so one step of decoding costs one token;
- encoder-decoder (T5, BART, Marian, Whisper...): part ``encoder`` -> ``last_hidden_state`` and the cross-attention
  keys and values of every decoder layer (``present.N.encoder.key|value``, computed once per input); part ``decoder``:
  ``input_ids``, ``encoder_attention_mask``, ``past_key_values.N.decoder|encoder.key|value`` -> ``logits``,
  ``present.N.decoder.key|value``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from golive.errors import FrameworkError, ModelLoadError, first_line, require
from golive.frontends.base import LoadedModel
from golive.frontends.hf_tasks import GenerationSpec, TaskGuess, guess_task, max_positions
from golive.tensors import TensorSpec

__all__ = ["load_folder"]

_AUTO = {
    "text-generation": "AutoModelForCausalLM",
    "text2text-generation": "AutoModelForSeq2SeqLM",
    "image-classification": "AutoModelForImageClassification",
    "image-segmentation": "AutoModelForSemanticSegmentation",
    "object-detection": "AutoModelForObjectDetection",
    "audio-classification": "AutoModelForAudioClassification",
    "text-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
    "fill-mask": "AutoModelForMaskedLM",
    "feature-extraction": "AutoModel",
    "zero-shot-image-classification": "AutoModel",
}
TRACE_SIZES = {"batch": 2, "sequence": 16, "past_sequence": 16, "encoder_sequence": 16}


def load_folder(path: Path, options, attention: str | None = None) -> LoadedModel:
    """The folder's model for its task (``options.task`` overrides the guess); ``attention`` picks the attention
    implementation (eager, for the TorchScript re-export that ONNX Runtime's optimizer fuses)."""
    transformers = require("transformers", extra="torch", purpose="Loading a Hugging Face model folder")
    guess = guess_task(path, options.task)
    with _quiet(transformers):  # the library never prints: transformers' own log level and progress bars, put back after
        model = _load(transformers, path, guess, bool(options.task), attention)
    details = {"architecture": guess.architecture or type(model).__name__, "model_type": guess.model_type}
    base = {"framework": "pytorch", "source": str(path), "kind": "transformers", "task": guess, "details": details}
    try:
        if guess.task == "text-generation" and options.cache:
            return _decoder_with_cache(model, guess, base)
        if guess.generative and guess.encoder_decoder and options.cache:
            return _encoder_decoder(model, guess, base)
        if guess.generative and guess.encoder_decoder:  # --no-cache: the whole model, decoder ids in, logits out
            return _whole_seq2seq(model, guess, base)
    except (FrameworkError, ModelLoadError):
        raise
    except Exception as exc:  # a transformers internal that does not fit golive's cache wrappers
        raise FrameworkError(
            f"golive cannot build the {guess.task} parts of {details['architecture']} with its cache: "
            f"{type(exc).__name__}: {first_line(exc)}",
            hint="try --no-cache (one model, logits only), --task, or a factory in a .py file with --input",
        ) from exc
    return _single(model, guess, base)


@contextlib.contextmanager
def _quiet(transformers) -> Iterator[None]:
    logging = transformers.utils.logging
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def _load(transformers, path: Path, guess: TaskGuess, task_given: bool, attention: str | None):
    cls = None
    if not task_given and guess.architecture:
        cls = getattr(transformers, guess.architecture, None)
    if cls is None:
        name = _AUTO.get(guess.task, "AutoModel")
        if guess.task == "automatic-speech-recognition":
            name = "AutoModelForSpeechSeq2Seq" if guess.encoder_decoder else "AutoModelForCTC"
        cls = getattr(transformers, name)
    extra = {"attn_implementation": attention} if attention else {}
    try:
        model = cls.from_pretrained(str(path), local_files_only=True, **extra)
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load the transformers model in {path} ({guess.describe()}): {first_line(exc)}",
            hint="the folder needs config.json and the weights (model.safetensors or pytorch_model.bin); "
            "--task picks another head",
        ) from exc
    return model.eval()


# ---------------------------------------------------------------- the wrapper


def _Flat(model, input_names: list[str], call: Callable[[Any, dict[str, Any]], list[tuple[str, Any]]]):
    """A module taking ``input_names`` positionally and returning a flat tuple of tensors (names from ``output_names_for``)."""
    import torch

    class Flat(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.input_names = input_names

        def forward(self, *args):
            return tuple(t for _, t in call(self.model, dict(zip(self.input_names, args, strict=True))))

        def output_names_for(self, *args) -> list[str]:
            with torch.no_grad():
                return [n for n, _ in call(self.model, dict(zip(self.input_names, args, strict=True)))]

    return Flat().eval()


def _tensors(out) -> list[tuple[str, Any]]:
    import torch

    return [(k, v) for k, v in out.items() if isinstance(v, torch.Tensor)]


def _takes(model, names: list[str]) -> list[str]:
    import inspect

    params = inspect.signature(model.forward).parameters
    return [n for n in names if n in params]


# ---------------------------------------------------------------- one model


def _single(model, guess: TaskGuess, base: dict[str, Any]) -> LoadedModel:
    specs = [s for s in guess.inputs if s.name in _takes(model, [s.name for s in guess.inputs])]
    extra = {"use_cache": False} if "use_cache" in _takes(model, ["use_cache"]) else {}

    def call(m, named):
        return _tensors(m(**named, **extra, return_dict=True))

    return LoadedModel(model=_Flat(model, [s.name for s in specs], call), inputs=specs, dim_sizes=dict(guess.dim_sizes), **base)


def _whole_seq2seq(model, guess: TaskGuess, base: dict[str, Any]) -> LoadedModel:
    config = model.config.to_dict()
    decoder = TensorSpec(
        name="decoder_input_ids", dtype="int64", shape=["batch", "decoder_sequence"], int_range=(0, config["vocab_size"])
    )
    specs = [s for s in guess.inputs if s.name in _takes(model, [s.name for s in guess.inputs])] + [decoder]

    def call(m, named):
        out = m(**named, use_cache=False, return_dict=True)
        return [("logits", out.logits), ("encoder_last_hidden_state", out.encoder_last_hidden_state)]

    sizes = {**guess.dim_sizes, "decoder_sequence": 8}
    return LoadedModel(model=_Flat(model, [s.name for s in specs], call), inputs=specs, dim_sizes=sizes, **base)


# ---------------------------------------------------------------- decoder-only with its cache


def _cache_layout(cache) -> list[tuple[int, int]]:
    """(heads, head size) of each layer's keys in a filled DynamicCache."""
    layers = getattr(cache, "layers", None)
    if not layers:
        raise FrameworkError(f"the model's cache is a {type(cache).__name__}, which golive's cache export does not take")
    return [(int(layer.keys.shape[1]), int(layer.keys.shape[3])) for layer in layers]


def _decoder_with_cache(model, guess: TaskGuess, base: dict[str, Any]) -> LoadedModel:
    import torch
    from transformers.cache_utils import DynamicCache

    config = model.config
    with torch.no_grad():
        probe = model(input_ids=torch.ones((1, 2), dtype=torch.long), use_cache=True, return_dict=True)
    layout = _cache_layout(probe.cache)
    names = [n for n in ("input_ids", "attention_mask", "position_ids") if n in _takes(model, [n]) or n == "input_ids"]
    positions = max_positions(config.to_dict()) or 2048
    specs = [TensorSpec(name="input_ids", dtype="int64", shape=["batch", "sequence"], int_range=(0, config.vocab_size))]
    if "attention_mask" in names:
        specs.append(
            TensorSpec(name="attention_mask", dtype="int64", shape=["batch", "past_sequence+sequence"], int_range=(1, 2))
        )
    if "position_ids" in names:
        specs.append(
            TensorSpec(name="position_ids", dtype="int64", shape=["batch", "sequence"], int_range=(0, max(2, positions - 64)))
        )
    cache: list[tuple[str, str]] = []
    for i, (heads, size) in enumerate(layout):
        for kv in ("key", "value"):
            specs.append(
                TensorSpec(name=f"past_key_values.{i}.{kv}", dtype="float32", shape=["batch", heads, "past_sequence", size])
            )
            cache.append((f"past_key_values.{i}.{kv}", f"present.{i}.{kv}"))
    layers = len(layout)

    def call(m, named):
        past = DynamicCache(
            [(named[f"past_key_values.{i}.key"], named[f"past_key_values.{i}.value"]) for i in range(layers)], config=config
        )
        kwargs = {k: named[k] for k in ("input_ids", "attention_mask", "position_ids") if k in named}
        out = m(**kwargs, cache=past, use_cache=True, return_dict=True)
        flat = [("logits", out.logits)]
        for i, layer in enumerate(out.cache.layers):
            flat += [(f"present.{i}.key", layer.keys), (f"present.{i}.value", layer.values)]
        return flat

    generation = _generation_spec(model, "decoder", cache=cache, max_length=positions)
    generation.attention_mask = "attention_mask" if "attention_mask" in names else None
    generation.position_ids = "position_ids" if "position_ids" in names else None
    half = max(2, min(128, positions // 2))
    return LoadedModel(
        model=_Flat(model, [s.name for s in specs], call),
        inputs=specs,
        dim_sizes={k: v for k, v in TRACE_SIZES.items() if k != "encoder_sequence"},
        tune_sizes={"batch": 1, "sequence": 1, "past_sequence": half},
        generation=generation,
        generate=_source_generate(model, guess),
        **base,
    )


# ---------------------------------------------------------------- encoder-decoder


def _encoder_decoder(model, guess: TaskGuess, base: dict[str, Any]) -> LoadedModel:
    import torch
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    config = model.config
    start = config.decoder_start_token_id if config.decoder_start_token_id is not None else 0
    encoder_specs = [s for s in guess.inputs if s.name in _takes(model, [s.name for s in guess.inputs])]
    text = guess.modality == "text"
    if text:  # the encoder's sequence axis is its own: the decoder's sequence grows one token a step
        encoder_specs = [s.model_copy(update={"shape": ["batch", "encoder_sequence"]}) for s in encoder_specs]
    encoder_specs = [s for s in encoder_specs if s.name != "token_type_ids"]
    masked = any(s.name == "attention_mask" for s in encoder_specs) and guess.modality == "text"
    main = encoder_specs[0].name
    sample = {
        s.name: torch.ones([d if isinstance(d, int) else 2 for d in s.shape or []], dtype=getattr(torch, s.dtype))
        for s in encoder_specs
    }
    with torch.no_grad():
        hidden = model.get_encoder()(**{main: sample[main]}).last_hidden_state
        probe = model(
            encoder_outputs=(hidden,),
            decoder_input_ids=torch.full((hidden.shape[0], 1), start, dtype=torch.long),
            cache=EncoderDecoderCache(DynamicCache(), DynamicCache()),
            use_cache=True,
            return_dict=True,
        )
    self_layout = _cache_layout(probe.cache.self_attention_cache)
    cross_layout = _cache_layout(probe.cache.cross_attention_cache)
    layers = len(self_layout)
    encoder_length: int | str = "encoder_sequence" if text else int(hidden.shape[1])
    if not text and guess.modality == "speech" and not isinstance((encoder_specs[0].shape or [0, 0, 0])[2], int):
        encoder_length = "encoder_sequence"

    def encode(m, named):
        mask = named.get("attention_mask")
        enc = m.get_encoder()(**named, return_dict=True)
        h = enc.last_hidden_state
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        out = m(  # one decoder step fills the cross-attention cache: the keys and values every later step reads
            encoder_outputs=(h,),
            attention_mask=mask,
            decoder_input_ids=torch.full((h.shape[0], 1), start, dtype=torch.long),
            cache=cache,
            use_cache=True,
            return_dict=True,
        )
        flat = [("last_hidden_state", h)]
        for i, layer in enumerate(out.cache.cross_attention_cache.layers):
            flat += [(f"present.{i}.encoder.key", layer.keys), (f"present.{i}.encoder.value", layer.values)]
        return flat

    decoder_specs = [TensorSpec(name="input_ids", dtype="int64", shape=["batch", "sequence"], int_range=(0, config.vocab_size))]
    if masked:
        decoder_specs.append(
            TensorSpec(name="encoder_attention_mask", dtype="int64", shape=["batch", encoder_length], int_range=(1, 2))
        )
    cache: list[tuple[str, str]] = []
    cross: list[tuple[str, str]] = []
    for i in range(layers):
        for kv in ("key", "value"):
            heads, size = self_layout[i]
            decoder_specs.append(
                TensorSpec(
                    name=f"past_key_values.{i}.decoder.{kv}", dtype="float32", shape=["batch", heads, "past_sequence", size]
                )
            )
            cache.append((f"past_key_values.{i}.decoder.{kv}", f"present.{i}.decoder.{kv}"))
        for kv in ("key", "value"):
            heads, size = cross_layout[i]
            decoder_specs.append(
                TensorSpec(
                    name=f"past_key_values.{i}.encoder.{kv}", dtype="float32", shape=["batch", heads, encoder_length, size]
                )
            )
            cross.append((f"present.{i}.encoder.{kv}", f"past_key_values.{i}.encoder.{kv}"))
    width = int(hidden.shape[-1])

    def decode(m, named):
        self_cache = DynamicCache(
            [(named[f"past_key_values.{i}.decoder.key"], named[f"past_key_values.{i}.decoder.value"]) for i in range(layers)]
        )
        cross_cache = DynamicCache(
            [(named[f"past_key_values.{i}.encoder.key"], named[f"past_key_values.{i}.encoder.value"]) for i in range(layers)]
        )
        keys = named["past_key_values.0.encoder.key"]
        ids = named["input_ids"]
        # The cross-attention reads its filled cache; the layers still need encoder states to take that branch, and
        # only their shape is read.
        placeholder = torch.zeros((ids.shape[0], keys.shape[2], width), dtype=keys.dtype)
        out = m(
            encoder_outputs=(placeholder,),
            attention_mask=named.get("encoder_attention_mask"),
            decoder_input_ids=ids,
            cache=EncoderDecoderCache(self_cache, cross_cache),
            use_cache=True,
            return_dict=True,
        )
        flat = [("logits", out.logits)]
        for i, layer in enumerate(out.cache.self_attention_cache.layers):
            flat += [(f"present.{i}.decoder.key", layer.keys), (f"present.{i}.decoder.value", layer.values)]
        return flat

    positions = max_positions(config.to_dict()) or 512
    encoder_positions = config.to_dict().get("max_source_positions") or positions
    trace = {k: v for k, v in TRACE_SIZES.items() if not (k == "encoder_sequence" and not isinstance(encoder_length, str))}
    encoder_trace = {k: v for k, v in guess.dim_sizes.items()}
    if text:
        encoder_trace = {"batch": 2, "encoder_sequence": TRACE_SIZES["encoder_sequence"]}
    enc_tune = {"batch": 1, **({"encoder_sequence": min(128, encoder_positions)} if text else {})}
    dec_tune = {"batch": 1, "sequence": 1, "past_sequence": max(2, min(32, positions // 2))}
    if isinstance(encoder_length, str):
        dec_tune["encoder_sequence"] = enc_tune.get("encoder_sequence", 128)
    generation = _generation_spec(model, "encoder-decoder", cache=cache, max_length=positions)
    generation.cross = cross
    generation.encoder_mask = ("attention_mask", "encoder_attention_mask") if masked else None

    def part() -> dict[str, Any]:  # each part's own details: an exporter writes into them
        return {
            "framework": "pytorch",
            "source": base["source"],
            "kind": "transformers",
            "task": guess,
            "details": dict(base["details"]),
        }

    encoder = LoadedModel(
        model=_Flat(model, [s.name for s in encoder_specs], encode),
        inputs=encoder_specs,
        dim_sizes=encoder_trace,
        tune_sizes=enc_tune,
        **part(),
    )
    decoder = LoadedModel(
        model=_Flat(model, [s.name for s in decoder_specs], decode),
        inputs=decoder_specs,
        dim_sizes=trace,
        tune_sizes=dec_tune,
        **part(),
    )
    return LoadedModel(
        model=model,
        inputs=encoder_specs,
        parts={"encoder": encoder, "decoder": decoder},
        generation=generation,
        generate=_source_generate(model, guess),
        **base,
    )


# ---------------------------------------------------------------- generation


def _generation_spec(model, kind: str, *, cache: list[tuple[str, str]], max_length: int) -> GenerationSpec:
    g = model.generation_config
    config = model.config

    def ids(value) -> list[int]:
        if value is None:
            return []
        return [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]

    start = getattr(g, "decoder_start_token_id", None)
    if start is None:
        start = getattr(config, "decoder_start_token_id", None)
    pad = g.pad_token_id if g.pad_token_id is not None else getattr(config, "pad_token_id", None)
    eos = ids(g.eos_token_id)
    bad = [list(w) for w in getattr(g, "bad_words_ids", None) or []]
    left_out = {k: v for k, v in _UNFOLLOWED.items() if getattr(g, k, v) not in (v, None, [], {})}
    if any(len(w) > 1 for w in bad):
        left_out["bad_words_ids"] = None
    return GenerationSpec(
        kind=kind,  # type: ignore[arg-type]
        encoder="encoder" if kind == "encoder-decoder" else None,
        decoder="decoder" if kind == "encoder-decoder" else None,
        cache=cache,
        decoder_start_token_id=int(start) if start is not None and kind == "encoder-decoder" else None,
        eos_token_id=eos,
        pad_token_id=int(pad) if pad is not None else (eos[0] if eos else None),
        forced_bos_token_id=getattr(g, "forced_bos_token_id", None),
        forced_eos_token_id=next(iter(ids(getattr(g, "forced_eos_token_id", None))), None),
        suppress_tokens=ids(getattr(g, "suppress_tokens", None)),
        begin_suppress_tokens=ids(getattr(g, "begin_suppress_tokens", None)),
        max_length=max_length,
        min_length=int(getattr(g, "min_length", 0) or 0),
        min_new_tokens=int(getattr(g, "min_new_tokens", 0) or 0),
        no_repeat_ngram_size=int(getattr(g, "no_repeat_ngram_size", 0) or 0),
        repetition_penalty=float(getattr(g, "repetition_penalty", 1.0) or 1.0),
        bad_words=[w[0] for w in bad if len(w) == 1],
        left_out=left_out,
    )


# generation-config settings that golive's greedy loop does not follow, with their neutral values
_UNFOLLOWED: dict[str, Any] = {
    "forced_decoder_ids": None,
    "encoder_no_repeat_ngram_size": 0,
    "encoder_repetition_penalty": 1.0,
    "sequence_bias": None,
    "exponential_decay_length_penalty": None,
    "renormalize_logits": False,
    "return_timestamps": None,
}


def _source_generate(model, guess: TaskGuess) -> Callable[..., np.ndarray]:
    """The model's own ``generate`` (greedy, its generation_config otherwise), returning the new tokens only."""

    def generate(feeds: dict[str, np.ndarray], max_new_tokens: int, left_out: dict[str, Any] | None = None) -> np.ndarray:
        import torch

        inputs = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items()}
        with torch.no_grad():  # greedy: one beam, no sampling; what golive's loop leaves out, left out here too
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, **(left_out or {}))
        out = out.numpy() if hasattr(out, "numpy") else np.asarray(out.sequences)
        if not guess.encoder_decoder:
            return out[:, feeds["input_ids"].shape[1] :]
        if guess.model_type == "whisper":  # Whisper's generate leaves its start token out already
            return out
        return out[:, 1:]

    return generate
