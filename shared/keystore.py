"""Key and parameter files on disk: atomic writes, 0600 secrets, permission checks.

The crypto modules serialize to plain dicts; this module is the only place
that turns those into files. Secrets are written with mode 0600 from the
moment the file exists (``os.open`` with the mode, never chmod afterwards),
to a temporary file in the same directory that is fsynced and renamed over
the target, so a crash never leaves a half-written key. Reading a secret
refuses files that group or others can access, as ssh does, unless the
caller opts out for mounted secrets whose mode it does not control.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from fedcast.shared.errors import KeyStorageError

__all__ = [
    "PUBLIC_FILE_MODE",
    "SECRET_FILE_MODE",
    "read_json",
    "read_secret_json",
    "write_bytes_atomic",
    "write_json_atomic",
]

SECRET_FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o644


def write_bytes_atomic(path: str | os.PathLike[str], payload: bytes, *, secret: bool) -> Path:
    """Write ``payload`` to ``path`` atomically; mode 0600 if ``secret`` else 0644.

    A temporary file in the same directory (created 0600), fsync, rename over the
    target, fsync of the directory: readers see the old file or the new one, never a
    torn one, and the rename survives a power cut.
    """
    target = Path(path)
    mode = SECRET_FILE_MODE if secret else PUBLIC_FILE_MODE
    try:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700 if secret else 0o755)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)  # created 0600
        try:
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), mode)
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise KeyStorageError(f"cannot write {target}: {exc.strerror}") from exc
    return target


def write_json_atomic(path: str | os.PathLike[str], data: Any, *, secret: bool) -> Path:
    """Write ``data`` as JSON to ``path`` atomically; mode 0600 if ``secret`` else 0644."""
    payload = json.dumps(data, sort_keys=True, indent=1).encode() + b"\n"
    return write_bytes_atomic(path, payload, secret=secret)


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON document; errors become KeyStorageError."""
    target = Path(path)
    try:
        return json.loads(target.read_bytes())
    except OSError as exc:
        raise KeyStorageError(f"cannot read {target}: {exc.strerror}") from exc
    except ValueError as exc:
        raise KeyStorageError(f"{target} is not valid JSON") from exc


def read_secret_json(path: str | os.PathLike[str], *, check_permissions: bool = True) -> Any:
    """Read a secret JSON document, refusing group/other-accessible files by default."""
    target = Path(path)
    if check_permissions:
        try:
            st = target.stat()
        except OSError as exc:
            raise KeyStorageError(f"cannot read {target}: {exc.strerror}") from exc
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyStorageError(
                f"{target} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
                "chmod 600 it"
            )
    return read_json(target)
