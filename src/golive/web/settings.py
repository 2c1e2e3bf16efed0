"""What `golive ui` was started with."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Settings"]


@dataclass
class Settings:
    home: Path
    host: str = "127.0.0.1"
    port: int = 8800
    workers: int = 1
    allow_roots: list[Path] = field(default_factory=list)
    token: str | None = None
    trust_pickle: bool = False
    max_upload_mb: float = 2048.0

    def __post_init__(self) -> None:
        self.home = Path(self.home).expanduser().absolute()
        self.allow_roots = [Path(os.path.realpath(os.path.expanduser(r))) for r in self.allow_roots]
