"""Reports: JSON (with the config and versions that made it), a Markdown table and a per-language plot."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from polyvox import provenance
from polyvox.fileio import atomic_write, atomic_write_text

COLUMNS = ("R@1", "R@5", "R@10", "chance_R@1", "xling_R@1", "xling_BLEU")


def versions() -> dict[str, str]:
    """Versions of polyvox, Python and the libraries that shape results."""
    return provenance.versions(("polyvox", "torch", "transformers", "peft", "accelerate", "faiss-cpu", "sacrebleu",
                                "jiwer"))


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
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return Path(path)


def write_report(result: dict, out_dir: str | Path, name: str = "eval", config: dict | None = None,
                 markdown: Callable[[dict], str] = markdown_table,
                 draw: Callable[[dict, Path], Path] = plot) -> dict[str, Path]:
    """Write ``name.json`` (result + config + versions), ``name.md`` and ``name.png`` into `out_dir`.

    `markdown` and `draw` render the result (default: the retrieval table and plot).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{name}.json", "md": out_dir / f"{name}.md", "png": out_dir / f"{name}.png"}
    atomic_write_text(paths["json"], json.dumps({**result, "config": config, "versions": versions()}, indent=2,
                                                ensure_ascii=False))
    atomic_write_text(paths["md"], markdown(result))
    draw(result, paths["png"])
    return paths


# -- generation (zero-shot prompting of a speech LLM) ------------------------------------------------

GENERATION_TITLES = {"asr": "Speech recognition", "translation": "Speech translation",
                     "intent": "Spoken intent", "heldout": "Held-out instructions",
                     "continuation": "Continuation (BLSP's training prompt)"}
_SCALED = ("WER", "CER", "accuracy", "parsed", "chance")  # fractions, shown in %


def _gfmt(v: Any, key: str) -> str:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return "–" if v is None else str(v)
    if key in _SCALED:
        return f"{100 * v:.1f}"
    return str(v) if isinstance(v, int) else f"{v:.1f}"  # counts stay counts


def _generation_table(task: str, t: dict) -> list[str]:
    """One Markdown table: languages then averages as rows (with 95 % bootstrap intervals where computed),
    system × metric as columns."""
    systems, metrics = list(t["systems"]), t["metrics"]
    extra = [c for c in ("chance", "shots") if any(c in r for r in t["languages"].values())]
    direction = "higher is better" if t["higher_is_better"] else "lower is better"
    head = ["language", "seen", "n", *extra] + [f"{s} {m}" for s in systems for m in metrics]
    scaled = [m for m in [*metrics, *extra] if m in _SCALED]
    note = f"; {', '.join(scaled)} in %" if scaled else ""
    lines = [f"### {_task_title(task)} (headline: {t['headline']}, {direction}{note})", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    def cell(s: str, part: str, key: str, m: str) -> str:
        text = _gfmt(t["systems"][s][part].get(key, {}).get(m), m)
        ci = t["systems"][s].get("intervals", {}).get(key, {}).get(m) if part == "averages" else None
        return f"{text} [{_gfmt(ci[0], m)}, {_gfmt(ci[1], m)}]" if ci else text

    def row(first: list[str], shared: dict, part: str, key: str) -> str:
        cells = first + [_gfmt(shared.get(c), c) for c in extra]
        cells += [cell(s, part, key, m) for s in systems for m in metrics]
        return "| " + " | ".join(cells) + " |"

    for lang, r in t["languages"].items():
        lines.append(row([lang, "yes" if r["seen"] else "no", str(r["n"])], r, "languages", lang))
    for group, r in t["averages"].items():
        lines.append(row([f"**{group} avg** ({r['languages']})", "", ""], r, "averages", group))
    return lines


def _differences_table(t: dict) -> list[str]:
    """Paired differences of the headline metric (system - baseline, same items) with their 95 % intervals;
    the side an interval favours is named, "–" where it contains 0."""
    diffs = t.get("differences") or {}
    if not diffs:
        return []
    m = t["headline"]
    groups = [g for g in ("seen", "unseen", "all") if any(g in d for d in diffs.values())]
    lines = ["", f"Paired differences of {m} (same items, 95 % bootstrap interval; better: the side it favours)", "",
             "| difference | " + " | ".join(groups) + " |", "|---|" + "---|" * len(groups)]
    for name, d in diffs.items():
        cells = [f"{_gfmt(d[g]['mean'], m)} [{_gfmt(d[g]['ci95'][0], m)}, {_gfmt(d[g]['ci95'][1], m)}] "
                 f"{d[g]['better'] or '–'}" if g in d else "" for g in groups]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def generation_markdown(result: dict, title: str = "Zero-shot speech LLM evaluation") -> str:
    """One table per task (per-language rows, seen / unseen / all averages), then the bad lines, if any."""
    lines = [f"## {title}", ""]
    for task, t in result["tasks"].items():
        lines += _generation_table(task, t) + _differences_table(t) + [""]
    if result.get("bad_lines"):
        lines += [f"{len(result['bad_lines'])} item(s) left out for bad audio:", ""]
        lines += [f"- {b['task']}: {b['error']}" for b in result["bad_lines"]] + [""]
    return "\n".join(lines)


def generation_plot(result: dict, path: str | Path) -> Path:
    """One panel per task: each system's headline metric, seen vs unseen averages as grouped bars with their
    95 % bootstrap intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = result["tasks"]
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(4.5 * max(1, len(tasks)), 3.8), squeeze=False)
    for ax, (task, t) in zip(axes[0], tasks.items()):
        metric, systems = t["headline"], list(t["systems"])
        scale = 100 if metric in _SCALED else 1
        x = np.arange(len(systems))
        for j, (group, colour) in enumerate((("seen", "tab:blue"), ("unseen", "tab:orange"))):
            values = [scale * t["systems"][s]["averages"].get(group, {}).get(metric, np.nan) for s in systems]
            ci = [t["systems"][s].get("intervals", {}).get(group, {}).get(metric, [np.nan, np.nan]) for s in systems]
            err = np.abs(np.array([[scale * lo, scale * hi] for lo, hi in ci]).T - np.array(values))  # (2, S)
            ax.bar(x + (j - 0.5) * 0.38, values, 0.38, color=colour, label=group, yerr=err, capsize=2)
        chance = t["averages"].get("all", {}).get("chance")
        if chance is not None:
            ax.axhline(scale * chance, color="black", linestyle="--", linewidth=1, label="chance")
        ax.set_xticks(x, systems, rotation=30, ha="right")
        unit = " (%)" if scale == 100 else ""
        ax.set_ylabel(f"{metric}{unit}, {'higher' if t['higher_is_better'] else 'lower'} is better")
        ax.set_title(_task_title(task))
        ax.legend(fontsize="small")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return Path(path)


def write_generation_report(result: dict, out_dir: str | Path, name: str = "generation",
                            config: dict | None = None) -> dict[str, Path]:
    """`write_report` with the generation tables and plot."""
    return write_report(result, out_dir, name, config, generation_markdown, generation_plot)


def _task_title(task: str) -> str:
    base, _, condition = task.partition(":")
    title = GENERATION_TITLES.get(base, base)
    return f"{title}, {condition} copies of the clips" if condition else title
