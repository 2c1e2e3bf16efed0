"""Rich rendering of convert results, verify reports and model summaries."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    if x != x or x in (float("inf"), float("-inf")):
        return str(x)
    return "0" if x == 0 else f"{x:.3g}"


# Transforms as the tune table names them (a legend under it says the full names): the chains stay whole in 100 columns
SHORT = {
    "torchscript_export": "ts-export",
    "ort_fusion": "ort-fuse",
    "onnxscript_fusion": "oxs-fuse",
    "int8_dynamic": "i8-dyn",
    "int8_dynamic_per_channel": "i8-dyn-ch",
    "int8_per_token": "i8-token",
    "int8_static_qdq": "i8-static",
    "int8_qdq_matmul": "i8-qdq-mm",
    "int8_blockwise": "i8-block",
    "int8_blockwise_128": "i8-block128",
    "int8_dynamic_keep_sensitive": "i8-dyn-keep",
    "fp16": "fp16",
    "split_skip_layernorm": "split-sln",
    "gelu_approximation": "gelu-approx",
    "fixed_shape": "fixed-shape",
    "ort_optimized_graph": "aot-graph",
}


def short_chain(transforms: list[str]) -> str:
    """A transform chain in the table's short names, breakable between links."""
    return " +".join(SHORT.get(t, t) for t in transforms) or "original"


def short_session(c) -> str:
    """The candidate's session settings without what its transforms imply (the optimizers a transform undid)."""
    from golive.optimize import get_transform

    implied = {o for t in c.transforms if t in SHORT for o in get_transform(t).disables}
    session = c.session.model_copy(update={"disabled_optimizers": [o for o in c.session.disabled_optimizers if o not in implied]})
    return session.describe()


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def render_convert(console: Console, result) -> None:
    record = result.record
    if result.skipped:
        console.print(
            f"[dim]convert: skipped — {escape(str(result.output_dir))} is complete and its spec unchanged[/]", highlight=False
        )
    console.print(f"[bold]{record.framework}[/] ({record.source_kind}) → [bold]{escape(str(result.model_path))}[/]")
    line = f"exporter: [bold]{record.exporter}[/]"
    if record.fallback_reason:
        line += f"  [yellow](fell back: {escape(record.fallback_reason)})[/]"
    console.print(line, highlight=False)
    opset = record.opset.get("ai.onnx")
    if record.task:
        console.print(f"task: [bold]{escape(record.task)}[/] ({escape(record.task_reason or '')})", highlight=False)
    for name, r in result.parts.items() or [(None, record)]:
        console.print(
            (f"{name} ({r.exporter} exporter): " if name else f"opset: {opset}   ")
            + "inputs: "
            + ", ".join(str(s) for s in r.inputs)
            + "   outputs: "
            + ", ".join(str(s) for s in r.outputs),
            markup=False,
            highlight=False,
        )
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    if result.verification is None:
        console.print("verification: [yellow]skipped[/] (--no-verify)")
    else:
        render_verify(console, result.verification)


def render_verify(console: Console, report) -> None:
    title = f"verification against the {report.reference}, {len(report.runs)} runs"
    table = Table(title=escape(title), title_justify="left")
    for col in ("output", "max abs", "max rel", "p99 abs", "mismatch", "labels", "rtol/atol", "verdict", "would pass with"):
        table.add_column(col, justify="left" if col in ("output", "verdict", "would pass with") else "right")
    for o in report.outputs:
        verdict = "[green]pass[/]" if o.passed else f"[red]FAIL[/] {escape(o.note or '')}"
        tol = "exact" if o.rtol == o.atol == 0 else f"{_num(o.rtol)}/{_num(o.atol)}"
        table.add_row(
            escape(o.name),
            _num(o.max_abs),
            _num(o.max_rel),
            _num(o.p99_abs),
            f"{o.mismatch_share:.2%}",
            "-" if o.label_agreement is None else f"{o.label_agreement:.2%}",
            tol,
            verdict,
            "" if o.passed or o.note else f"--atol {_num(o.atol_needed)} or --rtol {_num(o.rtol_needed)}",
        )
    console.print(table)
    sizes: dict[str, tuple[int, int]] = {}
    for run in report.runs:
        key = ",".join(f"{k}={v}" for k, v in run.sizes.items()) or "static shapes"
        key = f"{run.part} {key}" if run.part else key
        ok, total = sizes.get(key, (0, 0))
        sizes[key] = (ok + run.passed, total + 1)
    console.print("runs: " + "   ".join(f"{k}: {ok}/{n} passed" for k, (ok, n) in sizes.items()), markup=False, highlight=False)
    for line in report.failures()[:10]:
        console.print(f"  [red]✗[/] {escape(line)}", highlight=False)
    for note in report.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    if report.generation is not None:
        mark = "[green]✓[/]" if report.generation.passed else "[red]✗[/]"
        console.print(f"{mark} {escape(report.generation.summary())}", highlight=False)
    console.print(
        "[bold green]PASSED[/]"
        if report.passed
        else "[bold red]FAILED[/]: the ONNX model does not compute what the reference computes (see above)"
    )


def render_summary(console: Console, s) -> None:
    if s.task:
        console.print(f"task: {escape(s.task)}", highlight=False)
    if s.parts:  # a model converted as parts: each part, then the totals
        for name, part in s.parts.items():
            console.rule(f"part {escape(name)}")
            render_summary(console, part)
        console.rule()
        console.print(
            f"{len(s.parts)} parts ({', '.join(s.parts)}): {_bytes(s.file_bytes + s.external_bytes)}, "
            f"{s.node_count} nodes, {s.parameters:,} parameters in all",
            highlight=False,
        )
        return
    console.print(
        f"[bold]{escape(s.path)}[/]  ({_bytes(s.file_bytes)}"
        + (f" + {_bytes(s.external_bytes)} external data in {', '.join(s.external_data)}" if s.external_data else "")
        + ")",
        highlight=False,
    )
    console.print(
        f"producer: {s.producer or '-'}   IR version: {s.ir_version}   opsets: "
        + ", ".join(f"{d} {v}" for d, v in s.opsets.items()),
        highlight=False,
    )
    io = Table(title="inputs and outputs", title_justify="left")
    for col in ("", "name", "type", "shape", *(("from",) if s.origins else ())):
        io.add_column(col)
    for kind, specs in (("in", s.inputs), ("out", s.outputs)):
        for t in specs:
            shape = "?" if t.shape is None else "[" + ", ".join("?" if d is None else str(d) for d in t.shape) + "]"
            io.add_row(kind, escape(t.name), t.dtype, escape(shape), *((escape(s.origins.get(t.name, "")),) if s.origins else ()))
    console.print(io)
    console.print(
        f"nodes: {s.node_count}"
        + (f" (+{s.subgraph_node_count} in subgraphs)" if s.subgraph_node_count else "")
        + f"   parameters: {s.parameters:,} in {s.initializers} initializers ({_bytes(s.parameter_bytes)})"
        + (f"   functions: {s.functions}" if s.functions else ""),
        highlight=False,
    )
    ops = Table(title="operators", title_justify="left")
    ops.add_column("op type")
    ops.add_column("count", justify="right")
    for op, n in s.op_types.items():
        ops.add_row(op, str(n))
    console.print(ops)
    for domain, ops_in_domain in s.custom_ops.items():
        console.print(
            f"[yellow]custom operators[/] {escape(domain)}: {escape(', '.join(ops_in_domain))} "
            "(ONNX Runtime runs them only with their implementation: --custom-ops)",
            highlight=False,
        )
    if s.metadata:
        console.print("metadata: " + ", ".join(f"{k}={v}" for k, v in s.metadata.items()), markup=False, highlight=False)


def render_tune(console: Console, result) -> None:
    if result.skipped:
        console.print(
            f"[dim]tune: skipped — {escape(str(result.output_dir))} is complete and its spec unchanged[/]", highlight=False
        )
    if result.report is None:  # a model tuned as parts: each part's table, then the parts together
        for name, part in result.parts.items():
            console.rule(f"part {escape(name)}")
            render_tune(console, part.model_copy(update={"skipped": False}))
        console.rule()
        console.print(
            f"[bold]{len(result.parts)} parts tuned; one call of each: {result.speedup:.2f}x the ONNX Runtime defaults[/]",
            highlight=False,
        )
        console.print(
            f"sessions: golive.load_sessions({escape(repr(str(result.output_dir)))})"
            f"\nreport: {escape(str(result.output_dir / 'report.html'))}",
            highlight=False,
        )
        return
    report = result.report
    import os

    model = os.path.normpath(result.output_dir / report.model)  # the report names it relative to the tune folder
    throughput = report.objective == "throughput"
    table = Table(
        title=f"tuning {escape(model)} for {report.objective} ({len(report.candidates)} candidates in {report.elapsed_s:.0f} s)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    figure = "items/s" if throughput else "p50 ms"
    for col in ("#", "id", "transforms", "session", figure, "measured", "cosine", "verdict"):
        table.add_column(
            col, justify="right" if col in ("#", figure, "cosine") else "left", no_wrap=col != "transforms" and col != "session"
        )
    colors = {"passed": "green", "rejected": "red", "failed": "magenta", "invalid": "dim", "skipped": "dim"}
    shown = 12
    why: list[str] = []
    used: set[str] = set()
    for rank, c in enumerate(report.ranked()[:shown], 1):
        f = c.figures
        cos = c.min_cosine
        mark = "★" if c.id == report.best.id else (" base" if c.id == report.baseline.id else "")
        used.update(c.transforms)
        value = ("-" if not f.get("throughput") else f"{f['throughput']:.1f}") if throughput else _num(c.shown_p50())
        table.add_row(
            str(rank),
            c.id + mark,
            escape(short_chain(c.transforms)),
            escape(short_session(c)),
            value,
            escape(report.measured(c)),
            "-" if cos is None else f"{cos:.5f}",
            f"[{colors.get(c.status, 'white')}]{c.status}[/]",
        )
        if c.reason and c.status != "passed":
            why.append(f"{c.id} {c.status}: {c.reason}")
    console.print(table)
    legend = [f"{SHORT[t]}={t}" for t in SHORT if t in used and SHORT[t] != t]
    if legend:
        console.print(f"[dim]transforms: {escape(', '.join(legend))}[/]", highlight=False)
    width = min(console.width, 100)
    for line in why:  # one line each: the whole reason is in report.html
        console.print(escape(line if len(line) <= width else line[: width - 1] + "…"), highlight=False, soft_wrap=True)
    console.print(
        "[dim]rows in the order of the decision: ★ best first (won in alternating rounds, confirmed against the baseline), "
        "then passed by the median of their measurements; 'measured': how many times, ± half their range; noisy: taken "
        "in a noisy spell[/]",
        highlight=False,
    )
    if len(report.candidates) > shown:
        counts: dict[str, int] = {}
        for c in report.candidates:
            counts[c.status] = counts.get(c.status, 0) + 1
        console.print(
            f"… {len(report.candidates) - shown} more in report.json / report.html; all: "
            + ", ".join(f"{n} {s}" for s, n in counts.items()),
            highlight=False,
        )
    for note in report.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    console.print(f"[bold]{escape(report.summary())}[/]")
    for line in report.placement_lines():
        console.print(f"placement: {escape(line)}", highlight=False)
    if report.time_by_op:
        shown = report.time_by_op[:6]
        console.print(
            "where the time goes (ms per run, baseline → best): "
            + ", ".join(f"{escape(r['op_type'])} {_num(r['baseline_ms'])} → {_num(r['best_ms'])}" for r in shown),
            highlight=False,
        )
    console.print(
        f"best model: {escape(str(result.output_dir / 'best'))}  (golive.load_session({escape(repr(str(result.output_dir)))}))"
        f"\nreport: {escape(str(result.output_dir / 'report.html'))}",
        highlight=False,
    )


def render_profile(console: Console, report) -> None:
    from golive.profiling import _ms, node_rows, op_type_rows, summary_line

    for name, part in report.parts.items():  # a model converted as parts: each part's profile
        console.rule(f"part {escape(name)}")
        render_profile(console, part)

    rows = report.comparison()
    if rows:
        table = Table(title="where the time goes, by op type (ms per run)", title_justify="left")
        for col in ("op type", "baseline", "best"):
            table.add_column(col, justify="left" if col == "op type" else "right")
        for op, a, b in rows[:15]:
            table.add_row(escape(op), _ms(a * 1000 if a is not None else None), _ms(b * 1000 if b is not None else None))
        console.print(table)
    for p in report.profiles:
        console.print(f"[bold]{escape(summary_line(p))}[/]")
        ops = Table(title=f"{p.label}: op types", title_justify="left")
        for col in ("op type", "nodes", "ms", "share"):
            ops.add_column(col, justify="left" if col == "op type" else "right")
        for row in op_type_rows(p)[:12]:
            ops.add_row(*(escape(str(c)) for c in row))
        console.print(ops)
        nodes = Table(title=f"{p.label}: slowest nodes", title_justify="left")
        for col in ("node", "op type", "provider", "ms", "share", "inputs", "stands for"):
            nodes.add_column(col, justify="right" if col in ("ms", "share") else "left")
        for row in node_rows(p, 10):
            nodes.add_row(*(escape(str(c)) for c in row))
        console.print(nodes)
        if p.not_timed:
            console.print(
                f"{len(p.not_timed)} node(s) of the optimized graph not timed: {escape(p.not_timed[0].why)}", highlight=False
            )
