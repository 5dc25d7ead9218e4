"""Shared machinery of the end-to-end benchmarks (``synth.py``, ``hotcell.py``).

Simulators run as separate ``daq simulate`` processes, so their CPU is not charged to the
daemon. The daemon runs in this process, exactly as ``daq run`` runs it, with one extra
commit hook that records, per reading, the time from acquisition (its monotonic stamp) to
the return of the group commit that accepted it, and the arrival times used for jitter.
"""

from __future__ import annotations

import asyncio
import faulthandler
import itertools
import os
import platform
import re
import resource
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daq import logs
from daq.configfile.load import Config, parse_config
from daq.configfile.write import to_toml
from daq.daemon import Daemon
from daq.model import Quality, Reading


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SimProcess:
    """``daq simulate KIND --listen URL --set K=V ...`` as a child process."""

    def __init__(
        self,
        kind: str,
        listen: str,
        options: dict[str, Any] | None = None,
        faults: dict[str, Any] | None = None,
    ):
        args = [sys.executable, "-m", "daq", "simulate", kind, "--listen", listen]
        for k, v in (options or {}).items():
            args += ["--set", f"{k}={v}"]
        for k, v in (faults or {}).items():
            args += ["--fault", f"{k}={v}"]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"listening on (\S+)", line)
        if match is None:
            self.proc.kill()
            raise RuntimeError(f"simulator {kind} did not start: {line!r}")
        self.url = match.group(1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


def make_config(data_dir: Path, instruments: list[dict[str, Any]], **sections: Any) -> Config:
    data = {"daemon": {"data_dir": str(data_dir)}, "instruments": instruments, **sections}
    data.setdefault("journal", {"commit_window_s": 0.05})
    # The benchmark measures acquisition; the local API stays off (and off its port).
    data.setdefault("api", {"enabled": False})
    return parse_config(to_toml(data), path="<bench>")


def percentile(values: list[float], q: float, digits: int = 2) -> float | None:
    """The ``q``-th percentile, rounded; ``None`` when there are no values (valid JSON)."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))], digits)


@dataclass
class Probe:
    """What the commit hook collects inside the measurement window."""

    jitter_channels: dict[str, tuple[str, float]]  # instrument -> (channel, period_s)
    window_open: bool = False
    latencies_ms: list[float] = field(default_factory=list)
    arrivals: dict[str, list[int]] = field(default_factory=dict)
    committed: int = 0
    bad: int = 0

    def hook(self, batch: list[Reading]) -> None:
        if not self.window_open:
            return
        now = time.monotonic_ns()
        for r in batch:
            self.latencies_ms.append((now - r.mono_ns) / 1e6)
            if r.quality is not Quality.GOOD:
                self.bad += 1
            spec = self.jitter_channels.get(r.instrument)
            if spec is not None and r.channel == spec[0]:
                self.arrivals.setdefault(r.instrument, []).append(r.mono_ns)
        self.committed += len(batch)

    def jitter_ms(self) -> list[float]:
        out: list[float] = []
        for instrument, times in self.arrivals.items():
            period_ns = self.jitter_channels[instrument][1] * 1e9
            for a, b in itertools.pairwise(times):
                out.append(abs((b - a) - period_ns) / 1e6)
        return out


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _lag_sampler(samples: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.1)
        samples.append(max(0.0, (time.perf_counter() - t - 0.1) * 1000))


async def run_daemon(cfg: Config, probe: Probe, *, warmup_s: float, duration_s: float) -> dict[str, Any]:
    """Run the daemon for ``warmup_s + duration_s``; measure during the last ``duration_s``."""
    logs.configure("error")
    # A benchmark that hangs should say where: dump every thread's stack if it overruns.
    faulthandler.dump_traceback_later(warmup_s + duration_s + 120)
    daemon = Daemon(cfg, seed=1)
    result: dict[str, Any] = {}

    async def measure(d: Daemon) -> None:
        assert d.journal is not None
        d.journal.on_commit(probe.hook)
        await asyncio.sleep(warmup_s)
        appended0 = sum(s.readings for s in d.supervisors)
        lag: list[float] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(_lag_sampler(lag, stop))
        for s in d.supervisors:
            s.poll_lateness_ns.clear()
        probe.window_open = True
        l0 = time.thread_time()  # this task runs on the event loop's thread
        c0, t0, rss0 = cpu_s(), time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        await asyncio.sleep(duration_s)
        await d.journal.flush()
        probe.window_open = False
        wall, cpu = time.perf_counter() - t0, cpu_s() - c0
        loop_cpu = time.thread_time() - l0
        stop.set()
        await sampler
        appended = sum(s.readings for s in d.supervisors) - appended0
        # Poll jitter: how late each poll started against its slot on the monotonic grid.
        lateness = [ns / 1e6 for s in d.supervisors for ns in s.poll_lateness_ns]
        arrivals = probe.jitter_ms()
        result.update(
            {
                "daemon_cpu_percent_of_one_core": round(100 * cpu / wall, 1),
                # The event loop's thread alone (drivers, pipeline, API); the rest is the
                # journal's writer and the other threads.
                "event_loop_cpu_percent_of_one_core": round(100 * loop_cpu / wall, 1),
                "peak_rss_mb": round(max(rss0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024, 1),
                "readings_per_s": round(probe.committed / wall),
                "readings_committed": probe.committed,
                "readings_acquired": appended,
                "non_good_readings": probe.bad,
                "overflowed": d.journal.overflowed,
                "journal_commit_errors": d.journal.error is not None,
                "polls": len(lateness),
                "poll_jitter_ms_p50": percentile(lateness, 50, 2),
                "poll_jitter_ms_p99": percentile(lateness, 99, 2),
                # Deviation of consecutive arrivals of one channel from its period: includes the
                # instrument's response time (and, for OPC UA, values that did not change).
                "arrival_interval_deviation_ms_p50": percentile(arrivals, 50, 2),
                "arrival_interval_deviation_ms_p99": percentile(arrivals, 99, 2),
                "acq_to_journal_ms_p50": percentile(probe.latencies_ms, 50, 1),
                "acq_to_journal_ms_p99": percentile(probe.latencies_ms, 99, 1),
                "event_loop_lag_ms_p99": percentile(lag, 99, 2),
                "instruments": {s.name: s.state.value for s in d.supervisors},
            }
        )
        d.request_stop()

    run = asyncio.ensure_future(daemon.run(on_ready=measure))
    done, _ = await asyncio.wait([run], timeout=warmup_s + duration_s + 60)
    if not done:
        # Say where it hangs: every task's stack, then give up on this measurement.
        for task in asyncio.all_tasks():
            task.print_stack(limit=8, file=sys.stderr)
        raise RuntimeError("the benchmark daemon did not stop in time")
    run.result()
    faulthandler.cancel_dump_traceback_later()
    # Over the whole run, once the journal is closed: every reading a supervisor handed to the
    # journal and not committed is lost (an overflow is recorded, but still counts here).
    assert daemon.journal is not None
    handed = sum(s.readings for s in daemon.supervisors)
    result["readings_lost"] = handed - daemon.journal.readings_committed
    result["readings_committed_whole_run"] = daemon.journal.readings_committed
    return result


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "system": platform.platform()}
