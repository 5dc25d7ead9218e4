"""The run manager: the ``"runs"`` service (phase 0, started before the supervisors).

About 400 lines on purpose: its parts already live apart (run fields, config records, the
trigger, the seal); what is left is one sequence, opening and closing a run with its records.

A run is opened by :meth:`RunManager.open_run` (through the API, ``daq runs start``) or by
the configured trigger channel rising, and closed by :meth:`RunManager.close_run` or the
channel falling. These run operations (:class:`daq.context.RunControl`) are distinct from the
service's life cycle (``start``/``stop``, called by the daemon only). While a run is open
the ``runs`` stage of the reading pipeline (:class:`daq.runs.attribution.RunAttribution`)
attributes every reading to it, and ``journal.run_id`` holds its id for audit entries. The
trigger is called by that stage, ahead of every stage that adds a quality flag, so it sees
the instrument's own value. Closing a run seals it (see :mod:`daq.runs.seal`) and records
the seal in the run's ``stop`` record and the audit trail.

On start the service also takes ``daemon.lock`` in the data directory (so retention never
prunes under a running daemon), records the config text and audits its diff from the previous
config, and closes (and seals) a run that a crash left open.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any, Protocol

from daq.errors import ConfigError, DaqError
from daq.journal.journal import dumps
from daq.journal.lock import take_lock
from daq.journal.reader import JournalReader
from daq.logs import get_logger
from daq.model import Reading, iso
from daq.runs import store
from daq.runs.attribution import RunAttribution
from daq.runs.fields import RunError, clean_nuclide, new_run_id, required
from daq.runs.seal import current_through, seal_from_journal
from daq.runs.settings import RunsSection
from daq.runs.setup import instruments as setup_instruments
from daq.runs.setup import record_config
from daq.runs.trigger import EdgeTrigger

if TYPE_CHECKING:
    from daq.clock import Clock
    from daq.config.loaded import LoadedConfig
    from daq.context import ServiceContext
    from daq.journal.journal import Journal
    from daq.supervisor import Supervisor

log = get_logger("daq.runs")


class T0Sink(Protocol):
    """Takes t0 (the Ac-225 equilibrium gate, :class:`daq.equilibrium.EquilibriumGate`)."""

    def set_t0(self, ts_ns: int, *, instrument: str | None = None, run_id: str | None = None) -> None: ...


class RunManager:
    """Runs of one daemon. See the module docstring."""

    name = "runs"
    phase = 0

    def __init__(
        self,
        settings: RunsSection,
        *,
        config: LoadedConfig,
        clock: Clock,
        journal: Journal,
        attribution: RunAttribution,
        equilibrium: T0Sink,
        supervisors: Sequence[Supervisor],
        clock_sync: Callable[[], dict[str, Any]] | None = None,
    ):
        self.settings = settings
        self.config = config
        self.clock = clock
        self.journal = journal
        self.supervisors = supervisors
        #: The clock monitor's last sync state, recorded with each run.
        self.clock_sync = clock_sync
        #: The Ac-225 equilibrium gate: t0 is handed to it.
        self.equilibrium = equilibrium
        self._active: dict[str, Any] | None = None
        self._lock_file: IO[str] | None = None
        self._pending: set[asyncio.Task[Any]] = set()
        self._edges = EdgeTrigger(settings)
        self._sealing = asyncio.Lock()
        self._known_ids: set[str] = set()
        self.runs_started = 0
        self.runs_sealed = 0
        #: The pipeline's ``runs`` stage: it calls the trigger and attributes readings to runs.
        self.attribution = attribution

    # -- life cycle (the daemon's, nothing else's) ---------------------------------------------

    async def start(self) -> None:
        """Take the data directory's lock, record the config, close a run a crash left open
        and arm the trigger."""
        self._lock_file = take_lock(self.config.daemon.data_dir)
        await self.journal.flush()
        await record_config(self.journal, self.config, self.clock)
        await self._recover()
        if self.settings.trigger_instrument is not None:
            self.attribution.trigger = self._trigger

    async def stop(self) -> None:
        """Disarm the trigger, seal an open run, release the lock."""
        if self.attribution.trigger == self._trigger:
            self.attribution.trigger = None
        try:
            if self._pending:
                await asyncio.gather(*self._pending, return_exceptions=True)
            if self._active is not None:
                await self.close_run(actor="daemon", reason="daemon stopping")
            await self.journal.flush()
        finally:
            # Released even when the journal cannot commit any more (the daemon is stopping).
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None

    async def _recover(self) -> None:
        """Close and seal a run left open by a daemon that did not stop cleanly."""
        with JournalReader(self.config.daemon.data_dir) as reader:
            runs = store.list_runs(reader.conn)
        self._known_ids = {r["run_id"] for r in runs}
        open_runs = [r for r in runs if r["ended_ns"] is None]
        for run in open_runs:
            self._active = run
            await self.close_run(
                actor="daemon", reason="closed at daemon start: the daemon stopped during the run"
            )

    # -- the run operations (daq.context.RunControl: the API, the CLI through it) -------------

    async def open_run(
        self,
        *,
        batch: str,
        product: str,
        nuclide: str,
        operator: str,
        actor: str,
        method: str | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """Open a run (``batch``, ``product``, ``nuclide``, ``operator``, ``actor`` required)
        and return it once its start is committed."""
        run = self._open(
            batch=batch, product=product, nuclide=nuclide, operator=operator,
            method=method, actor=actor, reason=reason,
        )  # fmt: skip
        await self.journal.flush()
        return dict(run)

    async def close_run(self, *, actor: str, reason: str | None = None) -> dict[str, Any]:
        """Close and seal the open run and return it."""
        closing = self._close(actor=actor, reason=reason)
        return await self._seal(closing)

    async def annotate(
        self, *, text: str, actor: str, reason: str, instrument: str | None = None
    ) -> dict[str, Any]:
        """Record an operator's note (with its reason) in the open run and the audit trail."""
        required(text=text, actor=actor, reason=reason)
        run = self._require_active()
        self._check_instrument(instrument)
        now = self.clock.time_ns()
        entry = {"ts_ns": now, "instrument": instrument, "actor": actor, "reason": reason, "text": text}
        self._run_event("annotation", run["run_id"], actor, reason, instrument, {"text": text}, now)
        self.journal.audit(
            "annotation", actor=actor, subject=instrument or run["run_id"],
            detail={"text": text, "reason": reason}, run_id=run["run_id"],
        )  # fmt: skip
        run["annotations"].append(entry)
        await self.journal.flush()
        return {"run_id": run["run_id"], **entry, "ts": iso(now)}

    async def mark_t0(
        self, *, actor: str, reason: str, instrument: str | None = None, ts_ns: int | None = None
    ) -> dict[str, Any]:
        """Record t0 (separation or labelling: the reference of decay correction and of the
        Ac-225 equilibrium gate) and hand it to the gate when the daemon has one."""
        required(actor=actor, reason=reason)
        self._check_instrument(instrument)
        now = self.clock.time_ns()
        t0 = now if ts_ns is None else int(ts_ns)
        run = self._active
        run_id = run["run_id"] if run is not None else None
        detail = {"t0_ns": t0, "t0": iso(t0), "reason": reason}
        if run is not None:
            self._run_event("t0", run["run_id"], actor, reason, instrument, {"t0_ns": t0}, now)
            run["t0"].append({"ts_ns": t0, "instrument": instrument, "actor": actor, "reason": reason})
        self.journal.audit("t0", actor=actor, subject=instrument, detail=detail, run_id=run_id)
        self.equilibrium.set_t0(t0, instrument=instrument, run_id=run_id)
        await self.journal.flush()
        return {"run_id": run_id, "instrument": instrument, "ts_ns": t0, "ts": iso(t0), "actor": actor}

    def active(self) -> dict[str, Any] | None:
        return dict(self._active) if self._active is not None else None

    def list_runs(self) -> list[dict[str, Any]]:
        with JournalReader(self.config.daemon.data_dir) as reader:
            return store.list_runs(reader.conn)

    def get(self, run_id: str) -> dict[str, Any] | None:
        """The run ``run_id`` as the journal holds it, or ``None`` (the API's ``GET /api/runs/{id}``)."""
        try:
            return self.get_run(run_id)
        except store.UnknownRun:
            return None

    def get_run(self, run_id: str) -> dict[str, Any]:
        with JournalReader(self.config.daemon.data_dir) as reader:
            return store.get_run(reader.conn, run_id)

    def status(self) -> dict[str, Any]:
        run = self._active
        return {
            "active": None
            if run is None
            else {k: run[k] for k in ("run_id", "batch", "product", "started_ns")},
            "runs_started": self.runs_started,
            "runs_sealed": self.runs_sealed,
            "trigger": None
            if self.settings.trigger_instrument is None
            else f"{self.settings.trigger_instrument}/{self.settings.trigger_channel}",
        }

    # -- internals ---------------------------------------------------------------------------

    def _require_active(self) -> dict[str, Any]:
        if self._active is None:
            raise RunError("no run is open")
        return self._active

    def _check_instrument(self, instrument: str | None) -> None:
        if instrument is not None and instrument not in {i.name for i in self.config.instruments}:
            raise RunError(f"no instrument named {instrument!r}")

    def _run_event(
        self,
        kind: str,
        run_id: str,
        actor: str,
        reason: str | None,
        instrument: str | None,
        detail: dict[str, Any],
        ts_ns: int,
    ) -> None:
        self.journal.record(
            "run_events",
            {
                "run_id": run_id, "kind": kind, "ts_ns": ts_ns, "mono_ns": self.clock.monotonic_ns(),
                "actor": actor, "reason": reason, "instrument": instrument, "detail": dumps(detail),
            },
        )  # fmt: skip

    def _open(
        self,
        *,
        batch: str,
        product: str,
        nuclide: str,
        operator: str,
        method: str | None,
        actor: str,
        reason: str | None,
    ) -> dict[str, Any]:
        """Open a run now (synchronous, so a trigger reading can already belong to it)."""
        required(batch=batch, product=product, operator=operator, actor=actor)
        if self._active is not None:
            raise RunError(f"run {self._active['run_id']} is open; stop it first")
        symbol = clean_nuclide(nuclide)
        now = self.clock.time_ns()
        run_id = new_run_id(batch, now, self._known_ids)
        meta = {
            "batch": batch,
            "product": product,
            "nuclide": symbol,
            "operator": operator,
            "method": method,
            "config_sha256": self.config.sha256,
            "config_path": self.config.path,
            "instruments": setup_instruments(self.config, self.supervisors),
            "clock": self.clock_sync() if self.clock_sync is not None else None,
        }
        self._run_event("start", run_id, actor, reason, None, meta, now)
        self.attribution.run_id = run_id
        self.journal.run_id = run_id
        self.journal.audit(
            "run_start", actor=actor, subject=run_id, detail={**meta, "reason": reason}, run_id=run_id
        )
        start = {"run_id": run_id, "kind": "start", "ts_ns": now, "actor": actor, "reason": reason}
        run = store.runs_from_events([{**start, "detail": meta}])[0]
        self._active = run
        self.runs_started += 1
        log.info("run started", run_id=run_id, batch=batch, actor=actor)
        return run

    def _close(self, *, actor: str, reason: str | None) -> tuple[dict[str, Any], str, str | None, int]:
        """Close the open run now (synchronous); :meth:`_seal` finishes it."""
        required(actor=actor)
        run = self._require_active()
        self._active = None
        if self.attribution.run_id == run["run_id"]:
            self.attribution.run_id = None
        if self.journal.run_id == run["run_id"]:
            self.journal.run_id = None
        now = self.clock.time_ns()
        # Times of events in the run window never exceed the stop stamp: a stepped-back clock
        # must not make the window empty.
        run["ended_ns"] = max(now, run["started_ns"])
        return run, actor, reason, run["ended_ns"]

    async def _seal(self, closing: tuple[dict[str, Any], str, str | None, int]) -> dict[str, Any]:
        run, actor, reason, ended_ns = closing
        journal = self.journal
        async with self._sealing:
            await journal.flush()
            data_dir = self.config.daemon.data_dir

            def seal() -> tuple[str, dict[str, int]]:
                with JournalReader(data_dir) as reader:
                    reader.conn.execute("BEGIN")
                    through = current_through(reader.conn)
                    return seal_from_journal(reader.conn, run, through), through

            digest, through = await asyncio.to_thread(seal)
            detail = {"seal": digest, "seal_through": through, "algorithm": "sha256"}
            self._run_event("stop", run["run_id"], actor, reason, None, detail, ended_ns)
            journal.audit(
                "run_stop",
                actor=actor,
                subject=run["run_id"],
                detail={"reason": reason},
                run_id=run["run_id"],
            )
            journal.audit(
                "run_sealed", actor=actor, subject=run["run_id"], detail=detail, run_id=run["run_id"]
            )
            await journal.flush()
            # The heads now include the seal: deleting the run's rows from the end is detected.
            journal.anchors.anchor(f"seal:{run['run_id']}")
        run.update(ended_by=actor, stop_reason=reason, seal=digest, seal_through=through)
        self.runs_sealed += 1
        log.info("run sealed", run_id=run["run_id"], seal=digest)
        return dict(run)

    # -- the trigger ---------------------------------------------------------------------------

    def _trigger(self, reading: Reading) -> None:
        """Open a run on the trigger channel's rising edge, close it on the falling one.

        Called by the ``runs`` stage with the reading as its driver made it; the stage then
        attributes the reading, so the rising reading belongs to the new run and the falling
        one to none."""
        edge = self._edges.edge(reading)
        if edge is None:
            return
        s = self.settings
        if edge.rising and self._active is None:
            try:
                self._open(
                    batch=edge.batch, product=s.product, nuclide=s.nuclide, operator=s.operator,
                    method=s.method, actor=edge.actor, reason=edge.reason,
                )  # fmt: skip
            except DaqError as exc:  # a filter must never stop acquisition: record and go on
                log.error("run trigger failed", error=str(exc))
                self.journal.audit(
                    "run_trigger_failed", actor=edge.actor, subject=edge.batch, detail={"error": str(exc)}
                )
            return
        if not edge.rising and self._active is not None and self._active.get("started_by") == edge.actor:
            closing = self._close(actor=edge.actor, reason=edge.reason)
            task = asyncio.get_running_loop().create_task(self._seal(closing), name="runs-seal")
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)


def build(ctx: ServiceContext, *, clock_sync: Callable[[], dict[str, Any]] | None = None) -> RunManager:
    """Built by :func:`daq.services.build_services`: every daemon has runs."""
    config = ctx.config
    settings: RunsSection = config.model.runs
    if settings.trigger_instrument is not None:
        names = {i.name for i in config.instruments}
        if settings.trigger_instrument not in names:
            raise ConfigError(
                f"no instrument named {settings.trigger_instrument!r}; "
                f"expected one of: {', '.join(sorted(names))}",
                file=config.path,
                key_path="runs.trigger_instrument",
            )
    return RunManager(
        settings,
        config=config,
        clock=ctx.clock,
        journal=ctx.journal,
        attribution=ctx.run_attribution,
        equilibrium=ctx.equilibrium,
        supervisors=ctx.supervisors,
        clock_sync=clock_sync,
    )
