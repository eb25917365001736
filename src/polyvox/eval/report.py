"""Reports: JSON (with the config and versions that made it), a Markdown table and a per-language plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from polyvox import provenance

COLUMNS = ("R@1", "R@5", "R@10", "chance_R@1", "xling_R@1", "xling_BLEU")


def versions() -> dict[str, str]:
    """Versions of polyvox, Python and the libraries that shape results."""
    return provenance.versions(("polyvox", "torch", "transformers", "peft", "accelerate", "faiss-cpu", "sacrebleu"))


def _fmt(v: Any, key: str) -> str:
    if not isinstance(v, float):
        return "–" if v is None else str(v)
    return f"{v:.1f}" if key.endswith("BLEU") else f"{100 * v:.1f}"


def markdown_table(result: dict, title: str = "Speech → text retrieval") -> str:
    """Per-language rows then seen / unseen / all averages; recalls in %."""
    cols = [c for c in COLUMNS if any(c in r for r in result["languages"].values())]
    lines = [f"### {title}", "", "| language | seen | n | cand. | " + " | ".join(cols) + " |",
             "|---|---|---|---|" + "---|" * len(cols)]
    for lang, r in result["languages"].items():
        cells = [_fmt(r.get(c), c) for c in cols]
        lines.append(f"| {lang} | {'yes' if r['seen'] else 'no'} | {r['n']} | {r['candidates']} | " + " | ".join(cells) + " |")
    for group, r in result["averages"].items():
        cells = [_fmt(r.get(c), c) for c in cols]
        lines.append(f"| **{group} avg** ({r['languages']}) | | | | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: str | Path, metric: str = "R@1") -> Path:
    """Bar chart of `metric` per language (seen vs unseen coloured) with chance marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    langs = list(result["languages"])
    rows = [result["languages"][lang] for lang in langs]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(langs)), 3.5))
    values = [100 * r[metric] for r in rows]
    ax.bar(langs, values, color=["tab:blue" if r["seen"] else "tab:orange" for r in rows])
    ax.scatter(langs, [100 * r["chance_R@1"] for r in rows], color="black", marker="_", s=200, label="chance")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_ylim(0, min(100, max(10, 1.3 * max(values, default=0))))
    ax.set_title("speech → text retrieval (blue: seen in training, orange: unseen)")
    ax.legend(loc="upper right")
    plt.xticks(rotation=45, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def write_report(result: dict, out_dir: str | Path, name: str = "eval", config: dict | None = None) -> dict[str, Path]:
    """Write ``name.json`` (result + config + versions), ``name.md`` and ``name.png`` into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{name}.json", "md": out_dir / f"{name}.md", "png": out_dir / f"{name}.png"}
    paths["json"].write_text(json.dumps({**result, "config": config, "versions": versions()}, indent=2, ensure_ascii=False))
    paths["md"].write_text(markdown_table(result))
    plot(result, paths["png"])
    return paths
