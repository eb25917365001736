"""Translated software messages from Debian packages, fetched with ``apt-get download``.

A handful of Debian packages hold nothing but translation catalogs of big desktop programs; together
they add ~500k sentence-like English -> X pairs in ~120 languages to what a stock machine has.
Each ``.deb`` is downloaded once into the polyvox cache (``<cache>/sources/debian``) and only its
``usr/share/locale/**.mo`` files are unpacked (with ``dpkg-deb --fsys-tarfile``, read by `tarfile`).
Folders and ``.deb`` files a user already has can be given instead of downloading.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path
from urllib.parse import unquote

from polyvox.data.sources.catalogs import Catalog, find_catalogs
from polyvox.fileio import default_cache_dir, temp_dir

log = logging.getLogger(__name__)

PACKAGES: tuple[str, ...] = ("vlc-l10n", "evolution-common", "gimp-data", "libgtk-3-common", "pidgin-data")
"""Debian packages whose translation catalogs are read."""

_LOCALE_PREFIX = "usr/share/locale/"
_DEB_NAME = re.compile(r"^(?P<name>[^_]+)_(?P<version>[^_]+)_(?P<arch>[^_]+)\.deb$")


class DebianSourceError(RuntimeError):
    """A Debian package that cannot be fetched or unpacked; the message says what to do instead."""


def default_dir() -> Path:
    """Where fetched packages and their catalogs are kept: ``<polyvox cache>/sources/debian``."""
    return default_cache_dir() / "sources" / "debian"


def parse_deb_name(path: str | Path) -> tuple[str, str]:
    """``(package, version)`` from a ``<name>_<version>_<arch>.deb`` file name (``%3a`` is an epoch colon)."""
    m = _DEB_NAME.match(Path(path).name)
    if m is None:
        raise DebianSourceError(f"{path}: not a Debian package file name (<name>_<version>_<arch>.deb)")
    return m["name"], unquote(m["version"])


def download(packages: tuple[str, ...], dest: Path) -> list[Path]:
    """Fetch the ``.deb`` of each package not yet in `dest` with ``apt-get download``; returns all of them."""
    dest.mkdir(parents=True, exist_ok=True)
    have = {parse_deb_name(p)[0]: p for p in sorted(dest.glob("*.deb"))}
    missing = [p for p in packages if p not in have]
    if missing:
        if shutil.which("apt-get") is None:
            raise DebianSourceError(
                f"apt-get is not available to fetch {', '.join(missing)}; on a machine without apt, put the "
                f".deb files into {dest} or drop 'debian' from the corpus sources"
            )
        log.info("fetching %s with apt-get download", ", ".join(missing))
        res = subprocess.run(["apt-get", "download", *missing], cwd=dest, capture_output=True, text=True)
        if res.returncode != 0:
            raise DebianSourceError(
                f"apt-get download {' '.join(missing)} failed (exit {res.returncode}): {res.stderr.strip()[-500:]}\n"
                "Run 'apt-get update' first, or put the .deb files into "
                f"{dest}, or drop 'debian' from the corpus sources."
            )
        have = {parse_deb_name(p)[0]: p for p in sorted(dest.glob("*.deb"))}
    lost = [p for p in packages if p not in have]
    if lost:
        raise DebianSourceError(f"apt-get download gave no .deb for {', '.join(lost)} in {dest}")
    return [have[p] for p in packages]


def unpack_locale(deb: Path, dest: Path) -> Path:
    """Unpack the ``usr/share/locale`` catalogs of one ``.deb`` into ``dest/<name>_<version>/`` (once)."""
    name, version = parse_deb_name(deb)
    target = dest / f"{name}_{version}"
    if target.is_dir():
        return target
    if shutil.which("dpkg-deb") is None:
        raise DebianSourceError(f"dpkg-deb is needed to unpack {deb}; unpack its usr/share/locale by hand instead")
    res = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True)
    if res.returncode != 0:
        raise DebianSourceError(f"{deb}: dpkg-deb cannot read it: {res.stderr.decode(errors='replace').strip()}")
    tmp = temp_dir(dest, f".{name}-")
    try:
        with tarfile.open(fileobj=io.BytesIO(res.stdout)) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.lstrip("./").startswith(_LOCALE_PREFIX)]
            tar.extractall(tmp, members=[m for m in members if m.name.endswith(".mo")], filter="data")
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def debian_catalogs(packages: tuple[str, ...] = PACKAGES, cache_dir: str | Path | None = None) -> list[Catalog]:
    """The ``.mo`` catalogs of `packages`, fetched and unpacked into the cache on first use.

    Source labels are ``debian:<package>:<domain>``; `package_versions` tells which versions were read.

    Raises:
        DebianSourceError: a package cannot be fetched or unpacked (the message says what to do).
    """
    dest = Path(cache_dir) if cache_dir is not None else default_dir()
    out = []
    for deb in download(packages, dest):
        name, _ = parse_deb_name(deb)
        root = unpack_locale(deb, dest)
        out += [Catalog(c.path, c.locale, f"debian:{name}:{c.source.split(':', 1)[1]}") for c in find_catalogs(root)]
    return sorted(out)


def package_versions(packages: tuple[str, ...] = PACKAGES, cache_dir: str | Path | None = None) -> dict[str, str]:
    """Package -> version of the ``.deb`` files present in the cache (empty for ones not fetched)."""
    dest = Path(cache_dir) if cache_dir is not None else default_dir()
    found = dict(parse_deb_name(p) for p in sorted(dest.glob("*.deb"))) if dest.is_dir() else {}
    return {p: found[p] for p in packages if p in found}
