"""What `golive ui` runs with: each setting declared once, with its default and help (the CLI reads both)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["Settings"]


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    home: Path = Field(description="golive home: job store, uploads and run folders (default: $GOLIVE_HOME or ~/.golive).")
    host: str = Field(default="127.0.0.1", description="Address to bind. Anything but a loopback address needs --token.")
    port: int = Field(default=8800, ge=0, le=65535, description="Port to listen on.")
    workers: int = Field(
        default=1, ge=0, description="Jobs run at once by this server (0: none; a separate golive worker runs them)."
    )
    allow_roots: list[Path] = Field(
        default_factory=list,
        description=(
            "A folder whose models and data the pages may name by path (repeat for several). Without one, models are uploaded."
        ),
    )
    token: str | None = Field(
        default=None, description="Token every request must carry (default: $GOLIVE_TOKEN); required off loopback."
    )
    trust_pickle: bool = Field(
        default=False,
        description=(
            "Accept pickled models and code (custom ops, import paths) from the pages. Only when you trust every user of this server."
        ),
    )
    max_upload_mb: float = Field(default=2048.0, gt=0, description="Largest upload accepted, in MB.")

    @field_validator("home")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return Path(v).expanduser().absolute()

    @field_validator("allow_roots")
    @classmethod
    def _real(cls, v: list[Path]) -> list[Path]:
        return [Path(os.path.realpath(os.path.expanduser(r))) for r in v]
