"""Progress off a terminal: log lines, not bars; a CLI run redirected to a file reads as a log."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from polyvox.progress import Progress


def test_progress_logs_off_a_terminal(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    with caplog.at_level(logging.INFO, logger="polyvox.progress"):
        assert list(Progress(range(5), desc="encoding", unit="utt", every_s=0.0)) == [0, 1, 2, 3, 4]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("encoding: 1/5 utt in ") and "min left" in lines[0]
    assert len(lines) == 6 and lines[-1].startswith("encoding: 5/5 utt") and lines[-1].endswith("done")
    assert "%|" not in capsys.readouterr().err  # no bar in the captured (non-terminal) stream
    caplog.clear()
    bar = Progress(total=3, desc="speech", unit="utt", enabled=False)
    for _ in range(3):
        bar.update()
    bar.close()
    assert caplog.records == []
    with caplog.at_level(logging.INFO, logger="polyvox.progress"):
        bar = Progress(total=10, desc="import", unit="clip", every_s=3600)
        bar.update(4)
        bar.close()
    assert [r.getMessage().split(" in ")[0] for r in caplog.records] == ["import: 4/10 clip"]  # only the last line


def test_cli_log_is_readable(tiny_search, tmp_path) -> None:
    """`polyvox index build > log 2>&1`: polyvox's lines, progress as lines, no bars, no faiss loader noise."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    done = subprocess.run([sys.executable, "-m", "polyvox.cli", "index", "build", "--model", str(tiny_search.model),
                           "--texts", str(tiny_search.manifest), "--out", str(tmp_path / "index")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    log = done.stderr
    assert "embedding: " in log and " done" in log
    for noise in ("\r", "%|", "Loading weights", "faiss.loader", "Traceback"):
        assert noise not in log, noise
