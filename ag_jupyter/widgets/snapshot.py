"""Static snapshots of a run table: ``text/plain`` and ``text/html``.

Used where no live widget can render: a saved notebook, nbconvert HTML, GitHub, terminal
IPython, and the ``%ag_runs`` text fallback. All run text is escaped.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from ..runtime.models import LIVE_STATUSES, RunRecord, RunStatus, format_duration

STATUS_COLOURS = {
    RunStatus.pending: "#6b7280",
    RunStatus.running: "#2563eb",
    RunStatus.waiting: "#0d9488",
    RunStatus.cancellation_requested: "#d97706",
    RunStatus.succeeded: "#16a34a",
    RunStatus.failed: "#dc2626",
    RunStatus.canceled: "#4b5563",
}
COLUMNS = ("run id", "graph", "status", "session", "tags", "started", "duration", "error")


def parse_statuses(status: str | None) -> frozenset[RunStatus] | None:
    """A status filter as users type it: ``None``/``"all"`` -> None (any status),
    ``"live"`` -> the live statuses, else that one status.

    Raises:
      ValueError: naming the accepted values, for anything else.
    """
    if status is None or status == "all":
        return None
    if status == "live":
        return LIVE_STATUSES
    try:
        return frozenset({RunStatus(status)})
    except ValueError:
        raise ValueError(
            f"unknown status {status!r}; use 'all', 'live' or one of: {', '.join(RunStatus)}"
        ) from None


def format_started(ts: datetime | None, now: datetime | None = None) -> str:
    """When a run started, in local time: ``14:03:07`` today, ``2025-03-04 14:03`` on
    another day (runs of earlier kernels); empty for None."""
    if ts is None:
        return ""
    local = ts.astimezone()
    today = (now or datetime.now().astimezone()).astimezone().date()
    if local.date() == today:
        return local.strftime("%H:%M:%S")
    return local.strftime("%Y-%m-%d %H:%M")


def status_counts(records: Iterable[RunRecord]) -> Counter[RunStatus]:
    """Number of records per status."""
    return Counter(r.status for r in records)


def counts_line(counts: Counter[RunStatus]) -> str:
    """``2 running · 5 succeeded · 1 failed`` (non-zero statuses, in life-cycle order)."""
    parts = [f"{counts[s]} {s.value}" for s in RunStatus if counts.get(s)]
    return " · ".join(parts) if parts else "no runs"


def row_cells(record: RunRecord) -> list[str]:
    """The table's cells for one record, as plain strings (unescaped)."""
    error = (record.error or "").splitlines()[0] if record.error else ""
    return [
        record.run_id,
        record.graph_id,
        record.status.value,
        record.session_id or "",
        ", ".join(record.tags),
        format_started(record.started_at),
        format_duration(record.duration_s),
        error,
    ]


def _newest_first(records: Iterable[RunRecord], limit: int) -> list[RunRecord]:
    return sorted(records, key=lambda r: r.created_at, reverse=True)[:limit]


def _ask_lines(asks: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = []
    for ask in asks:
        options = ", ".join(str(o.get("label", "")) for o in ask.get("options") or [])
        prompt = " ".join(str(ask.get("prompt", "")).split())
        lines.append(
            f"  ? {ask.get('run_id', '')} asks ({ask.get('kind', 'text')}): "
            + (prompt if len(prompt) <= 200 else prompt[:199] + "…")
            + (f" [{options}]" if options else "")
            + f"  (ask id {ask.get('ask_id', '')})"
        )
    return lines


def text_table(records: Sequence[RunRecord], *, limit: int = 50, width: int = 40,
               asks: Sequence[Mapping[str, Any]] = (), total: int | None = None) -> str:
    """A fixed-width text table of the newest ``limit`` records with a counts header,
    after the open asks (dicts of ``run_table.ask_to_dict``), if any.

    ``total``: the number of runs when ``records`` holds only the newest of them.
    """
    rows = [row_cells(r) for r in _newest_first(records, limit)]
    count = len(records) if total is None else total
    header = f"{count} runs: {counts_line(status_counts(records))}"
    if total is not None and total > len(records):
        header += f" (counts of the newest {len(records)})"
    if asks:
        header = "\n".join([f"{len(asks)} open ask(s), answer with %ag_answer:",
                            *_ask_lines(asks), header])
    if not rows:
        return header
    clipped = [[c if len(c) <= width else c[: width - 1] + "…" for c in row] for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in clipped)) for i, h in enumerate(COLUMNS)]
    lines = [header, "  ".join(h.ljust(w) for h, w in zip(COLUMNS, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in clipped:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    if count > limit:
        lines.append(f"… and {count - limit} older runs")
    return "\n".join(lines)


def html_table(records: Sequence[RunRecord], *, limit: int = 50, title: str = "Runs",
               asks: Sequence[Mapping[str, Any]] = (), total: int | None = None) -> str:
    """An HTML table (inline styles only, everything escaped) of the newest ``limit`` runs,
    after the open asks (dicts of ``run_table.ask_to_dict``), if any."""
    esc = html.escape
    count = len(records) if total is None else total
    out = [
        '<div class="ag-run-panel-snapshot" style="font-family:var(--jp-ui-font-family,'
        'sans-serif);font-size:12px">',
        f"<div><b>{esc(title)}</b> — {esc(counts_line(status_counts(records)))}"
        f" ({count} total)</div>",
    ]
    if asks:
        out.append('<div class="ag-asks-snapshot"><b>Open asks</b><ul style="margin:2px 0">')
        for ask in asks:
            options = ", ".join(str(o.get("label", "")) for o in ask.get("options") or [])
            out.append(
                f'<li data-ask-id="{esc(str(ask.get("ask_id", "")), quote=True)}">'
                f"<code>{esc(str(ask.get('run_id', '')))}</code> asks "
                f"({esc(str(ask.get('kind', 'text')))}): "
                f'<span style="white-space:pre-wrap">{esc(str(ask.get("prompt", "")))}</span>'
                + (f" <i>[{esc(options)}]</i>" if options else "")
                + "</li>"
            )
        out.append("</ul></div>")
    out += [
        '<table style="border-collapse:collapse"><thead><tr>',
        *(f'<th style="text-align:left;padding:2px 8px">{esc(c)}</th>' for c in COLUMNS),
        "</tr></thead><tbody>",
    ]
    for record in _newest_first(records, limit):
        cells = [esc(c) for c in row_cells(record)]
        colour = STATUS_COLOURS[record.status]
        cells[2] = f'<span style="color:{colour};font-weight:600">{cells[2]}</span>'
        out.append(
            f'<tr data-run-id="{esc(record.run_id, quote=True)}">'
            + "".join(f'<td style="padding:2px 8px">{c}</td>' for c in cells)
            + "</tr>"
        )
    out.append("</tbody></table>")
    if count > limit:
        out.append(f"<div>… and {count - limit} older runs</div>")
    out.append("</div>")
    return "".join(out)
