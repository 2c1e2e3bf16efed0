"""Nested inputs and outputs of a PyTorch model: tuples, lists and dicts of tensors, keyword-only arguments.

Each leaf tensor is one ONNX input or output, named by its path: the argument's name, then the tuple
index or dict key, joined by dots (``hc.0``, ``hc.1``, ``past.key``). The structure is recorded in
golive.json (JSON), so verify rebuilds the forward call from flat ONNX feeds, and users can see where each
ONNX input and output came from.

A structure node (JSON): a leaf name (str), ``{"tuple": [...]}``, ``{"list": [...]}`` or ``{"dict": {...}}``.
An input structure: ``{"args": [node, ...], "kwargs": {name: node}}``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from golive.errors import InputSpecError

__all__ = ["input_structure", "is_nested", "leaves", "map_leaves", "nest", "output_structure"]


def is_nested(names: list[str]) -> bool:
    return any("." in n for n in names)


def _split(name: str) -> list[str | int]:
    return [int(p) if p.isdigit() else p for p in name.split(".")]


def _tree(paths: list[tuple[list[str | int], str]], where: str) -> Any:
    """A node from (remaining path, leaf name) pairs that all share the prefix ``where``."""
    if len(paths) == 1 and not paths[0][0]:
        return paths[0][1]
    if any(not p for p, _ in paths):
        raise InputSpecError(
            f"{where} is named both as a tensor and as a tuple/dict of tensors",
            hint=f"name the parts {where}.0, {where}.1 (a tuple) or {where}.KEY (a dict), not {where} itself",
        )
    groups: dict[str | int, list] = {}
    for path, leaf in paths:
        groups.setdefault(path[0], []).append((path[1:], leaf))
    keys = list(groups)
    if all(isinstance(k, int) for k in keys):
        if sorted(keys) != list(range(len(keys))):
            raise InputSpecError(
                f"the parts of {where} are numbered {sorted(keys)}: a tuple's parts are 0, 1, ... without gaps",
                hint=f"name them {where}.0, {where}.1, ...",
            )
        return {"tuple": [_tree(groups[i], f"{where}.{i}") for i in range(len(keys))]}
    if any(isinstance(k, int) for k in keys):
        raise InputSpecError(
            f"the parts of {where} mix numbers and names ({', '.join(map(str, keys))})",
            hint="a tuple's parts are numbered, a dict's parts are named",
        )
    return {"dict": {k: _tree(groups[k], f"{where}.{k}") for k in keys}}


def input_structure(names: list[str], forward: Callable | None) -> dict[str, Any]:
    """The call structure of ``forward`` that the flat input ``names`` describe; keyword-only parameters go to kwargs."""
    top: dict[str, list] = {}
    for name in names:
        path = _split(name)
        if not isinstance(path[0], str):
            raise InputSpecError(
                f"input {name!r} starts with a number", hint="start with the forward() argument's name, e.g. hc.0"
            )
        top.setdefault(path[0], []).append((path[1:], name))
    params = {}
    if forward is not None:
        try:
            params = dict(inspect.signature(forward).parameters)
        except (TypeError, ValueError):
            params = {}
    keyword_only = {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY}
    positional = [n for n, p in params.items() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes_varargs = any(p.kind is p.VAR_POSITIONAL for p in params.values())
    unknown = [n for n in top if params and n not in params and not takes_varargs]
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise InputSpecError(
            f"forward() has no argument {', '.join(unknown)}",
            hint="forward() takes " + ", ".join(params) + "; name each input after one of them",
        )
    var_keyword = any(p.kind is p.VAR_KEYWORD for p in params.values())
    args_order = []
    for n in positional:  # positionally up to the first parameter not given; after a gap, by keyword
        if n not in top:
            break
        args_order.append(n)
    after_gap = [n for n in positional[len(args_order) :] if n in top]
    only_positional = [n for n in after_gap if params[n].kind is params[n].POSITIONAL_ONLY]
    if only_positional:
        raise InputSpecError(
            f"forward()'s positional-only argument {only_positional[0]} comes after one not given "
            f"({positional[len(args_order)]})",
            hint="give the inputs of every argument before it too",
        )
    extra = [n for n in top if n not in params]
    if takes_varargs and not var_keyword:
        args_order += extra  # forward(self, *args): the extra names are positional, in the order given
        extra = []
    kwargs = [n for n in top if n not in args_order and (n in keyword_only or n in after_gap or n in extra)]
    return {"args": [_tree(top[n], n) for n in args_order], "kwargs": {n: _tree(top[n], n) for n in kwargs}}


def leaves(node: Any) -> list[str]:
    """Leaf names in the order the exporters flatten them (tuples in order, dicts in key order)."""
    if isinstance(node, str):
        return [node]
    if "args" in node and "kwargs" in node:
        return [n for a in node["args"] for n in leaves(a)] + [n for v in node["kwargs"].values() for n in leaves(v)]
    kind, children = next(iter(node.items()))
    return [n for c in (children.values() if kind == "dict" else children) for n in leaves(c)]


def map_leaves(node: Any, fn: Callable[[str], Any]) -> Any:
    """The structure as Python objects: tuples, lists and dicts, each leaf replaced by ``fn(name)``."""
    if isinstance(node, str):
        return fn(node)
    kind, children = next(iter(node.items()))
    if kind == "dict":
        return {k: map_leaves(v, fn) for k, v in children.items()}
    values = [map_leaves(c, fn) for c in children]
    return tuple(values) if kind == "tuple" else values


def nest(structure: dict[str, Any], values: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
    """(args, kwargs) for forward() from flat ``values`` by leaf name."""
    missing = [n for n in leaves(structure) if n not in values]
    if missing:
        raise InputSpecError(f"no value for input(s) {', '.join(missing)}")
    args = tuple(map_leaves(a, values.__getitem__) for a in structure["args"])
    kwargs = {k: map_leaves(v, values.__getitem__) for k, v in structure["kwargs"].items()}
    return args, kwargs


def output_structure(out: Any, name: str = "output") -> Any:
    """The structure of a model's output, leaves named by path: ``output`` for one tensor, ``output_0``,
    ``output_1.0``, ``output_1.1`` for a nested tuple, ``logits``, ``past.key`` for a dict."""
    import torch

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            return path
        if isinstance(value, dict) or hasattr(value, "to_tuple"):
            items = value.items() if isinstance(value, dict) else zip(value.keys(), value.to_tuple(), strict=True)
            return {"dict": {str(k): walk(v, f"{path}.{k}" if path else str(k)) for k, v in items if v is not None}}
        if isinstance(value, (tuple, list)):
            kind = "tuple" if isinstance(value, tuple) else "list"
            return {kind: [walk(v, f"{path}.{i}" if path else f"{name}_{i}") for i, v in enumerate(value)]}
        raise InputSpecError(
            f"the model returned a {type(value).__name__}; golive exports tensors and tuples, lists and dicts of tensors"
        )

    return walk(out, name if isinstance(out, torch.Tensor) else "")


def describe(structure: Any, *, returned: bool = False) -> dict[str, str]:
    """Where each leaf comes from, in Python terms: ``hc[0]``, ``features['values']``, ``mask (keyword-only)``,
    ``returned[1][0]``, ``returned['logits']``."""
    found: dict[str, str] = {}

    def walk(node: Any, where: str) -> None:
        if isinstance(node, str):
            found[node] = where
            return
        kind, children = next(iter(node.items()))
        items = children.items() if kind == "dict" else enumerate(children)
        for key, child in items:
            walk(child, f"{where}[{key!r}]")

    if returned:
        walk(structure, "returned")
        return found
    for node in structure.get("args", []):
        walk(node, leaves(node)[0].split(".")[0])
    for name, node in structure.get("kwargs", {}).items():
        walk(node, name)
        found.update({leaf: f"{where} (keyword-only)" for leaf, where in found.items() if leaf in leaves(node)})
    return found
