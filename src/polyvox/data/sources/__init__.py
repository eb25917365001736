"""Text sources for the offline speech corpus.

Every source yields `Message`s: sentences in one language tied to an English pivot by a shared
``group`` id (:mod:`polyvox.data.sources.text`). :mod:`polyvox.data.sources.gettext` reads translated
software messages.
"""

from polyvox.data.sources.gettext import (
    CATALOG_SOURCES,
    LOCALE_TO_FLEURS,
    Catalog,
    collect_messages,
    find_catalogs,
    locale_to_fleurs,
    read_mo,
    reject_reason,
)
from polyvox.data.sources.text import ENGLISH, Message, group_id, normalise

__all__ = [
    "CATALOG_SOURCES",
    "ENGLISH",
    "LOCALE_TO_FLEURS",
    "Catalog",
    "Message",
    "collect_messages",
    "find_catalogs",
    "group_id",
    "locale_to_fleurs",
    "normalise",
    "read_mo",
    "reject_reason",
]
