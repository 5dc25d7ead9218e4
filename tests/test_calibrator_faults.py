"""Every simulator fault, injected into one calibrator while another runs in the same daemon.

For each fault the daemon keeps running, the faulted instrument's trouble is journaled with a
reason (and the raw bytes wherever bytes arrived), and the healthy instrument keeps GOOD
readings, with no BAD record of its own, throughout.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from daq.daemon import Daemon
from daq.journal import JournalReader
from daq.model import Quality, Reading
from tests.calibrators import PAIR
from tests.helpers import make_config, wait_until


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    pair: str
    faults: dict[str, float]
    #: What the faulted instrument's journal must show: reasons of non-GOOD readings.
    reasons: frozenset[str]
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: The reasons among ``reasons`` that come with the bytes that arrived.
    with_raw: frozenset[str] = frozenset()
    #: Only GOOD readings expected (a fault the protocol layer absorbs).
    absorbed: bool = False


CRC_ONE = {"chambers": [1], "period_s": 0.3, "timeout_s": 0.25}
CASES = [
    Case("drop", "crc35r", {"drop": 0.5}, frozenset({"parse_error"}), CRC_ONE, frozenset({"parse_error"})),
    Case(
        "garble", "crc35r", {"garble": 0.5}, frozenset({"parse_error"}), CRC_ONE, frozenset({"parse_error"})
    ),
    Case(
        "badsum", "crc35r", {"badsum": 0.5}, frozenset({"parse_error"}), CRC_ONE, frozenset({"parse_error"})
    ),
    Case("delay", "crc35r", {"delay_s": 0.4}, frozenset({"timeout"}), CRC_ONE),
    Case("no_reply", "crc35r", {"no_reply": 0.5}, frozenset({"timeout"}), CRC_ONE),
    Case(
        "disconnect", "crc35r", {"disconnect_after_s": 0.8}, frozenset({"disconnected", "timeout"}), CRC_ONE
    ),
    Case("freeze", "crc35r", {"freeze": 1}, frozenset({"stale"}), {**CRC_ONE, "stale_repeats": 3}),
    Case("split", "crc35r", {"split": 1.0}, frozenset(), CRC_ONE, absorbed=True),
    Case("merge", "crc35r", {"merge": 0.3}, frozenset({"timeout"}), CRC_ONE),
    Case(
        "garble-atomlab",
        "atomlab500",
        {"garble": 0.5},
        frozenset({"parse_error"}),
        with_raw=frozenset({"parse_error"}),
    ),
    Case(
        "garble-line-stream",
        "line-stream",
        {"garble": 0.5},
        frozenset({"parse_error"}),
        with_raw=frozenset({"parse_error"}),
    ),
    Case("freeze-line-stream", "line-stream", {"freeze": 1}, frozenset({"stale"}), {"stale_repeats": 3}),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
async def test_fault_stays_on_its_instrument(case: Case, data_dir: Path) -> None:
    faulty_pair, healthy_pair = PAIR[case.pair], PAIR["vik202"]
    faulty_sim = faulty_pair.simulator(seed=11, faults=case.faults)
    healthy_sim = healthy_pair.simulator(seed=12)
    faulty_l = await faulty_sim.serve("tcp://127.0.0.1:0")
    healthy_l = await healthy_sim.serve("tcp://127.0.0.1:0")
    instruments = [
        faulty_pair.instrument("faulty", faulty_l.url, **case.config),
        healthy_pair.instrument("healthy", healthy_l.url),
    ]
    counts: Counter[tuple[str, str]] = Counter()
    healthy_good_after_fault: list[int] = [0]

    def watch(r: Reading) -> Reading:
        counts[(r.instrument, r.reason or "good")] += 1
        if r.instrument == "healthy" and r.quality is Quality.GOOD and faulted():
            healthy_good_after_fault[0] += 1
        return r

    def faulted() -> bool:
        if case.absorbed:
            return counts[("faulty", "good")] >= 10
        return any(counts[("faulty", reason)] for reason in case.reasons)

    daemon = Daemon(make_config(data_dir, instruments))
    daemon.pipeline.insert("watch", watch)
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: faulted() and healthy_good_after_fault[0] >= 5, timeout=30)
        assert not task.done()  # the daemon is still running
    finally:
        daemon.request_stop()
        await task
        await faulty_l.close()
        await healthy_l.close()
    with JournalReader(data_dir) as r:
        rows = r.readings()
        events = r.events()
    faulty = [x for x in rows if x["instrument"] == "faulty"]
    healthy = [x for x in rows if x["instrument"] == "healthy"]
    assert healthy
    # A poll slot the loop reached late on a loaded machine is recorded as missed (the
    # supervisor's honest record of its own lateness); anything else on the healthy instrument
    # would be the fault leaking across.
    assert all(x["quality"] == Quality.GOOD or x["reason"] == "missed_polls" for x in healthy), {
        x["reason"] for x in healthy
    }
    assert sum(x["quality"] == Quality.GOOD for x in healthy) >= 5
    not_good = [x for x in faulty if x["quality"] != Quality.GOOD]
    if case.absorbed:
        assert not not_good, {x["reason"] for x in not_good}
        assert sum(x["quality"] == Quality.GOOD for x in faulty) >= 10
        return
    assert not_good
    assert {x["reason"] for x in not_good} & case.reasons
    assert all(x["reason"] for x in not_good)
    for x in not_good:
        if x["reason"] in case.with_raw:
            assert x["raw"], x
            assert x["attrs"]["error"]
    if "parse_error" in case.with_raw:
        parse_events = [e for e in events if e["instrument"] == "faulty" and e["kind"] == "parse_error"]
        assert parse_events
        assert all(e["raw"] for e in parse_events)
    if case.id == "badsum":
        assert any("checksum" in x["attrs"]["error"] for x in not_good)
        assert all(x["raw"].endswith(b"\x03") for x in not_good if x["reason"] == "parse_error")
    if "stale" in case.reasons:
        stale = [x for x in not_good if x["reason"] == "stale"]
        assert all(x["quality"] == Quality.UNCERTAIN and x["value"] is not None for x in stale)
    if "stale" not in case.reasons:
        # The faulted instrument recovers between faults: GOOD readings follow its first fault.
        first = faulty.index(not_good[0])
        assert any(x["quality"] == Quality.GOOD for x in faulty[first:])
