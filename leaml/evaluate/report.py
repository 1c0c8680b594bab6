"""Method rows (each a score dict from :func:`leaml.evaluate.matching.score_predictions`) -> a report:
``report.json`` (everything), ``report.md`` (the paper's table layout, percentages) and
``report.png`` (per-category accuracy per method as grouped bars), local or ``s3://``.

"Average" is the mean of the category accuracies, as in the paper's tables; "Overall" is the
accuracy over all questions. Both are printed, and labelled.
"""
from __future__ import annotations

import io
import json

from leaml import storage


def category_order(rows: list[dict], preferred: list[str] | None = None) -> list[str]:
    seen = sorted({c for r in rows for c in r["scores"]["categories"]})
    first = [c for c in (preferred or []) if c in seen]
    return first + [c for c in seen if c not in first]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def render_markdown(rows: list[dict], title: str, categories: list[str], notes: str = "") -> str:
    head = ["Method", *[c.capitalize() for c in categories], "Average", "Overall", "No match", "n"]
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        s = r["scores"]
        cells = [_pct(s["categories"].get(c, {}).get("accuracy")) for c in categories]
        lines.append(
            "| " + " | ".join([r["method"], *cells, _pct(s["mean_of_categories"]),
                               _pct(s["overall"]), _pct(s.get("no_match_rate")), str(s["n"])]) + " |"
        )
    lines += ["", "Accuracy in %. Average = mean of the category accuracies (the paper's); "
              "Overall = accuracy over all questions. No match = answers that match no option; they count as wrong."]
    if notes:
        lines += ["", notes]
    return "\n".join(lines) + "\n"


def render_png(rows: list[dict], title: str, categories: list[str]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [*categories, "average"]
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(groups) + 0.4 * len(rows)), 4.2))
    for i, r in enumerate(rows):
        s = r["scores"]
        vals = [100 * s["categories"].get(c, {}).get("accuracy", 0.0) for c in categories]
        vals.append(100 * s["mean_of_categories"])
        xs = [g + (i - (len(rows) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, vals, width=width, label=r["method"])
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_report(out_dir: str, rows: list[dict], title: str, preferred_categories: list[str] | None = None,
                 meta: dict | None = None, notes: str = "") -> dict[str, str]:
    """Write report.json / report.md / report.png under ``out_dir``; returns their URIs."""
    cats = category_order(rows, preferred_categories)
    paths = {k: storage.join(out_dir, f"report.{k}") for k in ("json", "md", "png")}
    doc = {"title": title, "categories": cats, "rows": rows, "meta": meta or {}}
    storage.write_text(paths["json"], json.dumps(doc, indent=2))
    storage.write_text(paths["md"], render_markdown(rows, title, cats, notes))
    storage.write_bytes(paths["png"], render_png(rows, title, cats))
    return paths
