"""FLEURS language codes: the language vocabulary of every polyvox manifest."""

from __future__ import annotations

import functools

# FLEURS code -> English name. Codes are `<iso639>_<region>` (a script is inserted for cmn/yue).
FLEURS: dict[str, str] = {
    "af_za": "Afrikaans", "am_et": "Amharic", "ar_eg": "Arabic", "as_in": "Assamese",
    "ast_es": "Asturian", "az_az": "Azerbaijani", "be_by": "Belarusian", "bg_bg": "Bulgarian",
    "bn_in": "Bengali", "bs_ba": "Bosnian", "ca_es": "Catalan", "ceb_ph": "Cebuano",
    "ckb_iq": "Sorani Kurdish", "cmn_hans_cn": "Mandarin Chinese", "cs_cz": "Czech", "cy_gb": "Welsh",
    "da_dk": "Danish", "de_de": "German", "el_gr": "Greek", "en_us": "English",
    "es_419": "Spanish", "et_ee": "Estonian", "fa_ir": "Persian", "ff_sn": "Fula",
    "fi_fi": "Finnish", "fil_ph": "Filipino", "fr_fr": "French", "ga_ie": "Irish",
    "gl_es": "Galician", "gu_in": "Gujarati", "ha_ng": "Hausa", "he_il": "Hebrew",
    "hi_in": "Hindi", "hr_hr": "Croatian", "hu_hu": "Hungarian", "hy_am": "Armenian",
    "id_id": "Indonesian", "ig_ng": "Igbo", "is_is": "Icelandic", "it_it": "Italian",
    "ja_jp": "Japanese", "jv_id": "Javanese", "ka_ge": "Georgian", "kam_ke": "Kamba",
    "kea_cv": "Kabuverdianu", "kk_kz": "Kazakh", "km_kh": "Khmer", "kn_in": "Kannada",
    "ko_kr": "Korean", "ky_kg": "Kyrgyz", "lb_lu": "Luxembourgish", "lg_ug": "Ganda",
    "ln_cd": "Lingala", "lo_la": "Lao", "lt_lt": "Lithuanian", "luo_ke": "Luo",
    "lv_lv": "Latvian", "mi_nz": "Maori", "mk_mk": "Macedonian", "ml_in": "Malayalam",
    "mn_mn": "Mongolian", "mr_in": "Marathi", "ms_my": "Malay", "mt_mt": "Maltese",
    "my_mm": "Burmese", "nb_no": "Norwegian Bokmål", "ne_np": "Nepali", "nl_nl": "Dutch",
    "nso_za": "Northern Sotho", "ny_mw": "Nyanja", "oc_fr": "Occitan", "om_et": "Oromo",
    "or_in": "Odia", "pa_in": "Punjabi", "pl_pl": "Polish", "ps_af": "Pashto",
    "pt_br": "Portuguese", "ro_ro": "Romanian", "ru_ru": "Russian", "sd_in": "Sindhi",
    "sk_sk": "Slovak", "sl_si": "Slovenian", "sn_zw": "Shona", "so_so": "Somali",
    "sr_rs": "Serbian", "sv_se": "Swedish", "sw_ke": "Swahili", "ta_in": "Tamil",
    "te_in": "Telugu", "tg_tj": "Tajik", "th_th": "Thai", "tr_tr": "Turkish",
    "uk_ua": "Ukrainian", "umb_ao": "Umbundu", "ur_pk": "Urdu", "uz_uz": "Uzbek",
    "vi_vn": "Vietnamese", "wo_sn": "Wolof", "xh_za": "Xhosa", "yo_ng": "Yoruba",
    "yue_hant_hk": "Cantonese", "zu_za": "Zulu",
}


class UnknownLanguageError(ValueError):
    """A language code that is not a FLEURS code."""


def check_lang(code: str) -> str:
    """Return `code` if it is a FLEURS language code, else raise a clear error.

    Args:
        code: a FLEURS code such as ``fr_fr`` or ``cmn_hans_cn``.
    """
    if code in FLEURS:
        return code
    close = [c for c in FLEURS if c.split("_")[0] == str(code).split("_")[0].lower()]
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UnknownLanguageError(f"unknown language code {code!r}: polyvox uses FLEURS codes like 'fr_fr'{hint}")


def language_name(code: str) -> str:
    """English name of a FLEURS language code."""
    return FLEURS[check_lang(code)]


# CLDR scripts that stand for several Unicode scripts (a Japanese text mixes kanji and both kana).
_SCRIPT_SETS = {"Hans": ("Hani",), "Hant": ("Hani",), "Jpan": ("Hani", "Hira", "Kana"), "Kore": ("Hang", "Hani")}


@functools.cache
def scripts(code: str) -> tuple[str, ...]:
    """The Unicode scripts a FLEURS language is written in (ISO 15924 codes, as ``\\p{Script=...}`` of the `regex`
    module reads them): CLDR's likely script of the language and region, through `langcodes`; e.g. ``pl_pl`` ->
    ``("Latn",)``, ``ja_jp`` -> ``("Hani", "Hira", "Kana")``."""
    import langcodes

    script = langcodes.Language.get(check_lang(code).replace("_", "-")).maximize().script
    return _SCRIPT_SETS.get(script, (script,))
