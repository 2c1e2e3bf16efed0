"""A progress bar for long steps called from a notebook: an HTML bar updated in place (Jupyter, VS Code, nbclient).

Used by golive.api when no ``on_event`` is given and the caller runs in an IPython kernel; the CLI draws its
own rich bar in a terminal. Nothing is shown elsewhere: the library does not print.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from html import escape

__all__ = ["NotebookBar", "auto_progress", "in_notebook"]


def in_notebook() -> bool:
    """Whether this code runs in an IPython kernel (a notebook), not in a terminal IPython or a script."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:
        return False
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


class NotebookBar:
    """One HTML progress bar, updated in place at most every ``every`` seconds (and at the end)."""

    def __init__(self, what: str, every: float = 0.25) -> None:
        from IPython.display import HTML, display

        self._HTML, self.what, self.every = HTML, what, every
        self.last_shown = 0.0
        self.step, self.message, self.done, self.total = "", "starting", 0, None
        self.handle = display(HTML(self._render("running")), display_id=True)

    def _render(self, state: str) -> str:
        bar = (
            f"<progress value='{self.done or 0}' max='{self.total}'></progress> {self.done or 0}/{self.total}"
            if self.total
            else ("<progress></progress>" if state == "running" else "")
        )
        color = {"running": "#1565c0", "done": "#1b5e20", "failed": "#b71c1c"}[state]
        return (
            f"<div class='golive-progress' data-state='{state}'><b style='color:{color}'>{escape(self.what)}: {state}</b> "
            f"{bar} <code>{escape(self.step)}</code> {escape(self.message[:160])}</div>"
        )

    def update(self, event) -> None:
        self.step, self.message, self.done, self.total = event.step, event.message, event.done, event.total
        now = time.monotonic()
        if now - self.last_shown >= self.every:
            self.last_shown = now
            self.handle.update(self._HTML(self._render("running")))

    def close(self, failed: bool) -> None:
        if not failed and self.total:
            self.done = self.total
        self.handle.update(self._HTML(self._render("failed" if failed else "done")))


@contextlib.contextmanager
def auto_progress(on_event, what: str) -> Iterator:
    """``on_event`` as given; or, in a notebook with none given, a bar's update function."""
    if on_event is not None or not in_notebook():
        yield on_event
        return
    bar = NotebookBar(what)
    failed = True
    try:
        yield bar.update
        failed = False
    finally:
        bar.close(failed)
