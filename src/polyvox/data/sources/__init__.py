"""Where polyvox's data comes from.

Text for the offline benchmark: every text source yields `Message`s, sentences in one language tied
to an English pivot by a shared ``group`` id (:mod:`~polyvox.data.sources.text`):
:mod:`~polyvox.data.sources.gettext` (translated software messages from ``.mo``/``.po`` catalogs, read by
:mod:`~polyvox.data.sources.catalogs`, with :mod:`~polyvox.data.sources.debian` fetching Debian's translation
packages),
:mod:`~polyvox.data.sources.udhr` (the Universal Declaration of Human Rights, aligned by article) and
:mod:`~polyvox.data.sources.intents` (spoken commands with intent labels from OpenVoiceOS skills).

Real speech corpora: :mod:`~polyvox.data.sources.corpora` converts FLEURS, CoVoST 2, Common Voice and
plain folders of audio into manifests.
"""

from polyvox.data.sources.catalogs import LOCALE_TO_FLEURS, Catalog, find_catalogs, locale_to_fleurs, read_mo
from polyvox.data.sources.gettext import CATALOG_SOURCES, collect_messages, reject_reason
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
