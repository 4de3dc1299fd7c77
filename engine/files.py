"""Files written so that nothing is ever half-written: temporary file, fsync, rename. A write that fails
(disk full, file-size limit) removes its temporary file, keeps the last good copy and raises
`WriteError`; temporaries left by processes that died mid-write are removed by `remove_stale_temporaries`."""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path

import numpy as np

from engine.errors import RunError


class WriteError(RunError):
    """A file of the run could not be written (disk full, size limit); the last good copy is kept."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise WriteError(f"could not write {path} ({exc.strerror or exc}); the last good copy is kept") from exc


def remove_stale_temporaries(folder: Path) -> None:
    """Temporary files left by processes that died mid-write (kill -9): nobody will finish them."""
    for temporary in folder.glob(".*.tmp"):
        parts = temporary.name.split(".")
        pid = int(parts[-3]) if len(parts) >= 4 and parts[-3].isdigit() else None
        if pid is not None and pid != os.getpid() and not _alive(pid):
            temporary.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, value) -> None:
    atomic_write_text(path, json.dumps(_jsonable(value), indent=2) + "\n")


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
