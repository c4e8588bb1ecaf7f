"""Eval reports: JSON with every record, a Markdown summary table, an HTML page with one chart per metric."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

CELL_METRICS = {
    "answer_f1": "answer token F1",
    "answer_contains": "answer contains gold",
    "gold_to_user": "gold reaches the user: the reply as shown (an answer with its evidence line, or a quote) holds it",
    "gold_in_answer_or_quote": "gold in the answer, or in the quote shown instead (no evidence line counted)",
    "gold_passage_shown": "gold passage shown: the answer or quote cites a block holding the gold passage",
    "quoted": "quotes shown: a declined answer quoting the best passage sentence",
    "citation_precision": "citation precision",
    "citation_coverage": "citation coverage",
    "supported_citations": "supported citations",
    "model_markers": "citations the model wrote itself",
    "context_dumps": "context dumps (lower is better)",
    "stale_answers": "stale answers: an outdated fact shown (lower is better)",
    "declined_unanswerable": "declined, unanswerable (higher is better)",
    "declined_answerable": "declined, answerable (lower is better)",
    "wrong_shown": "answers shown that are wrong: unanswerable, or without the gold answer (lower is better)",
    "followups": "questions asked after others in their conversation",
    "repeated_answers": "replies repeating an earlier reply of their conversation (lower is better)",
    "seconds_per_question": "seconds per question",
}


def _measured(cells: dict[str, dict]) -> dict[str, str]:
    """The metrics some cell has a figure for (stale answers only where the questions name outdated facts)."""
    return {key: label for key, label in CELL_METRICS.items() if any(c.get(key) is not None for c in cells.values())}


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return str(value)


def markdown_summary(summary: dict, title: str) -> str:
    """The retrieval line and the cells x metrics table."""
    retrieval = summary["retrieval"]
    lines = [f"### {title}", ""]
    if retrieval["questions"]:
        parts = ", ".join(f"{key} {_fmt(value)}" for key, value in retrieval.items() if key != "questions")
        lines += [f"Retrieval over {retrieval['questions']} answerable questions: {parts}.", ""]
    cells = summary["cells"]
    if cells:
        lines.append("| metric | " + " | ".join(cells) + " |")
        lines.append("| --- |" + " ---: |" * len(cells))
        lines.append("| questions | " + " | ".join(_fmt(c["questions"]) for c in cells.values()) + " |")
        for key, label in _measured(cells).items():
            lines.append(f"| {label} | " + " | ".join(_fmt(c.get(key)) for c in cells.values()) + " |")
        reasons = {cell: c.get("decline_reasons") for cell, c in cells.items() if c.get("decline_reasons")}
        if reasons:
            lines += ["", "Declines by reason:", ""]
            for cell, counts in reasons.items():
                lines.append(f"- {cell}: " + "; ".join(f"{why} ({count})" for why, count in counts.items()))
    return "\n".join(lines) + "\n"


def _chart(cells: dict[str, dict], key: str, label: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(cells)
    values = [cells[name].get(key) or 0.0 for name in names]
    figure, axis = plt.subplots(figsize=(6, 2.8), dpi=100)
    bars = axis.bar(range(len(names)), values, color=["#94a3b8", "#3b82f6", "#cbd5e1", "#1d4ed8"] * 4)
    axis.set_xticks(range(len(names)), names, rotation=12, fontsize=8)
    axis.set_title(label, fontsize=10)
    axis.bar_label(bars, fmt="%.2f", fontsize=8)
    if key != "seconds_per_question":
        axis.set_ylim(0, 1.05)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def html_report(summary: dict, title: str, records: list[dict]) -> str:
    """A self-contained page: the summary, a bar chart per metric, and a sample of answers."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}img{margin:4px}"
        "table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:4px 8px;font-size:13px}</style>",
        f"</head><body><h1>{html.escape(title)}</h1>",
    ]
    retrieval = summary["retrieval"]
    if retrieval["questions"]:
        parts.append("<p>Retrieval: " + html.escape(", ".join(f"{k} {_fmt(v)}" for k, v in retrieval.items())) + "</p>")
    cells = summary["cells"]
    if cells:
        header = "".join(f"<th>{html.escape(name)}</th>" for name in cells)
        rows = "".join(
            f"<tr><td>{html.escape(label)}</td>"
            + "".join(f"<td>{_fmt(c.get(key))}</td>" for c in cells.values())
            + "</tr>"
            for key, label in _measured(cells).items()
        )
        parts.append(f"<table><tr><th>metric</th>{header}</tr>{rows}</table><div>")
        for key, label in _measured(cells).items():
            parts.append(f"<img alt='{html.escape(label)}' src='data:image/png;base64,{_chart(cells, key, label)}'>")
        parts.append("</div>")
    answered = [record for record in records if "answer" in record]  # not in --retrieval-only records
    parts.append(
        "<h2>Answers (first 40)</h2><table><tr><th>cell</th><th>question</th><th>gold</th><th>answer</th></tr>"
    )
    for record in answered[:40]:
        gold = "; ".join(record["gold_answers"]) or "(unanswerable)"
        shown = record["answer"] + (f" (withheld: {record['withheld']})" if record.get("withheld") else "")
        parts.append(
            f"<tr><td>{html.escape(record['cell'])}</td><td>{html.escape(record['question'])}</td>"
            f"<td>{html.escape(gold[:200])}</td><td>{html.escape(shown[:400])}</td></tr>"
        )
    parts.append("</table></body></html>")
    return "".join(parts)


def write_reports(out_dir: Path, title: str, config: dict, summary: dict, records: list[dict]) -> dict[str, Path]:
    """``results.json``, ``summary.md`` and ``report.html`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "markdown": out_dir / "summary.md", "html": out_dir / "report.html"}
    paths["json"].write_text(json.dumps({"config": config, "summary": summary, "records": records}, indent=1))
    paths["markdown"].write_text(markdown_summary(summary, title))
    paths["html"].write_text(html_report(summary, title, records))
    return paths
