"""Greedy generation through exported models: a decoder with its key/value cache, or an encoder and such a decoder.

``generate`` follows the rules of Hugging Face's greedy ``generate`` that a model's generation_config.json sets
(start token, end tokens and the padding after them, forced first and last tokens, suppressed tokens), so its tokens
can be compared with the source model's own ``generate``: ``check_generation`` does that and says where they part.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from golive.errors import DataError
from golive.frontends.hf_tasks import GenerationSpec

__all__ = ["GenerationCheck", "check_generation", "generate"]

SINGLE = "model"  # the key of a decoder-only model among the sessions


class GenerationCheck(BaseModel):
    """Greedy generation through the ONNX model(s) against the source model's ``generate`` on the same input."""

    given: str = Field(description="what both were given")
    new_tokens: int = Field(description="tokens asked for")
    equal: bool
    first_divergence: int | None = Field(default=None, description="index of the first new token that differs")
    near_tie: bool = Field(
        default=False,
        description="at the divergence, the two tokens' logits differ by less than the tolerance: float rounding "
        "picked the other of two tied tokens",
    )
    gap: float | None = Field(default=None, description="the logit gap between the two tokens at the divergence")
    source_tokens: list[list[int]] = Field(default_factory=list)
    onnx_tokens: list[list[int]] = Field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.equal or self.near_tie

    def summary(self) -> str:
        rows = len(self.source_tokens)
        if self.equal:
            return (
                f"greedy generation ({self.given}): the {self.new_tokens} new tokens of each of {rows} sequence(s) "
                "equal the source model's generate"
            )
        where = f"tokens equal up to new token {self.first_divergence}"
        if self.near_tie:
            return (
                f"greedy generation ({self.given}): {where}, where two tokens tie within the tolerance (logit gap "
                f"{self.gap:.2g}): float rounding picked the other one; not counted as a failure"
            )
        return f"greedy generation ({self.given}): {where}, then they part (logit gap {self.gap:.3g}): FAILED"


def _past_shape(session, name: str, batch: int) -> tuple[int, ...]:
    for meta in session.get_inputs():
        if meta.name == name:
            shape = list(meta.shape)
            if len(shape) != 4 or not all(isinstance(d, int) for d in (shape[1], shape[3])):
                raise DataError(f"the cache input {name} has shape {shape}; golive expects [batch, heads, past, size]")
            return (batch, int(shape[1]), 0, int(shape[3]))
    raise DataError(f"the decoder has no input {name}", hint="convert the model again with its cache")


def _process(logits: np.ndarray, spec: GenerationSpec, history: np.ndarray, begin: int, last: bool) -> np.ndarray:
    """The logits processors greedy generate applies, from the generation config. ``history``: the tokens so far
    (the prompt, or the decoder's start token, and what was generated); ``begin``: how many of them were given."""
    logits = logits.astype(np.float32, copy=True)
    low = -np.inf
    length = history.shape[1]
    if spec.repetition_penalty != 1.0:
        for row in range(logits.shape[0]):
            seen = np.unique(history[row])
            scores = logits[row, seen]
            logits[row, seen] = np.where(scores < 0, scores * spec.repetition_penalty, scores / spec.repetition_penalty)
    if spec.eos_token_id and (length < spec.min_length or length - begin < spec.min_new_tokens):
        logits[:, spec.eos_token_id] = low
    if spec.no_repeat_ngram_size and length + 1 >= spec.no_repeat_ngram_size:
        n = spec.no_repeat_ngram_size
        for row in range(logits.shape[0]):
            tokens = history[row].tolist()
            prefix = tuple(tokens[length - n + 1 :])
            banned = [tokens[i + n - 1] for i in range(length - n + 1) if tuple(tokens[i : i + n - 1]) == prefix]
            logits[row, banned] = low
    if spec.bad_words:
        logits[:, spec.bad_words] = low
    if spec.suppress_tokens:
        logits[:, spec.suppress_tokens] = low
    if spec.begin_suppress_tokens and length == begin:
        logits[:, spec.begin_suppress_tokens] = low
    if spec.forced_bos_token_id is not None and length == 1:
        keep = logits[:, spec.forced_bos_token_id].copy()
        logits[:] = low
        logits[:, spec.forced_bos_token_id] = keep if np.all(np.isfinite(keep)) else 0
    if spec.forced_eos_token_id is not None and last:
        logits[:] = low
        logits[:, spec.forced_eos_token_id] = 0
    return logits


def generate(
    sessions: Mapping[str, Any],
    spec: GenerationSpec,
    inputs: Mapping[str, np.ndarray],
    max_new_tokens: int,
    *,
    on_step: Callable[[int, np.ndarray], None] | None = None,
) -> np.ndarray:
    """The new tokens (batch, n <= max_new_tokens) of greedy generation: ``inputs`` are the prompt's ``input_ids``
    (and ``attention_mask``, 0 on left padding) for a decoder, or the encoder's inputs for an encoder-decoder.
    ``sessions``: ONNX Runtime sessions by part (``model`` for a decoder-only model). ``on_step(i, logits)`` sees
    each step's processed logits."""
    if max_new_tokens < 1:
        raise DataError("max_new_tokens must be at least 1")
    if spec.kind == "encoder-decoder":
        decoder, feeds = _start_encoder_decoder(sessions, spec, inputs)
    else:
        decoder, feeds = _start_decoder(sessions, spec, inputs)
    history = feeds["input_ids"]  # the prompt (decoder-only) or the start token, then every token generated
    batch, begin = history.shape
    names = [o.name for o in decoder.get_outputs()]
    finished = np.zeros(batch, dtype=bool)
    produced: list[np.ndarray] = []
    mask = feeds.get(spec.attention_mask) if spec.attention_mask else None
    for step in range(max_new_tokens):
        outs = dict(zip(names, decoder.run(None, feeds), strict=True))
        logits = _process(outs["logits"][:, -1, :], spec, history, begin, last=step == max_new_tokens - 1)
        if on_step:
            on_step(step, logits)
        token = logits.argmax(axis=-1).astype(np.int64)
        if spec.eos_token_id and spec.pad_token_id is not None:
            token = np.where(finished, spec.pad_token_id, token)
        produced.append(token)
        history = np.concatenate([history, token[:, None]], axis=1)
        if spec.eos_token_id:
            finished |= np.isin(token, spec.eos_token_id)
        if finished.all() or (spec.max_length is not None and history.shape[1] >= spec.max_length):
            break
        feeds = {**feeds, **{past: outs[present] for past, present in spec.cache}, "input_ids": token[:, None]}
        if mask is not None and spec.attention_mask:
            mask = np.concatenate([mask, np.ones((batch, 1), dtype=mask.dtype)], axis=1)
            feeds[spec.attention_mask] = mask
        if spec.position_ids:
            feeds[spec.position_ids] = feeds[spec.position_ids][:, -1:] + 1
    return np.stack(produced, axis=1)


def _start_decoder(sessions: Mapping[str, Any], spec: GenerationSpec, inputs: Mapping[str, np.ndarray]):
    decoder = sessions[spec.decoder or SINGLE]
    if "input_ids" not in inputs:
        raise DataError(
            "a decoder generates from a prompt: give its input_ids (and an attention_mask, 0 on left padding)",
            hint="golive.generate(folder, {'input_ids': ids}, max_new_tokens=32), ids an int64 array [batch, tokens]",
        )
    ids = np.asarray(inputs["input_ids"], dtype=np.int64)
    batch = ids.shape[0]
    mask = np.asarray(inputs.get("attention_mask", np.ones_like(ids)), dtype=np.int64)
    feeds: dict[str, np.ndarray] = {"input_ids": ids}
    if spec.attention_mask:
        feeds[spec.attention_mask] = mask
    if spec.position_ids:  # as generate makes them: counted over the mask, 1 on the padding
        positions = np.cumsum(mask, axis=1) - 1
        feeds[spec.position_ids] = np.where(mask == 0, 1, positions).astype(np.int64)
    for past, _ in spec.cache:
        feeds[past] = np.zeros(_past_shape(decoder, past, batch), dtype=np.float32)
    return decoder, feeds


def _start_encoder_decoder(sessions: Mapping[str, Any], spec: GenerationSpec, inputs: Mapping[str, np.ndarray]):
    encoder, decoder = sessions[spec.encoder or "encoder"], sessions[spec.decoder or "decoder"]
    wanted = {i.name: i.type for i in encoder.get_inputs()}
    missing = [n for n in wanted if n not in inputs]
    if missing:
        raise DataError(
            f"the encoder needs {', '.join(missing)}",
            hint="give the encoder's inputs: " + ", ".join(f"{n} ({t})" for n, t in wanted.items()),
        )
    feeds_in = {n: np.asarray(inputs[n]).astype(_NUMPY.get(t, np.float32), copy=False) for n, t in wanted.items()}
    encoded = dict(zip([o.name for o in encoder.get_outputs()], encoder.run(None, feeds_in), strict=True))
    batch = next(iter(encoded.values())).shape[0]
    if spec.decoder_start_token_id is None:
        raise DataError(
            "the model's generation config names no decoder_start_token_id, the token its decoder starts from",
            hint="set decoder_start_token_id in the folder's generation_config.json (or config.json) and convert again",
        )
    feeds: dict[str, np.ndarray] = {"input_ids": np.full((batch, 1), spec.decoder_start_token_id, dtype=np.int64)}
    for output, past in spec.cross:
        feeds[past] = encoded[output]
    if spec.encoder_mask:
        source, target = spec.encoder_mask
        feeds[target] = np.asarray(inputs[source], dtype=np.int64)
    for past, _ in spec.cache:
        feeds[past] = np.zeros(_past_shape(decoder, past, batch), dtype=np.float32)
    return decoder, feeds


_NUMPY = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float16)": np.float16}


def check_generation(
    source_generate: Callable[..., np.ndarray],
    sessions: Mapping[str, Any],
    spec: GenerationSpec,
    inputs: dict[str, np.ndarray],
    new_tokens: int,
    *,
    atol: float,
    rtol: float,
) -> GenerationCheck:
    """Greedy generation through ``sessions`` against ``source_generate`` on the same ``inputs``."""
    steps: list[np.ndarray] = []
    ours = generate(sessions, spec, inputs, new_tokens, on_step=lambda i, logits: steps.append(logits))
    theirs = np.asarray(source_generate(inputs, new_tokens, spec.left_out))
    given = ", ".join(f"{k} {list(v.shape)}" for k, v in inputs.items())
    if spec.left_out:
        given += "; left out on both sides: " + ", ".join(spec.left_out)
    width = max(ours.shape[1], theirs.shape[1])
    a = np.full((ours.shape[0], width), -1, dtype=np.int64)
    b = np.full_like(a, -1)
    a[:, : ours.shape[1]] = ours
    b[: theirs.shape[0], : theirs.shape[1]] = theirs
    differs = np.nonzero((a != b).any(axis=0))[0]
    check = GenerationCheck(
        given=given,
        new_tokens=new_tokens,
        equal=not len(differs),
        source_tokens=theirs.tolist(),
        onnx_tokens=ours.tolist(),
    )
    if len(differs):
        at = int(differs[0])
        check.first_divergence = at
        if at < len(steps) and at < ours.shape[1] and at < theirs.shape[1]:
            row = int(np.nonzero(a[:, at] != b[:, at])[0][0])
            logits = steps[at][row]
            mine, other = logits[a[row, at]], logits[b[row, at]]
            check.gap = float(abs(mine - other)) if np.isfinite(mine) and np.isfinite(other) else float("inf")
            check.near_tie = check.gap <= atol + rtol * float(abs(mine))
        else:
            check.gap = float("inf")
    return check
