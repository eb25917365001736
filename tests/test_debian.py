"""Debian translation packages as a catalog source: fetching, unpacking, labels and clear failures."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from test_gettext import write_mo

from polyvox.data.sources import debian
from polyvox.data.sources.gettext import collect_messages

needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is needed to build a test .deb")


def build_deb(tmp: Path, name: str, version: str, catalogs: dict[str, dict[str, str]]) -> Path:
    """A real .deb (built with dpkg-deb) holding usr/share/locale/<locale>/LC_MESSAGES/<name>.mo files."""
    root = tmp / f"build-{name}"
    for locale, entries in catalogs.items():
        write_mo(root / "usr/share/locale" / locale / "LC_MESSAGES" / f"{name}.mo", entries)
    (root / "usr/share/doc").mkdir(parents=True)
    (root / "usr/share/doc/readme.txt").write_text("not a catalog")
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: polyvox <polyvox@example.org>\n"
        "Description: test translations\n"
    )
    out = tmp / "debs"
    out.mkdir(exist_ok=True)
    deb = out / f"{name}_{version.replace(':', '%3a')}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)], check=True, capture_output=True)
    return deb


def test_parse_deb_name() -> None:
    assert debian.parse_deb_name("vlc-l10n_3.0.24-0+deb12u1_all.deb") == ("vlc-l10n", "3.0.24-0+deb12u1")
    assert debian.parse_deb_name("/x/gimp-data_2%3a2.10.34-1_all.deb") == ("gimp-data", "2:2.10.34-1")
    with pytest.raises(debian.DebianSourceError, match="not a Debian package file name"):
        debian.parse_deb_name("gimp-data.tar.gz")


@needs_dpkg
def test_packages_in_the_cache_are_unpacked_once_and_labelled(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    fr = {"Please close all the open windows": "Veuillez fermer toutes les fenêtres ouvertes"}
    de = {"Please close all the open windows": "Bitte schließen Sie alle offenen Fenster"}
    for deb in (build_deb(tmp_path, "app-l10n", "1:2.0-1", {"fr": fr, "de": de}), build_deb(tmp_path, "tool-data", "0.5", {"fr": fr})):
        shutil.move(deb, cache / deb.name)

    cats = debian.debian_catalogs(("app-l10n", "tool-data"), cache_dir=cache)
    assert [(c.locale, c.source) for c in cats] == [
        ("de", "debian:app-l10n:app-l10n"), ("fr", "debian:app-l10n:app-l10n"), ("fr", "debian:tool-data:tool-data")]
    assert all(c.path.is_relative_to(cache / "app-l10n_1:2.0-1") or "tool-data_0.5" in str(c.path) for c in cats)
    assert not list(cache.rglob("readme.txt"))  # only catalogs are unpacked
    assert debian.package_versions(("app-l10n", "tool-data", "absent"), cache) == {"app-l10n": "1:2.0-1", "tool-data": "0.5"}

    # a second call reuses the unpacked folders (even with dpkg-deb gone)
    (cache / "app-l10n_1:2.0-1" / "marker").write_text("kept")
    assert debian.debian_catalogs(("app-l10n", "tool-data"), cache_dir=cache) == cats
    assert (cache / "app-l10n_1:2.0-1" / "marker").exists()

    # the catalogs feed the parallel-text collector like any other folder
    got = collect_messages(["fr_fr", "de_de"], sources=(), dirs=[cache / "app-l10n_1:2.0-1"], progress=False)
    assert got["fr_fr"][0].group == got["de_de"][0].group


def test_missing_packages_without_apt_get_name_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(debian.shutil, "which", lambda name: None)
    with pytest.raises(debian.DebianSourceError, match=r"apt-get is not available to fetch vlc-l10n.*\.deb files into"):
        debian.debian_catalogs(("vlc-l10n",), cache_dir=tmp_path)


def test_a_failed_download_says_to_update_apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(debian.shutil, "which", lambda name: "/usr/bin/" + name)
    failed = subprocess.CompletedProcess([], 100, "", "E: Unable to locate package vlc-l10n")
    monkeypatch.setattr(debian.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(debian.DebianSourceError, match=r"(?s)Unable to locate package.*apt-get update"):
        debian.debian_catalogs(("vlc-l10n",), cache_dir=tmp_path)


@needs_dpkg
def test_a_corrupt_deb_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "bad-data_1.0_all.deb").write_bytes(b"!<arch>\nnot really")
    with pytest.raises(debian.DebianSourceError, match="bad-data_1.0_all.deb: dpkg-deb cannot read it"):
        debian.debian_catalogs(("bad-data",), cache_dir=tmp_path)
