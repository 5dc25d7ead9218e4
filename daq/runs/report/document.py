"""The report as a document: the status its watermark shows, its sections in order, and the
rendering to a PDF or PNG pages (see :mod:`daq.runs.report`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib import pyplot as plt
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from daq import __version__
from daq.runs import figures, qc_figures
from daq.runs.qc_settings import ReportSection
from daq.runs.report.activity import activity_page
from daq.runs.report.frame import (
    TEXT,
    Context,
    furnish,
    site_tz,
)
from daq.runs.report.process import process_pages
from daq.runs.report.records import alarm_pages, audit_pages
from daq.runs.report.title import title_pages
from daq.runs.report.tlc import tlc_pages
from daq.runs.signatures import decode, signature_status
from daq.runs.store import RunData

SECTIONS = ("header", "activity", "process", "tlc", "alarms", "audit")


def _current_analyses(data: RunData) -> dict[str, str]:
    latest: dict[str, tuple[str, str]] = {}
    for a in data.rows("analyses"):
        h = a.get("hash")
        latest[str(a["trace_id"])] = (str(a["analysis_id"]), h.hex() if isinstance(h, bytes) else str(h))
    return dict(latest.values())


def _status(run: dict[str, Any], sigs: list[dict[str, Any]], current: dict[str, str]) -> tuple[str, str]:
    if not run.get("seal"):
        return "DRAFT", "the run is open (not sealed)"
    live = [s for s in sigs if signature_status(s, current)["covers_current"]]
    last = next((s for s in reversed(live) if s["meaning"] in ("approved", "rejected")), None)
    if last is None:
        if any(s["meaning"] in ("approved", "rejected") for s in sigs):
            return "DRAFT", "the approval covers an earlier analysis version (re-integrated since)"
        return "DRAFT", "sealed, not approved"
    if last["meaning"] == "rejected":
        return "REJECTED", f"rejected by {last['printed_name']}"
    return "APPROVED", f"approved by {last['printed_name']}"


def context(
    data: RunData,
    *,
    settings: ReportSection | None = None,
    timezone: str | None = None,
    by: str = "-",
    now_ns: int | None = None,
) -> Context:
    sigs = [decode(s) for s in data.rows("signatures")]
    current = _current_analyses(data)
    status, reason = _status(data.run, sigs, current)
    summary = figures.summarize(data)
    now = now_ns if now_ns is not None else int(datetime.now(UTC).timestamp() * 1e9)
    return Context(
        data, summary, settings or ReportSection(), site_tz(timezone), by, now, sigs, current, status, reason
    )


def pages_of(ctx: Context) -> Iterator[tuple[str, Figure]]:
    ref = qc_figures.reference_ns(ctx.data, ctx.settings)
    table = qc_figures.activity_table(ctx.data, ref[0])
    yld = qc_figures.radiochemical_yield(ctx.data, ctx.settings, ref[0])
    ctx.summary["_qc"] = {"reference_ns": ref[0], "activity": table, "yield": yld}
    yield from (("header", f) for f in title_pages(ctx, yld))
    yield "activity", activity_page(ctx, table, ref, yld)
    yield from (("process", f) for f in process_pages(ctx))
    yield from (("tlc", f) for f in tlc_pages(ctx))
    yield from (("alarms", f) for f in alarm_pages(ctx))
    yield from (("audit", f) for f in audit_pages(ctx))


def render(
    data: RunData,
    out: Path,
    *,
    png: bool = False,
    settings: ReportSection | None = None,
    timezone: str | None = None,
    by: str = "-",
    now_ns: int | None = None,
) -> dict[str, Any]:
    """Render the report of ``data`` (decoded, with its signatures) to ``out`` (a PDF), or to
    ``out``'s stem ``-pNN.png`` pages.

    Returns ``{"files", "sections", "figures", "qc", "status"}``; ``figures`` is
    :func:`figures.summarize`, ``qc`` the activity table and yield.
    """
    ctx = context(data, settings=settings, timezone=timezone, by=by, now_ns=now_ns)
    pages: list[tuple[str, Figure]] = []
    try:
        with matplotlib.rc_context({"pdf.fonttype": 42}):
            pages = list(pages_of(ctx))
            qc = ctx.summary.pop("_qc")
            for i, (_, fig) in enumerate(pages, 1):
                furnish(fig, ctx, i, len(pages))
            out = Path(out)
            out.parent.mkdir(parents=True, exist_ok=True)
            files: list[str] = []
            figures_json = json.dumps(ctx.summary, sort_keys=True, separators=(",", ":"))
            qc_json = json.dumps(qc, sort_keys=True, separators=(",", ":"))
            if png:
                for i, (section, fig) in enumerate(pages, 1):
                    path = out.with_name(f"{out.stem}-p{i:02d}.png")
                    meta = {
                        "Title": f"run {ctx.summary['run_id']}",
                        "Sections": section,
                        "Figures": figures_json,
                        "QC": qc_json,
                        "Text": "\n".join(TEXT.get(id(fig), [])),
                    }
                    fig.savefig(path, dpi=110, metadata=meta)
                    files.append(str(path))
            else:
                info = {
                    "Title": f"Run report {ctx.summary['run_id']}",
                    "Subject": ctx.summary["seal"] or "",
                    "Keywords": ",".join(SECTIONS),
                    "Creator": f"hotcell-daq {__version__}",
                }
                with PdfPages(out, metadata=info) as pdf:
                    for _, fig in pages:
                        pdf.savefig(fig)
                files.append(str(out))
    finally:
        for _, fig in pages:
            TEXT.pop(id(fig), None)
            plt.close(fig)
    return {
        "files": files,
        "sections": [s for s, _ in pages],
        "figures": ctx.summary,
        "qc": qc,
        "status": ctx.status,
    }
