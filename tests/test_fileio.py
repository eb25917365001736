"""Files polyvox writes are readable by others under the usual umask, and private under a private one."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from polyvox.fileio import atomic_write_text, temp_dir, umask
from polyvox.index import IndexedText, TextIndex
from polyvox.train.checkpoint import save_checkpoint


class Saved(torch.nn.Linear):
    def save(self, folder: Path) -> None:
        torch.save(self.state_dict(), Path(folder) / "weights.pt")


def _modes(root: Path) -> set[tuple[str, int]]:
    return {("dir" if p.is_dir() else "file", stat.S_IMODE(p.stat().st_mode)) for p in [root, *root.rglob("*")]}


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_written_files_follow_the_umask(tmp_path: Path, mask: int, file_mode: int, dir_mode: int) -> None:
    old = os.umask(mask)
    try:
        assert umask() == mask
        out = tmp_path / "out"
        out.mkdir()
        atomic_write_text(out / "report.json", "{}")
        assert stat.S_IMODE((out / "report.json").stat().st_mode) == file_mode
        assert stat.S_IMODE(temp_dir(out).stat().st_mode) == dir_mode
        model = Saved(2, 2)
        opt = torch.optim.AdamW(model.parameters())
        save_checkpoint(out / "run", 1, model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0))
        index = TextIndex(4, "f" * 64)
        index.add(np.eye(1, 4, dtype=np.float32), [IndexedText("a", "a text", "fr_fr")])
        index.save(out / "index")
        for what in ("run", "index"):
            modes = _modes(out / what)
            assert {m for kind, m in modes if kind == "file"} == {file_mode}, what
            assert {m for kind, m in modes if kind == "dir"} == {dir_mode}, what
    finally:
        os.umask(old)


def test_outputs_are_checked_before_the_work(tmp_path: Path) -> None:
    from polyvox.fileio import check_writable

    (tmp_path / "old.tsv").write_text("x")
    assert check_writable(tmp_path / "old.tsv") == tmp_path / "old.tsv"  # an existing file is overwritten
    assert check_writable(tmp_path / "new" / "deeper" / "x.npy")  # folders are made
    assert check_writable(tmp_path / "index", folder=True)
    with pytest.raises(ValueError, match="old.tsv: it is a file"):
        check_writable(tmp_path / "old.tsv", folder=True)
    with pytest.raises(ValueError, match="old.tsv is a file, not a folder"):
        check_writable(tmp_path / "old.tsv" / "x.npy")
