"""Atomic file writes for the discovery outputs."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from procvault.monitor.errors import ConfigError


def atomic(path: str | os.PathLike[str], write: Callable[[str], object]) -> Path:
    """Run ``write`` on a temporary file beside ``path`` (same suffix), then move it to
    ``path`` (mode 0644). ``ConfigError`` if the folder cannot be written."""
    out = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}-", suffix=out.suffix, dir=out.parent)
    except OSError as exc:
        raise ConfigError(f"{out}: cannot write: {exc.strerror}") from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def atomic_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic(path, lambda tmp: Path(tmp).write_bytes(data))
