"""Uploads: streamed to disk under a generated name, size-limited, archives unpacked member by member.

An upload lives in HOME/uploads/ID/: ``meta.json`` (original name, size, what it holds) and either the
file itself (``model.EXT``, the extension kept because it tells the framework) or, for a .zip/.tar
archive, the folder it unpacks to. Nothing is half-written: a refused or broken upload leaves no folder.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import stat
import tarfile
import time
import uuid
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from golive._io import folder_in_place
from golive.errors import GoliveError

__all__ = ["ARCHIVE_SUFFIXES", "CODE_SUFFIXES", "PICKLE_SUFFIXES", "Upload", "UploadError", "UploadStore", "under_roots"]

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
CODE_SUFFIXES = (".py", ".so", ".dll", ".dylib")
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
_ID_RE = re.compile(r"^[0-9a-f]{32}$")


class UploadError(GoliveError):
    """An upload refused; ``status`` is the HTTP status it answers with."""

    def __init__(self, message: str, *, hint: str | None = None, status: int = 400) -> None:
        super().__init__(message, hint=hint)
        self.status = status


@dataclass
class Upload:
    id: str
    name: str
    size: int
    path: Path  # the model file, or the folder an archive unpacked to
    kind: str  # "file" or "folder"

    def to_json(self) -> dict:
        return {"id": self.id, "name": self.name, "size": self.size, "kind": self.kind}


def _suffix(name: str) -> str:
    lower = name.lower()
    for s in (".tar.gz",):
        if lower.endswith(s):
            return s
    return PurePosixPath(lower).suffix


class UploadStore:
    def __init__(self, root: Path, *, max_bytes: int, trust_code: bool) -> None:
        self.root = Path(root)
        self.max_bytes, self.trust_code = max_bytes, trust_code

    def sweep(self, older_than: float = 3600.0) -> None:
        """Remove uploads left half-written by a server that was killed mid-upload."""
        for partial in self.root.glob(".*.partial") if self.root.is_dir() else []:
            try:
                if time.time() - partial.stat().st_mtime > older_than:
                    shutil.rmtree(partial, ignore_errors=True)
            except OSError:
                pass

    def check_name(self, name: str) -> str:
        """The upload's original file name, checked before a byte is stored."""
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise UploadError("the upload's file name holds control characters", hint="rename the file")
        base = PurePosixPath(name.replace("\\", "/")).name
        if not base or base in (".", ".."):
            raise UploadError("the upload has no file name", hint="send ?name=FILE.EXT with the upload")
        suffix = _suffix(base)
        if suffix in PICKLE_SUFFIXES and not self.trust_code:
            raise UploadError(
                f"{base} is a pickle: loading it runs any code it carries, so this server refuses it",
                hint="save the model in a safe format (skops, ONNX, TorchScript, a state dict), or start "
                "golive ui with --trust-pickle if you trust every user of this server",
                status=415,
            )
        if suffix in CODE_SUFFIXES and not self.trust_code:
            raise UploadError(
                f"{base} is code ({suffix}): this server does not run uploaded code",
                hint="start golive ui with --trust-pickle if you trust every user of this server",
                status=415,
            )
        if not suffix:
            raise UploadError(
                f"{base} has no file extension, so its format cannot be told",
                hint="name it after its format: .onnx, .pt, .keras, .skops, .txt, .json, .npz, .zip ...",
            )
        return base

    async def save(self, name: str, chunks: AsyncIterator[bytes], declared: int | None = None) -> Upload:
        base = self.check_name(name)
        if declared is not None and declared > self.max_bytes:
            raise UploadError(
                f"the upload is {declared / 2**20:.1f} MB, over this server's limit of {self.max_bytes / 2**20:.0f} MB",
                hint="start golive ui with a larger --max-upload-mb",
                status=413,
            )
        upload_id = uuid.uuid4().hex
        with folder_in_place(self.root / upload_id) as partial:
            suffix = _suffix(base)
            target = partial / ("upload" + suffix)
            size = 0
            with open(target, "wb") as f:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise UploadError(
                            f"the upload is over this server's limit of {self.max_bytes / 2**20:.0f} MB",
                            hint="start golive ui with a larger --max-upload-mb",
                            status=413,
                        )
                    f.write(chunk)
            if size == 0:
                raise UploadError(f"{base} is empty")
            if suffix in ARCHIVE_SUFFIXES:
                # unpacking takes a while: off the event loop, so pages and live logs keep answering
                path, kind = await asyncio.to_thread(self._unpack, target, partial / "folder", base), "folder"
                target.unlink()
            else:
                path, kind = target.with_name("model" + suffix), "file"
                target.rename(path)
            meta = {"name": base, "size": size, "kind": kind, "path": str(path.relative_to(partial))}
            (partial / "meta.json").write_text(json.dumps(meta))
        return self.get(upload_id)

    def _unpack(self, archive: Path, dest: Path, name: str) -> Path:
        """Unpack member by member, refusing absolute paths, ``..``, links and devices; return the model folder
        (the archive's single top folder, if it has one)."""
        dest.mkdir()
        total = 0
        limit = 4 * self.max_bytes  # unpacked size: a small archive must not fill the disk

        def target_of(member: str) -> Path | None:
            p = PurePosixPath(member.replace("\\", "/"))
            if p.is_absolute() or re.match(r"^[A-Za-z]:", member) or ".." in p.parts:
                raise UploadError(
                    f"the archive member {member!r} points outside the archive",
                    hint="archive the folder itself, with relative paths",
                )
            if p.parts and p.parts[0] == "__MACOSX":
                return None
            return dest.joinpath(*p.parts) if p.parts else None

        def count(n: int) -> None:
            nonlocal total
            total += n
            if total > limit:
                raise UploadError(
                    f"the archive unpacks to more than {limit / 2**20:.0f} MB",
                    status=413,
                    hint="start golive ui with a larger --max-upload-mb",
                )

        try:
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as z:
                    for info in z.infolist():
                        out = target_of(info.filename)
                        mode = info.external_attr >> 16
                        if out is None:
                            continue
                        if stat.S_ISLNK(mode):
                            raise UploadError(f"the archive member {info.filename!r} is a link; links are refused")
                        if info.is_dir():
                            out.mkdir(parents=True, exist_ok=True)
                            continue
                        count(info.file_size)
                        out.parent.mkdir(parents=True, exist_ok=True)
                        with z.open(info) as src, open(out, "wb") as dst:
                            shutil.copyfileobj(src, dst, 1 << 20)
            elif tarfile.is_tarfile(archive):
                with tarfile.open(archive) as t:
                    for member in t:
                        out = target_of(member.name)
                        if out is None:
                            continue
                        if member.isdir():
                            out.mkdir(parents=True, exist_ok=True)
                            continue
                        if not member.isfile():
                            raise UploadError(
                                f"the archive member {member.name!r} is not a file or folder (a link or device); refused"
                            )
                        count(member.size)
                        out.parent.mkdir(parents=True, exist_ok=True)
                        reader = t.extractfile(member)
                        if reader is None:  # isfile() above: tarfile gives a reader for every regular file
                            raise UploadError(f"the archive member {member.name!r} cannot be read")
                        with reader, open(out, "wb") as dst:
                            shutil.copyfileobj(reader, dst, 1 << 20)
            else:
                raise UploadError(f"cannot unpack {name}: it is not a readable .zip or .tar archive")
        except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as exc:
            raise UploadError(f"cannot unpack {name}: {exc}") from None
        entries = [p for p in dest.iterdir()]
        if not entries:
            raise UploadError("the archive is empty")
        if len(entries) == 1 and entries[0].is_dir():
            return entries[0]
        return dest

    def get(self, upload_id: str) -> Upload:
        if not _ID_RE.match(upload_id or ""):
            raise UploadError(f"no upload {upload_id!r}", status=404)
        folder = self.root / upload_id
        try:
            meta = json.loads((folder / "meta.json").read_text())
        except (OSError, ValueError):
            raise UploadError(f"no upload {upload_id}", hint="upload the file again", status=404) from None
        return Upload(upload_id, meta["name"], meta["size"], folder / meta["path"], meta["kind"])


def under_roots(path: str, roots: list[Path]) -> Path:
    """``path`` resolved (links followed) when it lies under one of ``roots``; otherwise a refusal."""
    if not roots:
        raise UploadError(
            "this server reads no paths of its own: upload the file instead",
            hint="start golive ui with --allow-root DIR to let it read models under DIR",
            status=403,
        )
    resolved = Path(os.path.realpath(os.path.expanduser(path)))
    for root in roots:
        if resolved == root or root in resolved.parents:
            if not resolved.exists():
                raise UploadError(f"{path} does not exist", status=404)
            return resolved
    raise UploadError(
        f"{path} is not under an allowed root ({', '.join(map(str, roots))})",
        hint="name a path under one of them, or start golive ui with --allow-root for its folder",
        status=403,
    )
