"""Splits by pivot group: all languages' versions of one sentence land in the same split.

A group's split is a pure function of (group id, fractions, seed), so it does not change when
languages or sizes change, and no sentence is trained on in one language and tested in another.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

from polyvox.data.manifest import ManifestError, Utterance

T = TypeVar("T")

DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.7, "test": 0.3}
"""Default share of pivot groups per split."""


def group_unit(group: str, seed: int = 0) -> float:
    """A uniform number in [0, 1) derived from a group id and a seed (stable across runs and machines)."""
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def check_fractions(fractions: Mapping[str, float]) -> None:
    """Raise ValueError unless the fractions are positive and sum to 1."""
    if not fractions:
        raise ValueError("no splits given")
    bad = {k: v for k, v in fractions.items() if not v > 0}
    if bad:
        raise ValueError(f"split fractions must be positive, got {bad}")
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {total:g} from {dict(fractions)}")


def assign_split(group: str, fractions: Mapping[str, float] = DEFAULT_FRACTIONS, seed: int = 0) -> str:
    """The split of a pivot group.

    Args:
        group: pivot id (e.g. ``msg-3f2a…``).
        fractions: split name -> share of groups; must sum to 1.
        seed: changes the assignment.
    """
    check_fractions(fractions)
    u = group_unit(group, seed)
    edge = 0.0
    names = sorted(fractions)  # fixed order, independent of how the mapping was built
    for name in names:
        edge += fractions[name]
        if u < edge:
            return name
    return names[-1]  # only reachable through float rounding at u ~ 1


def split_by_group(
    items: Iterable[T],
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    key: Callable[[T], str | None] = lambda item: item.group,  # type: ignore[attr-defined]
) -> dict[str, list[T]]:
    """Partition items by the split of their group, keeping input order within each split.

    Raises:
        ValueError: an item without a group (it could leak across splits).
    """
    check_fractions(fractions)
    out: dict[str, list[T]] = {name: [] for name in sorted(fractions)}
    for item in items:
        group = key(item)
        if not group:
            raise ValueError(f"item without a group cannot be split by group: {item!r}")
        out[assign_split(group, fractions, seed)].append(item)
    return out


def leaked_groups(utts: Sequence[Utterance]) -> dict[str, list[str]]:
    """Groups that occur in more than one split: group -> sorted split names."""
    splits: dict[str, set[str]] = {}
    for u in utts:
        if u.group is not None:
            splits.setdefault(u.group, set()).add(u.split)
    return {g: sorted(s) for g, s in sorted(splits.items()) if len(s) > 1}


def check_no_leak(utts: Sequence[Utterance]) -> None:
    """Raise `ManifestError` if any pivot group occurs in more than one split."""
    leaks = leaked_groups(utts)
    if leaks:
        sample = ", ".join(f"{g} ({'/'.join(s)})" for g, s in list(leaks.items())[:5])
        raise ManifestError(f"{len(leaks)} group(s) occur in more than one split: {sample}")
