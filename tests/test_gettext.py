"""gettext catalogs as parallel text: .mo parsing, sentence filter, locale mapping, collection."""

from __future__ import annotations

import gettext as std_gettext
import re
import struct
from pathlib import Path

import pytest

from polyvox.data.languages import FLEURS
from polyvox.data.sources.catalogs import (
    LOCALE_TO_FLEURS,
    MoError,
    find_catalogs,
    locale_to_fleurs,
    read_catalog,
    read_mo,
)
from polyvox.data.sources.gettext import collect_messages, reject_reason
from polyvox.data.sources.text import group_id


def write_mo(path: Path, entries: dict[str, str], charset: str = "UTF-8", big_endian: bool = False) -> Path:
    """Write a .mo file by hand (GNU format, no hash table); keys may hold \\x00 (plural) or \\x04 (context)."""
    order = ">" if big_endian else "<"
    header = f"Content-Type: text/plain; charset={charset}\nPlural-Forms: nplurals=2; plural=(n != 1);\n"
    items = sorted([("", header), *entries.items()], key=lambda kv: kv[0].encode(charset))
    ids = [k.encode(charset) for k, _ in items]
    strs = [v.encode(charset) for _, v in items]
    n = len(items)
    o_orig, o_trans = 28, 28 + 8 * n
    pos = o_trans + 8 * n
    blob, orig_tab, trans_tab = b"", [], []
    for table, seq in ((orig_tab, ids), (trans_tab, strs)):
        for s in seq:
            table.append((len(s), pos + len(blob)))
            blob += s + b"\0"
    data = struct.pack(order + "7I", 0x950412DE, 0, n, o_orig, o_trans, 0, 0)
    for length, off in orig_tab + trans_tab:
        data += struct.pack(order + "2I", length, off)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data + blob)
    return path


GOOD = "The file could not be found on the disk."

# ----------------------------------------------------------------------------- filter rules


@pytest.mark.parametrize(
    ("msgid", "msgstr", "reason"),
    [
        ("Could not open %s for reading", "Impossible d'ouvrir %s en lecture", "placeholder"),
        ("Cannot read %(name)s from the disk", "Impossible de lire %(name)s sur le disque", "placeholder"),
        ("Copied {count} files to the folder", "{count} fichiers copiés dans le dossier", "placeholder"),
        ("Copied %d files to the folder", "%d fichiers copiés dans le dossier", "placeholder"),
        ("The program %1 has stopped working", "Le programme %1 a cessé de fonctionner", "placeholder"),
        ("Argument $1 is not a number here", "L'argument $1 n'est pas un nombre ici", "placeholder"),
        ("<b>Warning:</b> the disk is full", "<b>Attention :</b> le disque est plein", "markup"),
        ("Tom &amp; Jerry are both here", "Tom &amp; Jerry sont tous les deux ici", "markup"),
        ("_Open the selected file now", "_Ouvrir le fichier sélectionné", "accelerator"),
        ("&Save the current document now", "&Enregistrer le document courant", "accelerator"),
        ("Open the selected file now", "Ouvrir le fichier _sélectionné", "accelerator"),
        ("The file could not\nbe found on disk", "Le fichier est introuvable sur le disque", "control character"),
        ("The file could not\tbe found on disk", "Le fichier est introuvable sur le disque", "control character"),
        ("Open file", "Ouvrir le fichier", "too few words"),
        (GOOD, GOOD, "untranslated"),
        ("Run git-config --global to set it", "Exécutez git-config --global", "technical"),
        ("Use the GtkWidget class for this", "Utilisez la classe GtkWidget pour cela", "technical"),
        (" ".join(["word"] * 20), " ".join(["mot"] * 20), "too many words"),
        ("This " + "very " * 30 + "long message", "Ce message " + "très " * 30 + "long", "too long"),
        ("-a, --all do not ignore entries", "-a, --all ne pas ignorer", "technical"),
    ],
)
def test_rejects_unspeakable_pairs(msgid: str, msgstr: str, reason: str) -> None:
    assert reject_reason(msgid, msgstr, "fr_fr") == reason


def test_accepts_plain_sentences_and_english_identity() -> None:
    assert reject_reason(GOOD, "Le fichier est introuvable sur le disque.", "fr_fr") is None
    assert reject_reason("Save & close the open documents", "Enregistrer et fermer les documents", "fr_fr") is None
    # English is spoken from the msgid itself, so "identical" is expected there
    assert reject_reason(GOOD, GOOD, "en_us") is None
    assert reject_reason(GOOD, "", "en_us") is None
    assert reject_reason(GOOD, "", "fr_fr") == "empty"


def test_word_and_length_limits_are_configurable() -> None:
    msg, tr = "Please check the network cable connection", "Vérifiez le câble réseau"
    assert reject_reason(msg, tr, "fr_fr") is None
    assert reject_reason(msg, tr, "fr_fr", max_words=5) == "too many words"
    assert reject_reason(msg, tr, "fr_fr", max_chars=30) == "too long"
    assert reject_reason(msg, tr, "fr_fr", min_words=7) == "too few words"


def test_group_id_ignores_case_spacing_and_final_punctuation() -> None:
    g = group_id("The file could not be found.")
    assert re.fullmatch(r"msg-[0-9a-f]{12}", g)
    assert group_id("the file  could not be found") == g
    assert group_id("The file could not be found!") == g
    assert group_id("The file could be found.") != g


# ----------------------------------------------------------------------------- locale mapping


def test_locale_mapping() -> None:
    assert locale_to_fleurs("fr") == ("fr_fr", 0)
    assert locale_to_fleurs("pt_BR") == ("pt_br", 0)
    assert locale_to_fleurs("zh_CN") == ("cmn_hans_cn", 0)
    assert locale_to_fleurs("nb") == ("nb_no", 0)
    assert locale_to_fleurs("nb_NO")[0] == "nb_no" and locale_to_fleurs("nb_NO")[1] > 0
    assert locale_to_fleurs("de_DE.UTF-8")[0] == "de_de"
    assert locale_to_fleurs("sr") == ("sr_rs", 0)
    # other script or other standard: not mixed into the primary language
    for other in ("sr@latin", "pt", "pt_PT", "uz@cyrillic", "en", "en_GB", "pa_PK", "zh_TW", "xx"):
        assert locale_to_fleurs(other) is None, other


def test_every_mapped_locale_is_a_fleurs_code_with_one_primary() -> None:
    primaries: dict[str, list[str]] = {}
    for loc, (code, rank) in LOCALE_TO_FLEURS.items():
        assert code in FLEURS, loc
        if rank == 0:
            primaries.setdefault(code, []).append(loc)
    assert all(len(locs) == 1 for locs in primaries.values()), primaries


# ----------------------------------------------------------------------------- .mo files


ENTRIES = {
    GOOD: "Le fichier est introuvable sur le disque.",
    "Open %s": "Ouvrir %s",
    "One file was deleted\x00Many files were deleted": "Un fichier supprimé\x00Des fichiers supprimés",
    "menu\x04Close the current window now": "Fermer la fenêtre courante",
    "Ça va très bien merci": "Ça va très bien, merci beaucoup",
}


@pytest.mark.parametrize("big_endian", [False, True])
def test_read_mo_matches_stdlib(tmp_path: Path, big_endian: bool) -> None:
    path = write_mo(tmp_path / "fr.mo", ENTRIES, big_endian=big_endian)
    ours = read_mo(path)
    with path.open("rb") as f:
        ref = std_gettext.GNUTranslations(f)
    assert ours[GOOD] == ref.gettext(GOOD) == ENTRIES[GOOD]
    assert ours["Ça va très bien merci"] == ref.gettext("Ça va très bien merci")
    assert ours["menu\x04Close the current window now"] == ref.pgettext("menu", "Close the current window now")
    assert ours["One file was deleted\x00Many files were deleted"].split("\x00")[1] == ref.ngettext(
        "One file was deleted", "Many files were deleted", 5
    )
    assert "charset=UTF-8" in ours[""]


def test_read_mo_decodes_declared_charset(tmp_path: Path) -> None:
    path = write_mo(tmp_path / "de.mo", {"Please close all windows now": "Bitte jetzt alle Fenster schließen"}, "ISO-8859-1")
    assert read_mo(path)["Please close all windows now"] == "Bitte jetzt alle Fenster schließen"


def test_read_mo_rejects_garbage(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mo"
    bad.write_bytes(b"not a catalog at all, sorry")
    with pytest.raises(MoError, match="bad.mo"):
        read_mo(bad)
    truncated = tmp_path / "short.mo"
    truncated.write_bytes(write_mo(tmp_path / "ok.mo", ENTRIES).read_bytes()[:40])
    with pytest.raises(MoError, match="short.mo"):
        read_mo(truncated)


# ----------------------------------------------------------------------------- collection


def test_collect_messages_from_a_folder(tmp_path: Path) -> None:
    root = tmp_path / "locale"
    write_mo(root / "fr" / "LC_MESSAGES" / "app.mo", ENTRIES)
    write_mo(
        root / "fr_FR" / "LC_MESSAGES" / "app.mo",
        {GOOD: "Fichier introuvable sur le disque.", "Please restart the computer now": "Redémarrez l'ordinateur"},
    )
    write_mo(root / "de" / "LC_MESSAGES" / "app.mo", {f"{GOOD[:-1]}!": "Die Datei wurde nicht gefunden."})
    write_mo(root / "sr@latin" / "LC_MESSAGES" / "app.mo", {GOOD: "Datoteka nije pronađena na disku."})
    (root / "bad" / "LC_MESSAGES").mkdir(parents=True)
    (root / "bad" / "LC_MESSAGES" / "x.mo").write_bytes(b"garbage")  # unmapped locale: never read

    got = collect_messages(["fr_fr", "de_de", "sr_rs", "en_us"], sources=(), dirs=[root], progress=False)
    fr = {m.en: m for m in got["fr_fr"]}
    # primary locale wins; secondary fills in; plural, context and placeholder entries are dropped
    assert fr[GOOD].text == "Le fichier est introuvable sur le disque."
    assert fr["Please restart the computer now"].text == "Redémarrez l'ordinateur"
    assert set(fr) == {GOOD, "Please restart the computer now", "Ça va très bien merci"}
    assert fr[GOOD].source == "gettext:app"
    # the same English message (up to final punctuation) is one group across languages
    (de,) = got["de_de"]
    assert de.group == fr[GOOD].group
    assert got["sr_rs"] == []  # sr@latin is another script: not used for sr_rs
    en = {m.text for m in got["en_us"]}
    assert GOOD in en and all(m.en == m.text for m in got["en_us"])
    assert len({m.group for m in got["en_us"]}) == len(got["en_us"])


def test_unknown_source_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown text source 'nope'"):
        collect_messages(["fr_fr"], sources=["nope"], progress=False)


@pytest.mark.skipif(not Path("/usr/share/locale/fr/LC_MESSAGES").is_dir(), reason="no system French catalogs")
def test_system_catalogs_give_many_clean_french_sentences() -> None:
    msgs = collect_messages(["fr_fr"], sources=["system"], progress=False)["fr_fr"]
    assert len(msgs) > 1000
    texts = [m.text for m in msgs]
    assert len(set(t.casefold() for t in texts)) == len(texts)  # deduplicated
    assert not any(re.search(r"%[sd]|<|>|_|\n", t) for t in texts)
    assert all(4 <= len(m.en.split()) for m in msgs)


# ----------------------------------------------------------------------------- .po files

PO = r'''msgid ""
msgstr ""
"Content-Type: text/plain; charset=UTF-8\n"

msgid "Please close all the open windows"
msgstr "Veuillez fermer toutes les fenêtres ouvertes"

#, fuzzy
msgid "The disk is almost completely full"
msgstr "Le disque est presque plein"

msgid "This message has not been translated yet"
msgstr ""

msgctxt "menu"
msgid "Open the selected file now"
msgstr "Ouvrir le fichier sélectionné"

msgid "One file was removed from the list"
msgid_plural "Several files were removed from the list"
msgstr[0] "Un fichier a été retiré de la liste"
msgstr[1] "Plusieurs fichiers ont été retirés de la liste"

#~ msgid "An obsolete message about the old printer"
#~ msgstr "Un message obsolète sur l'ancienne imprimante"
'''


def test_read_po_keeps_only_vouched_translations_in_mo_key_format(tmp_path: Path) -> None:
    path = tmp_path / "fr.po"
    path.write_text(PO, encoding="utf-8")
    got = read_catalog(path)
    assert got["Please close all the open windows"] == "Veuillez fermer toutes les fenêtres ouvertes"
    assert got["menu\x04Open the selected file now"] == "Ouvrir le fichier sélectionné"
    assert got["One file was removed from the list\x00Several files were removed from the list"].split("\x00") == [
        "Un fichier a été retiré de la liste", "Plusieurs fichiers ont été retirés de la liste"]
    # fuzzy, untranslated and obsolete entries are not vouched for by a translator
    assert set(got) == {"", "Please close all the open windows", "menu\x04Open the selected file now",
                        "One file was removed from the list\x00Several files were removed from the list"}
    with pytest.raises(MoError, match="not a gettext catalog"):
        read_catalog(tmp_path / "fr.txt")
    broken = tmp_path / "broken.po"
    broken.write_text('msgid "a"\nmsgstr "b"\nmsgstr "c"\n', encoding="utf-8")
    with pytest.raises(MoError, match="broken.po"):
        read_catalog(broken)


def test_po_layouts_are_found_and_a_po_beside_its_mo_is_read_once(tmp_path: Path) -> None:
    (tmp_path / "myapp" / "po").mkdir(parents=True)
    (tmp_path / "myapp" / "po" / "fr.po").write_text(PO, encoding="utf-8")
    (tmp_path / "myapp" / "po" / "POTFILES.po").write_text(PO, encoding="utf-8")  # not a locale: ignored
    lc = tmp_path / "locale" / "de" / "LC_MESSAGES"
    write_mo(lc / "other.mo", {"Please close all the open windows": "Bitte schließen Sie alle offenen Fenster"})
    (lc / "other.po").write_text(PO, encoding="utf-8")  # its source; the .mo is what is read
    cats = find_catalogs(tmp_path)
    assert [(c.path.relative_to(tmp_path).as_posix(), c.locale, c.source) for c in cats] == [
        ("locale/de/LC_MESSAGES/other.mo", "de", "gettext:other"),
        ("myapp/po/fr.po", "fr", "gettext:myapp"),
    ]
    got = collect_messages(["fr_fr", "de_de"], sources=(), dirs=[tmp_path], progress=False)
    assert [m.text for m in got["fr_fr"]] == ["Veuillez fermer toutes les fenêtres ouvertes"]
    assert [m.text for m in got["de_de"]] == ["Bitte schließen Sie alle offenen Fenster"]
    assert got["fr_fr"][0].group == got["de_de"][0].group
