"""HTML primitives for notebooks' ``_repr_html_`` (escaped; no scripts, no external files). Each renderer lives
beside the type it renders and builds on these."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from html import escape
from typing import Any

__all__ = ["box", "escape", "table", "verdict", "when"]

_STYLE = (
    "<style>.golive td,.golive th{border:1px solid #ccc;padding:2px 6px;text-align:left;font-size:12px}"
    ".golive table{border-collapse:collapse;margin:4px 0}.golive th{background:#f0f0f8}"
    ".golive .ok{color:#1b5e20;font-weight:bold}.golive .bad{color:#b71c1c;font-weight:bold}</style>"
)


def table(headers: Iterable[str], rows: Iterable[Iterable[Any]], attrs: str = "") -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table {attrs}><tr>{head}</tr>{body}</table>"


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def box(title: str, body: str) -> str:
    """A titled block with golive's table style (``title`` is HTML: escape what it quotes)."""
    return f"{_STYLE}<div class='golive'><b>{title}</b>{body}</div>"


def verdict(passed: bool | None) -> str:
    if passed is None:
        return "<span>not verified</span>"
    return "<span class='ok'>passed</span>" if passed else "<span class='bad'>FAILED</span>"


def when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else ""
