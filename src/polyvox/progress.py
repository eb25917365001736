"""Progress of long work: a bar on a terminal, and a log line every so often when the output is not a terminal
(a log file, CI), so that ``polyvox demo > log`` stays readable and a long stage is never silent."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

from tqdm import tqdm

log = logging.getLogger("polyvox.progress")
T = TypeVar("T")

LOG_EVERY_S = 30.0
"""Seconds between progress lines when the output is not a terminal."""


def setup_logging(verbose: bool = False) -> None:
    """polyvox's log format at INFO (DEBUG when `verbose`), without other libraries' noise: faiss's loader lines
    ("Could not load library with AVX512 support …") only when verbose, and no Hugging Face progress bars
    ("Loading weights …") off a terminal. Call it before transformers is imported."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("faiss.loader").setLevel(logging.DEBUG if verbose else logging.WARNING)
    if not sys.stderr.isatty():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


class Progress(Generic[T]):
    """`tqdm` on a terminal (stderr), else a log line at most every `every_s` seconds and one at the end.

    Args:
        iterable: what to iterate over (or None, and call `update`).
        total: the number of steps (default: ``len(iterable)`` where it has one).
        desc: what is being done, e.g. ``"unit encoding"``.
        unit: what one step is, e.g. ``"utt"``.
        enabled: False shows and logs nothing.
        every_s: seconds between log lines off a terminal.
    """

    def __init__(self, iterable: Iterable[T] | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", enabled: bool = True, every_s: float = LOG_EVERY_S):
        self.iterable, self.desc, self.unit, self.every_s = iterable, desc, unit, every_s
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.bar = tqdm(iterable, total=self.total, desc=desc, unit=unit, disable=None if enabled else True)
        self.logging = enabled and self.bar.disable  # not a terminal: log lines instead of a bar
        self.n, self.start = 0, time.perf_counter()
        self.last = self.start

    def __iter__(self) -> Iterator[T]:
        if not self.logging:
            yield from self.bar
            return
        for x in self.iterable:
            yield x
            self.update()
        self.close()

    def update(self, n: int = 1) -> None:
        self.bar.update(n)
        if not self.logging:
            return
        self.n += n
        now = time.perf_counter()
        if now - self.last >= self.every_s:
            self.last = now
            log.info("%s: %s", self.desc, self._status(now))

    def close(self) -> None:
        self.bar.close()
        if self.logging and self.n:
            log.info("%s: %s, done", self.desc, self._status(time.perf_counter()))
            self.logging = False  # once

    def _status(self, now: float) -> str:
        elapsed = now - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        done = f"{self.n}/{self.total}" if self.total else str(self.n)
        eta = (f", {(self.total - self.n) / rate / 60:.1f} min left" if self.total and rate and self.n < self.total
               else "")
        return f"{done} {self.unit} in {elapsed / 60:.1f} min ({rate:.2f} {self.unit}/s{eta})"
