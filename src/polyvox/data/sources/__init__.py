"""Text sources for the offline speech corpus.

Each source yields parallel text keyed by an English pivot message; see
:mod:`polyvox.data.sources.gettext` for translated software messages.
"""

from polyvox.data.sources.gettext import (
    CATALOG_SOURCES,
    LOCALE_TO_FLEURS,
    Catalog,
    Message,
    collect_messages,
    find_catalogs,
    group_id,
    locale_to_fleurs,
    read_mo,
    reject_reason,
)

__all__ = [
    "CATALOG_SOURCES",
    "LOCALE_TO_FLEURS",
    "Catalog",
    "Message",
    "collect_messages",
    "find_catalogs",
    "group_id",
    "locale_to_fleurs",
    "read_mo",
    "reject_reason",
]
