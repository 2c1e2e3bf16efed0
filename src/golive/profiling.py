"""Where the time goes: ONNX Runtime's per-node profile of a session, drawn on the graph ONNX Runtime really runs.

The model is loaded with the session's own settings twice: once saving the optimized graph (the nodes the profile
names: fused Attention, SkipLayerNormalization, QAttention...), once with ONNX Runtime's profiler on. Each optimized
node is traced back to the nodes of the original model it replaced, by the tensors it reads and writes: the removed
original nodes between its inputs and its outputs.
"""

from __future__ import annotations

import html
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from golive._html import table
from golive.providers import short_name
from golive.runtime import SessionConfig, make_session

__all__ = [
    "ORIGIN_GRAPH",
    "NodeTime",
    "OpTypeTime",
    "ProfileRecord",
    "ProfileReport",
    "profile_model",
    "render_graph_svg",
    "save_graph_only",
    "trace_back",
]

PROFILE_RECORD = "profile.json"


class NodeTime(BaseModel):
    name: str
    op_type: str
    provider: str
    mean_us: float  # per run, over the timed runs
    min_us: float
    share: float  # of the sum of node times
    inputs: list[str] = Field(default_factory=list)  # type[shape] of each input, as the profiler saw them
    outputs: list[str] = Field(default_factory=list)
    replaced: list[str] = Field(default_factory=list)  # names of the original nodes it stands for
    replaced_ops: dict[str, int] = Field(default_factory=dict)  # their op types, counted
    in_graph: bool = True  # False: the profiler timed a node the saved graph does not hold (a compiled subgraph)


class OpTypeTime(BaseModel):
    op_type: str
    nodes: int
    total_us: float
    share: float


class GraphNode(BaseModel):
    """A node of the optimized graph, for drawing it: its op type and the nodes it reads from."""

    name: str
    op_type: str
    after: list[str] = Field(default_factory=list)


class NotTimed(BaseModel):
    name: str
    op_type: str
    why: str


class ProfileRecord(BaseModel):
    """One session profiled: per node, per op type, and how much of the run the nodes account for."""

    version: Literal[1] = 1
    label: str  # model | best | baseline
    model: str  # the model profiled (relative to the profile folder when inside the run folder)
    optimized_model: str  # the optimized graph the figures are drawn on, in the profile folder
    session: SessionConfig
    runs: int
    warmup: int
    total_us: float  # sum of the node times of one run (mean over runs)
    wall_us: float  # median latency of one run, without the profiler
    profiled_wall_us: float  # median latency of one run with it
    coverage: float  # node times / the run's span (median over runs): the rest is what the profiler cannot see
    overhead: float  # profiled_wall_us / wall_us
    nodes: list[NodeTime]  # slowest first
    op_types: list[OpTypeTime]
    not_timed: list[NotTimed] = Field(default_factory=list)
    original_nodes: int  # nodes of the model its nodes are traced back to
    optimized_nodes: int
    origin: str | None = None  # that model, when not the one profiled (a tune's best: the model it was tuned from)
    graph: list[GraphNode] = Field(default_factory=list)  # the optimized graph's nodes and edges, in order

    def top(self, n: int = 10) -> list[NodeTime]:
        return self.nodes[:n]


class ProfileReport(BaseModel):
    """profile.json: the profiles of one target (a tune folder: its best and its baseline)."""

    version: Literal[1] = 1
    target: str
    profiles: list[ProfileRecord]
    parts: dict[str, ProfileReport] = Field(
        default_factory=dict,
        description="a model converted as parts: each part's profile, written in the subfolder of its name (its paths "
        "relative to that subfolder)",
    )

    def get(self, label: str) -> ProfileRecord | None:
        return next((p for p in self.profiles if p.label == label), None)

    def flat(self) -> ProfileReport:
        """Every profile in one list, a part's labelled by its part (``decoder best``)."""
        if not self.parts:
            return self
        profiles = [
            p.model_copy(update={"label": f"{name} {p.label}"}) for name, part in self.parts.items() for p in part.profiles
        ]
        return self.model_copy(update={"profiles": [*self.profiles, *profiles], "parts": {}})

    def comparison(self) -> list[tuple[str, float | None, float | None]]:
        """Baseline vs best by op type (ms per run), for a tune folder."""
        return compare(self.get("baseline"), self.get("best"))

    def _repr_html_(self) -> str:
        return render_html(self)


def compare(baseline: ProfileRecord | None, best: ProfileRecord | None) -> list[tuple[str, float | None, float | None]]:
    """(op type, baseline ms, best ms) by op type, the largest first."""
    if baseline is None or best is None:
        return []
    a = {o.op_type: o.total_us / 1000 for o in baseline.op_types}
    b = {o.op_type: o.total_us / 1000 for o in best.op_types}
    names = sorted(set(a) | set(b), key=lambda k: -max(a.get(k, 0.0), b.get(k, 0.0)))
    return [(k, a.get(k), b.get(k)) for k in names]


# ---------------------------------------------------------------- tracing optimized nodes back


def trace_back(original: Any, optimized: Any, limit: int = 64) -> dict[str, list[str]]:
    """For each node of the optimized graph (an ``onnx.GraphProto``), the original nodes it stands for. A node kept
    as it was maps to itself. A new node (a fusion) claims the original nodes no longer in the optimized graph that
    lie near it: reached backwards from its outputs or forwards from its inputs through removed nodes only, never
    past a tensor another optimized node computes. A removed node reached from several new nodes goes to the
    nearest (fewest steps), so a mask computation goes to the node that took it over, not to every attention."""
    from collections import deque

    original_names = {n.name for n in original.node if n.name}
    kept = {n.name for n in optimized.node if n.name} & original_names
    produced_by = {out: node for node in original.node for out in node.output if out}
    consumers: dict[str, list[Any]] = {}
    for node in original.node:
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(node)
    computed_by = {out: n.name for n in optimized.node for out in n.output if out}
    claims: dict[str, tuple[int, int, str]] = {}  # removed node -> (steps, order, new node)
    result: dict[str, list[str]] = {}
    for order, node in enumerate(optimized.node):
        if node.name in original_names:
            result[node.name] = [node.name]
            continue
        result[node.name] = []
        mine = set(node.output) | set(node.input)
        steps: dict[str, int] = {}

        def boundary(tensor: str, node: Any = node) -> bool:
            return computed_by.get(tensor, node.name) != node.name or (tensor in node.input and tensor not in node.output)

        back = deque((t, 1) for t in node.output if t)
        while back:
            tensor, d = back.popleft()
            source = produced_by.get(tensor)
            if source is None or source.name in kept or source.name in steps or d > limit:
                continue
            if tensor not in node.output and boundary(tensor):
                continue
            steps[source.name] = d
            back.extend((t, d + 1) for t in source.input if t and t not in mine)
        ahead = deque((t, 1) for t in node.input if t)
        reached: set[str] = set()
        while ahead:
            tensor, d = ahead.popleft()
            for user in consumers.get(tensor, []):
                if user.name in kept or user.name in reached or d > limit:
                    continue
                reached.add(user.name)
                steps[user.name] = min(steps.get(user.name, d), d)
                ahead.extend((t, d + 1) for t in user.output if t and not boundary(t) and t not in node.output)
        for name, d in steps.items():
            if name not in claims or (d, order) < claims[name][:2]:
                claims[name] = (d, order, node.name)
    for name, (_, _, owner) in claims.items():
        result[owner].append(name)
    return result


def _graph_nodes(graph: Any) -> list[GraphNode]:
    producer = {out: n.name for n in graph.node for out in n.output if out}
    return [
        GraphNode(name=n.name, op_type=n.op_type, after=sorted({producer[t] for t in n.input if t in producer}))
        for n in graph.node
    ]


# ---------------------------------------------------------------- measuring


def _shape_text(entries: list[dict[str, Any]]) -> list[str]:
    return [f"{dtype}[{','.join(str(d) for d in dims)}]" for entry in entries for dtype, dims in entry.items()]


def _timed(session: Any, feeds: dict[str, np.ndarray], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - t) * 1e6)
    return statistics.median(times)


ORIGIN_GRAPH = "origin-graph.onnx"


def save_graph_only(model: str | Path, target: str | Path) -> None:
    """The model's nodes and tensor names without its weights: enough to trace an optimized graph back to it."""
    import onnx

    proto = onnx.load(str(model), load_external_data=False)
    proto.graph.ClearField("initializer")
    onnx.save(proto, str(target))


def _named(model: Path, target: Path) -> Path:
    """The model with every node named (OP_INDEX for an unnamed one): the saved optimized graph keeps the names and
    the profiler reports them, so the two can be matched. The model itself when all its nodes have names."""
    import onnx

    proto = onnx.load(str(model), load_external_data=False)
    if all(n.name for n in proto.graph.node):
        return model
    proto = onnx.load(str(model))
    taken = {n.name for n in proto.graph.node}
    for i, node in enumerate(proto.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
    large = sum(t.ByteSize() for t in proto.graph.initializer) > 1_500_000_000  # protobuf's 2 GB limit
    onnx.save(proto, str(target), save_as_external_data=large, location=target.name + ".data" if large else None)
    return target


def profile_model(
    model: str | Path,
    config: SessionConfig,
    feeds: dict[str, np.ndarray],
    folder: str | Path,
    *,
    label: str = "model",
    runs: int = 20,
    warmup: int = 5,
    origin: str | Path | None = None,
) -> ProfileRecord:
    """Profile ``model`` under ``config`` on ``feeds``: ``runs`` timed runs after ``warmup``. Writes the optimized
    graph to ``folder/optimized-LABEL.onnx``. Its nodes are traced back to ``origin`` (default: ``model`` itself; a
    tune's best: the model it was tuned from)."""
    import onnx

    folder = Path(folder)
    source = Path(model)
    model = _named(source, folder / f"named-{label}.onnx")
    optimized_path = folder / f"optimized-{label}.onnx"
    make_session(model, config, optimized_model_path=optimized_path)
    original = onnx.load(str(model), load_external_data=False).graph
    if origin is not None and Path(origin) != source:
        original = onnx.load(str(_named(Path(origin), folder / f"named-{label}-origin.onnx")), load_external_data=False).graph
    optimized = onnx.load(str(optimized_path), load_external_data=False).graph
    replaced = trace_back(original, optimized)
    op_of = {n.name: n.op_type for n in original.node}

    plain = make_session(model, config)
    for _ in range(warmup):
        plain.run(None, feeds)
    wall = _timed(plain, feeds, runs)
    del plain

    with tempfile.TemporaryDirectory(prefix="golive-profile-") as tmp:
        session = make_session(model, config, profile_prefix=str(Path(tmp) / "trace"))
        for _ in range(warmup):
            session.run(None, feeds)
        profiled_wall = _timed(session, feeds, runs)
        events = json.loads(Path(session.end_profiling()).read_text())
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    timed = spans[warmup:]
    per_run: dict[str, list[float]] = {}
    meta: dict[str, dict[str, Any]] = {}
    for index, (start, end) in enumerate(timed):
        for e in events:
            if e.get("cat") != "Node" or not (start <= e["ts"] <= end) or not e["name"].endswith("_kernel_time"):
                continue
            name = e["name"][: -len("_kernel_time")]
            runs_of = per_run.setdefault(name, [0.0] * len(timed))
            runs_of[index] += float(e["dur"])
            meta.setdefault(name, e.get("args", {}))
    means = {name: statistics.fmean(v) for name, v in per_run.items()}
    # per run: the node times against that run's own span (ONNX Runtime's model_run), the median over the runs
    sums = [sum(v[i] for v in per_run.values()) for i in range(len(timed))]
    coverage = (
        statistics.median(s / (end - start) for s, (start, end) in zip(sums, timed, strict=True) if end > start) if timed else 0.0
    )
    total = sum(means.values()) or 1.0
    in_graph = {n.name for n in optimized.node}
    nodes = []
    for name, mean in sorted(means.items(), key=lambda kv: -kv[1]):
        args = meta[name]
        originals = replaced.get(name, [])
        counted: dict[str, int] = {}
        for o in originals:
            counted[op_of.get(o, "?")] = counted.get(op_of.get(o, "?"), 0) + 1
        nodes.append(
            NodeTime(
                name=name,
                op_type=str(args.get("op_name", "?")),
                provider=str(args.get("provider", "?")),
                mean_us=mean,
                min_us=min(per_run[name]),
                share=mean / total,
                inputs=_shape_text(args.get("input_type_shape", [])),
                outputs=_shape_text(args.get("output_type_shape", [])),
                replaced=originals,
                replaced_ops=counted,
                in_graph=name in in_graph,
            )
        )
    by_op: dict[str, list[NodeTime]] = {}
    for n in nodes:
        by_op.setdefault(n.op_type, []).append(n)
    op_types = sorted(
        (
            OpTypeTime(op_type=op, nodes=len(ns), total_us=sum(n.mean_us for n in ns), share=sum(n.mean_us for n in ns) / total)
            for op, ns in by_op.items()
        ),
        key=lambda o: -o.total_us,
    )
    not_timed = [
        NotTimed(
            name=n.name,
            op_type=n.op_type,
            why="no kernel of its own ran in the timed runs (ONNX Runtime runs it as part of another node, "
            "or another provider runs it inside a compiled subgraph)",
        )
        for n in optimized.node
        if n.name not in means
    ]
    return ProfileRecord(
        label=label,
        model=str(source),  # the caller records it relative to its folder
        optimized_model=optimized_path.name,
        session=config,
        runs=len(timed),
        warmup=warmup,
        total_us=sum(means.values()),
        wall_us=wall,
        profiled_wall_us=profiled_wall,
        coverage=coverage,
        overhead=profiled_wall / wall if wall else 0.0,
        nodes=nodes,
        op_types=op_types,
        not_timed=not_timed,
        original_nodes=len(original.node),
        origin=str(origin) if origin is not None else None,
        graph=_graph_nodes(optimized),
        optimized_nodes=len(optimized.node),
    )


def profile_dump(
    model: str,
    config: dict[str, Any],
    inputs: str,
    folder: str,
    label: str,
    runs: int,
    origin: str | None = None,
    warmup: int = 5,
) -> dict[str, Any]:
    """The worker's side of :func:`profile_model`: JSON in and out, inputs from an .npz."""
    with np.load(inputs, allow_pickle=False) as z:
        feeds = {k: z[k] for k in z.files}
    record = profile_model(model, SessionConfig(**config), feeds, folder, label=label, runs=runs, warmup=warmup, origin=origin)
    return record.model_dump(mode="json")


# ---------------------------------------------------------------- rendering


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.3f}"


def summary_line(p: ProfileRecord) -> str:
    return (
        f"{p.label}: {p.total_us / 1000:.3f} ms in {len(p.nodes)} nodes per run, {p.coverage:.0%} of the "
        f"{p.profiled_wall_us / 1000:.3f} ms wall time with the profiler on ({p.wall_us / 1000:.3f} ms without: "
        f"overhead {p.overhead:.2f}x); {p.optimized_nodes} nodes run for the model's {p.original_nodes}"
    )


def op_type_rows(p: ProfileRecord) -> list[list[Any]]:
    return [[o.op_type, o.nodes, _ms(o.total_us), f"{o.share:.1%}"] for o in p.op_types]


def node_rows(p: ProfileRecord, n: int = 15) -> list[list[Any]]:
    rows = []
    for node in p.top(n):
        if node.replaced == [node.name]:
            stands = "itself"
        elif node.replaced:
            stands = ", ".join(f"{k} {v}" for k, v in node.replaced_ops.items())
        else:
            stands = "not traced (no tensor of it in the original graph)"
        rows.append(
            [
                node.name,
                node.op_type,
                short_name(node.provider),
                _ms(node.mean_us),
                f"{node.share:.1%}",
                " ".join(node.inputs[:2]),
                stands,
            ]
        )
    return rows


_HEAT = ["#fff7ec", "#fdd49e", "#fc8d59", "#d7301f", "#7f0000"]  # cold to hot: share of the time, relative to the top


def heat(fraction: float) -> str:
    """The heat colour of a node whose time is ``fraction`` (0..1) of the slowest node's."""
    return _HEAT[min(len(_HEAT) - 1, max(0, round(fraction * (len(_HEAT) - 1))))]


def render_graph_svg(p: ProfileRecord, width: int = 140, height: int = 24, gap: int = 14) -> str:
    """The optimized graph drawn in layers (a node below every node it reads from), each node filled by its share
    of the time; each node carries its figures as data attributes and a tooltip; a legend gives the scale."""
    times = {n.name: n for n in p.nodes}
    top = max((n.share for n in p.nodes), default=0.0) or 1.0
    rank: dict[str, int] = {}
    for g in p.graph:  # the saved graph is in topological order
        rank[g.name] = 1 + max((rank.get(a, 0) for a in g.after), default=-1)
    rows: dict[int, list[str]] = {}
    for g in p.graph:
        rows.setdefault(rank[g.name], []).append(g.name)
    where: dict[str, tuple[float, float]] = {}
    for r, names in rows.items():
        for i, name in enumerate(names):
            where[name] = (10 + i * (width + gap), 40 + r * (height + gap))
    w = 20 + max((len(v) for v in rows.values()), default=1) * (width + gap)
    h = 60 + (max(rows, default=0) + 1) * (height + gap)
    parts = [
        f"<svg class='profile-graph' data-label='{html.escape(p.label)}' width='{max(w, 420)}' height='{h}' "
        f"xmlns='http://www.w3.org/2000/svg' font-family='sans-serif' font-size='11'>"
    ]
    for i, colour in enumerate(_HEAT):  # the legend
        parts.append(f"<rect x='{10 + i * 40}' y='8' width='40' height='12' fill='{colour}' stroke='#999'/>")
    parts.append(f"<text x='{20 + len(_HEAT) * 40}' y='18'>0 → {top:.1%} of the time per node</text>")
    for g in p.graph:
        x1, y1 = where[g.name]
        for a in g.after:
            x0, y0 = where[a]
            parts.append(
                f"<line x1='{x0 + width / 2:.0f}' y1='{y0 + height:.0f}' x2='{x1 + width / 2:.0f}' y2='{y1:.0f}' stroke='#bbb'/>"
            )
    for g in p.graph:
        x, y = where[g.name]
        t = times.get(g.name)
        share = t.share if t else 0.0
        fill = heat(share / top) if t else "#eeeeee"
        figures = (
            f"{t.mean_us / 1000:.3f} ms mean, {t.min_us / 1000:.3f} ms min, {t.share:.1%} of the time, "
            f"{short_name(t.provider)}; stands for: {', '.join(t.replaced) or 'not traced'}"
            if t
            else "not timed"
        )
        parts.append(
            f"<g class='pnode' data-name='{html.escape(g.name)}' data-op='{html.escape(g.op_type)}' "
            f"data-share='{share:.5f}' data-fill='{fill}' data-figures='{html.escape(figures)}'>"
            f"<title>{html.escape(g.name)} ({html.escape(g.op_type)}): {html.escape(figures)}</title>"
            f"<rect x='{x:.0f}' y='{y:.0f}' width='{width}' height='{height}' rx='4' fill='{fill}' stroke='#555'/>"
            f"<text x='{x + 6:.0f}' y='{y + 16:.0f}' fill='{'#fff' if share / top > 0.6 else '#000'}'>"
            f"{html.escape(g.op_type[:18])}{f' {share:.0%}' if t and share >= 0.01 else ''}</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def render_html(report: ProfileReport) -> str:
    """The op-type tables (and baseline vs best for a tune folder), the top nodes, and the graph coloured by time."""
    if report.parts:
        return "".join(f"<h3>part {html.escape(name)}</h3>{render_html(part)}" for name, part in report.parts.items())
    parts = [f"<div class='golive-profile'><h3>Where the time goes: {html.escape(report.target)}</h3>"]
    rows = report.comparison()
    if rows:
        parts.append("<p>By op type, ms per run: baseline → best</p>")
        parts.append(
            table(
                ["op type", "baseline ms", "best ms"],
                [[k, _ms(a * 1000 if a else None), _ms(b * 1000 if b else None)] for k, a, b in rows],
            )
        )
    for p in report.profiles:
        parts.append(f"<p><b>{html.escape(summary_line(p))}</b></p>")
        parts.append(table(["op type", "nodes", "ms", "share"], op_type_rows(p)))
        parts.append(table(["node", "op type", "provider", "ms", "share", "inputs", "stands for"], node_rows(p, 10)))
        if p.graph:
            parts.append(f"<div style='overflow:auto;max-height:600px'>{render_graph_svg(p)}</div>")
    parts.append("</div>")
    return "".join(parts)
