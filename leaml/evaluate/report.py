"""Method rows (:class:`~leaml.records.EvalRow`, of :func:`leaml.evaluate.matching.score_predictions`) -> a report:
``report.json`` (everything), ``report.md`` (the paper's table layout, percentages) and
``report.png`` (per-category accuracy per method as grouped bars), local or ``s3://``.

"Average" is the mean of the category accuracies, as in the paper's tables; "Overall" is the
accuracy over all questions. Both are printed, and labelled. For a real benchmark the Average is
over the paper's columns only (``average_over``: Kvasir-VQA's four findings, without normal /
other; SPORTU's three levels); the other categories are still shown, and each row keeps the mean
over every category as ``mean_of_all_categories``.
"""
from __future__ import annotations

import io
import json

from leaml import storage
from leaml.records import EvalRow


def category_order(rows: list[EvalRow], preferred: list[str] | None = None) -> list[str]:
    seen = sorted({c for r in rows for c in r.scores.categories})
    first = list(dict.fromkeys(c for c in (preferred or []) if c in seen))
    return first + [c for c in seen if c not in first]


def restrict_average(rows: list[EvalRow], categories: list[str]) -> list[EvalRow]:
    """Rows whose ``mean_of_categories`` is the mean over ``categories`` (those a row has); the
    mean over all of its categories moves to ``mean_of_all_categories``."""
    out = []
    for r in rows:
        s = r.scores
        accs = [s.categories[c].accuracy for c in categories if c in s.categories]
        all_mean = s.mean_of_categories if s.mean_of_all_categories is None else s.mean_of_all_categories
        scores = s.model_copy(update={"mean_of_categories": sum(accs) / len(accs) if accs else 0.0,
                                      "mean_of_all_categories": all_mean})
        out.append(r.model_copy(update={"scores": scores}))
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def render_markdown(rows: list[EvalRow], title: str, categories: list[str], notes: str = "",
                    average_over: list[str] | None = None) -> str:
    head = ["Method", *[c.capitalize() for c in categories], "Average", "Overall", "No match", "n"]
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        s = r.scores
        cells = [_pct(s.accuracy(c)) for c in categories]
        lines.append(
            "| " + " | ".join([r.method, *cells, _pct(s.mean_of_categories),
                               _pct(s.overall), _pct(s.no_match_rate), str(s.n)]) + " |"
        )
    average = (f"mean of {', '.join(average_over)} (the paper's columns; other categories are not averaged)"
               if average_over else "mean of the category accuracies (the paper's)")
    lines += ["", f"Accuracy in %. Average = {average}; "
              "Overall = accuracy over all questions. No match = answers that match no option; they count as wrong."]
    if notes:
        lines += ["", notes]
    return "\n".join(lines) + "\n"


def render_png(rows: list[EvalRow], title: str, categories: list[str]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [*categories, "average"]
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(groups) + 0.4 * len(rows)), 4.2))
    for i, r in enumerate(rows):
        s = r.scores
        vals = [100 * (s.accuracy(c) or 0.0) for c in categories]
        vals.append(100 * s.mean_of_categories)
        xs = [g + (i - (len(rows) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, vals, width=width, label=r.method)
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


def write_report(out_dir: str, rows: list[EvalRow], title: str, preferred_categories: list[str] | None = None,
                 meta: dict | None = None, notes: str = "", average_over: list[str] | None = None) -> dict[str, str]:
    """Write report.json / report.md / report.png under ``out_dir``; returns their URIs.
    ``average_over``: the categories the Average is the mean of (None: all)."""
    if average_over:
        rows = restrict_average(rows, average_over)
        preferred_categories = [*average_over, *(preferred_categories or [])]
    cats = category_order(rows, preferred_categories)
    paths = {k: storage.join(out_dir, f"report.{k}") for k in ("json", "md", "png")}
    doc = {"title": title, "categories": cats, "average_over": average_over or cats,
           "rows": [r.model_dump(mode="json") for r in rows], "meta": meta or {}}
    storage.write_text(paths["json"], json.dumps(doc, indent=2))
    storage.write_text(paths["md"], render_markdown(rows, title, cats, notes, average_over))
    storage.write_bytes(paths["png"], render_png(rows, title, cats))
    return paths
