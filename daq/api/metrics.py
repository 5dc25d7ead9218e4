"""Prometheus text exposition (format 0.0.4), written by hand, and the event-loop lag sampler.

Counters of committed readings by instrument and quality are kept by a journal commit hook
(one dict update per reading, counted from daemon start); everything else comes from the
status board (:mod:`daq.status`) and the journal when ``/metrics`` is scraped.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from daq.model import Quality, Reading

if TYPE_CHECKING:
    from daq.api.live import LiveClients
    from daq.journal.feed import FeedBatch
    from daq.journal.journal import Journal

COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Histogram:
    """A cumulative histogram with fixed upper bounds (seconds)."""

    def __init__(self, bounds: Sequence[float]):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1


class CommitCounters:
    """Journal commit hook: readings by (instrument, quality) and commit latency."""

    def __init__(self, journal: Any):
        self.journal = journal
        self.readings: dict[tuple[str, int], int] = {}
        self.commit_seconds = Histogram(COMMIT_BUCKETS)

    def __call__(self, readings: list[Reading]) -> None:
        counts = self.readings
        for r in readings:
            key = (r.instrument, r.quality)
            counts[key] = counts.get(key, 0) + 1
        self.commit_seconds.observe(self.journal.last_commit_s)


class LagSampler:
    """Measures how late the event loop wakes a sleeper: a direct view of whether anything
    (a slow handler, a burst of readings) holds the loop that acquisition runs on."""

    def __init__(self, interval_s: float = 0.25):
        self.interval_s = interval_s
        self.histogram = Histogram(LAG_BUCKETS)
        self.last_s = 0.0
        self.max_s = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="api-lag-sampler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.interval_s)
            lag = max(0.0, loop.time() - before - self.interval_s)
            self.last_s = lag
            self.max_s = max(self.max_s, lag)
            self.histogram.observe(lag)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


def _num(value: float | int) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value)) if value == value else "NaN"


class Exposition:
    """Builds the text of one scrape."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self, name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, str], float | int]]
    ) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.lines.append(f"{name}{_labels(labels)} {_num(value)}")

    def histogram(self, name: str, help_text: str, hist: Histogram) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} histogram")
        cumulative = 0
        for bound, count in zip(hist.bounds, hist.counts, strict=False):
            cumulative += count
            self.lines.append(f'{name}_bucket{{le="{bound:g}"}} {cumulative}')
        self.lines.append(f'{name}_bucket{{le="+Inf"}} {hist.count}')
        self.lines.append(f"{name}_sum {_num(hist.total)}")
        self.lines.append(f"{name}_count {hist.count}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(
    instruments: Mapping[str, Mapping[str, Any]],
    tasks: Mapping[str, Mapping[str, Any]],
    j: Journal,
    counters: CommitCounters,
    lag: LagSampler,
    live: LiveClients[FeedBatch],
    sinks: dict[str, dict[str, Any]],
    now_ns: int,
    alarms: Mapping[str, int] | None = None,
) -> str:
    """The whole ``/metrics`` page from the status the board assembles (``instruments`` from
    :meth:`daq.status.StatusBoard.instruments`, ``tasks`` from the task tree; ``alarms``:
    active alarms by severity, when configured)."""
    out = Exposition()
    if alarms is not None:
        out.family(
            "daq_alarms_active",
            "gauge",
            "Active alarms (unacknowledged or acknowledged) of configured limits, by severity.",
            (({"severity": sev}, n) for sev, n in alarms.items()),
        )
    out.family(
        "daq_readings_total",
        "counter",
        "Readings committed to the journal since the daemon started, by instrument and quality.",
        (
            ({"instrument": inst, "quality": Quality(q).name}, n)
            for (inst, q), n in sorted(counters.readings.items())
        ),
    )
    insts = sorted(instruments.items())
    out.family(
        "daq_instrument_up",
        "gauge",
        "1 while the instrument is connected, 0 otherwise.",
        (({"instrument": n, "kind": i["kind"]}, int(i["state"] == "connected")) for n, i in insts),
    )
    out.family(
        "daq_parse_errors_total",
        "counter",
        "Frames that did not parse, by instrument.",
        (({"instrument": n}, i["parse_errors"]) for n, i in insts),
    )
    out.family(
        "daq_reconnects_total",
        "counter",
        "Successful reconnects after a lost or failed link, by instrument.",
        (({"instrument": n}, i["reconnects"]) for n, i in insts),
    )
    out.family(
        "daq_poll_timeouts_total",
        "counter",
        "Polls that got no answer in time, by instrument.",
        (({"instrument": n}, i["timeouts"]) for n, i in insts),
    )
    out.family(
        "daq_last_reading_age_seconds",
        "gauge",
        "Seconds since the last reading of each channel was acquired.",
        (
            ({"instrument": n, "channel": ch}, max(0.0, (now_ns - v["acq_ns"]) / 1e9))
            for n, i in insts
            for ch, v in sorted(i["channels"].items())
        ),
    )
    out.family(
        "daq_task_failures_total",
        "counter",
        "Unexpected exceptions of the daemon's long-lived tasks, by component and policy.",
        (({"component": c, "policy": t["policy"]}, t["failures"]) for c, t in tasks.items()),
    )
    out.family(
        "daq_task_up",
        "gauge",
        "1 while the long-lived task runs, 0 while it waits for a restart or has failed.",
        (({"component": c}, int(t["state"] in ("running", "stopped"))) for c, t in tasks.items()),
    )
    out.histogram("daq_journal_commit_seconds", "Duration of journal group commits.", counters.commit_seconds)
    out.family("daq_journal_commits_total", "counter", "Journal group commits.", [({}, j.commits)])
    out.family(
        "daq_journal_rejected_total",
        "counter",
        "Records the journal could not store, each kept as a rejected_record event.",
        [({}, j.rejected)],
    )
    out.family(
        "daq_journal_hook_errors_total",
        "counter",
        "Exceptions of commit hooks and live subscribers (isolated from the journal writer).",
        [({}, j.hook_errors)],
    )
    out.family("daq_journal_pending", "gauge", "Records waiting for the next commit.", [({}, j.pending)])
    out.family(
        "daq_journal_overflowed_total",
        "counter",
        "Records dropped because the pending buffer was full (each recorded as an overflow event).",
        [({}, j.overflowed)],
    )
    out.family(
        "daq_journal_error", "gauge", "1 while journal commits fail.", [({}, int(j.error is not None))]
    )
    out.family(
        "daq_sink_backlog",
        "gauge",
        "Journal readings not yet acknowledged by each sink.",
        (({"sink": name}, s["backlog"]) for name, s in sorted(sinks.items()) if s.get("backlog") is not None),
    )
    out.histogram(
        "daq_event_loop_lag_seconds", "How late the event loop woke a 250 ms sleeper.", lag.histogram
    )
    out.family("daq_event_loop_lag_max_seconds", "gauge", "Largest event-loop lag seen.", [({}, lag.max_s)])
    out.family("daq_api_stream_clients", "gauge", "Connected live-stream clients.", [({}, len(live.clients))])
    out.family(
        "daq_api_stream_dropped_total",
        "counter",
        "Live-stream clients disconnected because their socket accepted nothing for too long.",
        [({}, live.dropped_total)],
    )
    out.family(
        "daq_api_stream_gaps_total",
        "counter",
        "Times a live-stream client fell behind the live feed and was sent the readings from the journal.",
        [({}, live.gaps_total)],
    )
    return out.text()
