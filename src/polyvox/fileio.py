"""Atomic file writes: a temp file in the target's folder, then a rename, so readers never see half a file."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def umask() -> int:
    """The process's file-creation mask (read without changing it where Linux shows it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_dir(parent: str | Path, prefix: str = ".tmp-") -> Path:
    """A fresh folder in `parent`, to be renamed into place, with the permissions a plain ``mkdir`` would give
    (`tempfile.mkdtemp` makes it private, 0700, and others could not read what is moved out of it)."""
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    tmp.chmod(0o777 & ~umask())
    return tmp


def atomic_write(path: str | Path, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)`` and move the result to `path` in one rename; the file gets the permissions a plain
    ``open`` would give under the process's umask (not `tempfile`'s private 0600)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """The polyvox cache (models, downloaded sources): ``$POLYVOX_CACHE`` if set, else ``~/.cache/polyvox``."""
    env = os.environ.get("POLYVOX_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "polyvox"


def read_safetensors(path: str | Path, framework: str = "numpy") -> dict:
    """The tensors of a safetensors file (numpy arrays, or torch tensors with ``framework="torch"``); a missing,
    truncated or corrupt file gets an error naming it."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing")
    try:
        with safe_open(str(path), framework="pt" if framework == "torch" else "np") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path}: not a readable safetensors file ({e}); it is truncated or corrupt") from None


def check_writable(path: str | Path, folder: bool = False) -> Path:
    """Refuse an output that cannot be written, before the work that makes it: a file where a folder should go
    (or the reverse), a path below a file, or a folder without write permission. Returns `path`."""
    path = Path(path)
    if path.exists() and folder != path.is_dir():
        raise ValueError(f"cannot write {path}: it is a {'file' if folder else 'folder'}")
    existing = path if folder and path.exists() else path.parent  # a file is (re)written in its folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"cannot write {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {path}: {existing} is not writable")
    return path
