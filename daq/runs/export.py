"""A run's export, and verifying a copy of it.

``OUTDIR`` holds one file per table of the run (``readings``, ``events``, ``audit``,
``run_events``, ``configs`` and, when present, ``traces``, ``analyses`` and ``signatures``) as CSV or JSON,
``run.json`` (the run's metadata), ``summary.json`` (the report's figures) and
``manifest.json``. Every record carries its journal chain hash and the hash before it, so it
can be re-hashed on its own. The manifest lists the SHA-256 of every file, the column types,
and the seal; it ends with the SHA-256 of itself (computed with that field absent).

Verification (:func:`verify_export`) checks, in order: the manifest against itself, each file
against the manifest (naming the first file that differs), every record against its chain
hash, the seal recomputed from the records, each signature against the run and seal it signs
(:func:`daq.runs.signature_checks.check_exported`), and the figures recomputed from the records.
Given the journal too, it checks the seal against the one recorded when the run was closed.

In CSV, ``\\N`` marks a missing value (SQL NULL) and blobs are hexadecimal.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import sqlite3
from pathlib import Path
from typing import Any, Literal

from daq import __version__
from daq.errors import DaqError
from daq.journal import chain, codec
from daq.journal.journal import JOURNAL_FILE, connect
from daq.model import iso
from daq.runs import figures
from daq.runs.checked import ExportError, journal_run, open_journal
from daq.runs.seal import BASE_TABLES, compute_seal
from daq.runs.signature_checks import check_exported
from daq.runs.store import RunData, TableRows, runs_from_events

Format = Literal["csv", "json"]
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
NULL = "\\N"


def _json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _derived(table: str, row: dict[str, Any]) -> dict[str, Any]:
    """Columns for people (ISO 8601 times, quality names): not hashed; verification recomputes
    them with the rest of the file. A reading's are the codec's (:func:`codec.readable`)."""
    if table == "readings":
        return codec.readable(row)
    if "ts_ns" in row and isinstance(row["ts_ns"], int):
        return {"ts_iso": iso(row["ts_ns"])}
    return {}


def _cell(value: Any, typ: str) -> Any:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.hex()
    return value


def _parse_cell(text: Any, typ: str, fmt: Format) -> Any:
    if fmt == "csv":
        if text == NULL:
            return None
        if typ == "INTEGER":
            return int(text)
        if typ == "REAL":
            return float(text)
        if typ == "BLOB":
            return bytes.fromhex(text)
        return text
    if text is None:
        return None
    if typ == "BLOB":
        return bytes.fromhex(text)
    return text


def _table_text(t: TableRows, fmt: Format) -> str:
    if fmt == "json":
        # One record per line: readable, diffable, and several times faster than indenting.
        lines = []
        for r in t.rows:
            out = {c: _cell(r[c], typ) for c, typ in zip(t.columns, t.types, strict=True)}
            out.update(_derived(t.name, r))
            out["prev_hash"] = r["prev_hash"].hex()
            out["hash"] = r["hash"].hex()
            lines.append(json.dumps(out, sort_keys=True, ensure_ascii=False, separators=(",", ":")))
        head = json.dumps({"table": t.name, "columns": list(t.columns), "types": t.types}, sort_keys=True)
        return head[:-1] + ', "rows": [\n' + ",\n".join(lines) + "\n]}\n"
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    # With "\n" as the line end, the csv module does not quote a field holding a lone "\r",
    # which a reader then takes for a line break: such a row has every field quoted.
    quoted = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    extra = list(_derived(t.name, t.rows[0])) if t.rows else []
    writer.writerow([*t.columns, *extra, "prev_hash", "hash"])
    for r in t.rows:
        cells = [
            NULL if r[c] is None else _cell(r[c], typ) for c, typ in zip(t.columns, t.types, strict=True)
        ]
        line = [*cells, *_derived(t.name, r).values(), r["prev_hash"].hex(), r["hash"].hex()]
        (quoted if any(isinstance(c, str) and "\r" in c for c in line) else writer).writerow(line)
    return buf.getvalue()


def write_export(data_dir: Path, run_id: str, outdir: Path, fmt: Format = "csv") -> dict[str, Any]:
    """Export ``run_id`` from the journal in ``data_dir`` to ``outdir``; returns the manifest."""
    outdir = Path(outdir)
    if outdir.exists() and any(outdir.iterdir()):
        raise ExportError(f"{outdir} exists and is not empty; exports never overwrite")
    conn = open_journal(data_dir)
    try:
        data, seal, through = journal_run(conn, run_id)
    finally:
        conn.close()
    outdir.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    tables: dict[str, Any] = {}

    def write(name: str, text: str) -> None:
        path = outdir / name
        with path.open("w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        files[name] = _sha256(path)

    for table in data.tables:  # the seal's tables, then the signatures
        t = data.tables[table]
        name = f"{table}.{fmt}"
        write(name, _table_text(t, fmt))
        tables[table] = {"file": name, "columns": list(t.columns), "types": t.types, "rows": len(t.rows)}
    write("run.json", _json_text(data.run))
    write("summary.json", _json_text(figures.summarize(decoded(data))))
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "generator": f"hotcell-daq {__version__}",
        "run_id": run_id,
        "format": fmt,
        "sealed": bool(data.run.get("seal")),
        "seal": seal,
        "seal_through": through,
        # How the records' chain hashes are computed (an export from a version-1 journal
        # keeps version 1); an older manifest without the key is version 1.
        "chain_payload": data.chain_version,
        "tables": tables,
        "files": files,
    }
    body = _json_text(manifest)
    manifest["manifest_sha256"] = hashlib.sha256(body.encode()).hexdigest()
    (outdir / MANIFEST).write_text(_json_text(manifest), encoding="utf-8")
    _anchor_export(Path(data_dir), run_id)
    return manifest


def _anchor_export(data_dir: Path, run_id: str) -> None:
    """Anchor the chains' heads at an export (daq.journal.anchors) when the daemon is stopped;
    a running daemon's journal anchors itself, and the export's seal is kept outside."""
    import time

    from daq.journal.anchors import TABLE, anchor_offline
    from daq.journal.lock import take_lock

    try:
        lock = take_lock(data_dir)
    except (DaqError, OSError):
        return  # the daemon runs (it anchors), or the journal is a read-only copy
    try:
        conn = connect(data_dir / JOURNAL_FILE)
        try:
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (TABLE,)).fetchone():
                conn.execute("BEGIN IMMEDIATE")
                try:
                    anchor_offline(conn, f"export:{run_id}", time.time_ns())
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        finally:
            conn.close()
    except sqlite3.Error:
        pass  # best effort: the export itself is complete and carries its seal
    finally:
        lock.close()


def decoded(data: RunData) -> RunData:
    """``data`` with the JSON text columns (``attrs``, ``detail``, ``results``...) decoded."""
    tables = {}
    for name, t in data.tables.items():
        rows = []
        for r in t.rows:
            d = dict(r)
            for col in ("attrs", "detail", "results", "params"):
                if isinstance(d.get(col), str) and d[col]:
                    try:
                        d[col] = json.loads(d[col])
                    except ValueError:
                        pass
            rows.append(d)
        tables[name] = dataclasses.replace(t, rows=rows)
    return RunData(data.run, tables, data.chain_version)


# -- verification -------------------------------------------------------------------------


@dataclasses.dataclass
class ExportReport:
    path: str
    ok: bool
    run_id: str | None = None
    files: int = 0
    records: int = 0
    seal: str | None = None
    problem: str | None = None
    file: str | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _read_table(path: Path, spec: dict[str, Any], fmt: Format) -> list[dict[str, Any]]:
    columns, types = spec["columns"], spec["types"]
    rows: list[dict[str, Any]] = []
    if fmt == "json":
        doc = json.loads(path.read_text(encoding="utf-8"))
        raw_rows = doc["rows"]
    else:
        with path.open(encoding="utf-8", newline="") as f:
            raw_rows = list(csv.DictReader(f))
    for raw in raw_rows:
        row = {c: _parse_cell(raw[c], typ, fmt) for c, typ in zip(columns, types, strict=True)}
        row["prev_hash"] = bytes.fromhex(raw["prev_hash"])
        row["hash"] = bytes.fromhex(raw["hash"])
        rows.append(row)
    return rows


def spec_file(manifest: dict[str, Any], table: str) -> str:
    return str(manifest["tables"][table]["file"])


def verify_export(outdir: Path, *, data_dir: Path | None = None) -> ExportReport:
    """Verify a (copied) export; never modifies it. See the module docstring for the checks.

    Whatever the files hold, the answer is a report (never an exception) naming the file at fault.
    """
    outdir = Path(outdir)
    report = ExportReport(str(outdir), ok=False)
    at = [MANIFEST]  # the file being read, named if its content cannot be made sense of
    try:
        return _verify(outdir, data_dir, report, at)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, csv.Error, OSError) as exc:
        report.ok = False
        report.problem, report.file = f"{at[0]} cannot be read as part of an export: {exc!r}", at[0]
        return report


def _verify(outdir: Path, data_dir: Path | None, report: ExportReport, at: list[str]) -> ExportReport:
    def fail(problem: str, file: str | None) -> ExportReport:
        report.problem, report.file = problem, file
        return report

    mpath = outdir / MANIFEST
    if not mpath.is_file():
        return fail(f"no {MANIFEST} in {outdir}", MANIFEST)
    text = mpath.read_text(encoding="utf-8", errors="replace")
    try:
        manifest = json.loads(text)
        claimed = manifest.pop("manifest_sha256")
    except (ValueError, KeyError, AttributeError):
        return fail(f"{MANIFEST} is not a valid manifest (altered)", MANIFEST)
    if hashlib.sha256(_json_text(manifest).encode()).hexdigest() != claimed:
        return fail(f"{MANIFEST} does not match its own SHA-256 (altered)", MANIFEST)
    if _json_text({**manifest, "manifest_sha256": claimed}) != text:
        return fail(f"{MANIFEST} differs from its canonical form (altered)", MANIFEST)
    report.run_id = manifest.get("run_id")
    fmt: Format = manifest["format"]
    for name, digest in manifest["files"].items():
        if Path(name).name != name or name in ("", ".", ".."):
            return fail(f"the manifest names a file outside the export: {name!r}", MANIFEST)
        path = outdir / name
        if not path.is_file():
            return fail(f"{name} is missing", name)
        if _sha256(path) != digest:
            return fail(f"{name} does not match its SHA-256 in the manifest (altered)", name)
        report.files += 1
    listed = {*manifest["files"], MANIFEST}
    report.warnings = [
        f"{p.name} is not part of the export" for p in outdir.iterdir() if p.name not in listed
    ]
    tables: dict[str, TableRows] = {}
    hashes: dict[str, list[tuple[int, bytes]]] = {}
    for table, spec in manifest["tables"].items():
        name = spec["file"]
        if name not in manifest["files"]:
            return fail(f"table {table}: {name!r} is not among the manifest's files", MANIFEST)
        at[0] = name
        try:
            rows = _read_table(outdir / name, spec, fmt)
        except (ValueError, KeyError, TypeError) as exc:
            return fail(f"{name} cannot be read: {exc}", name)
        # Written back, the records must give the file byte for byte: nothing else is in it.
        again = _table_text(TableRows(table, tuple(spec["columns"]), spec["types"], rows), fmt)
        with (outdir / name).open(encoding="utf-8", newline="") as f:
            written = f.read()  # as written: a "\r" inside a field is data, not a line end
        if again != written:
            return fail(f"{name} holds more or other than its records (altered)", name)
        previous: dict[str, Any] | None = None
        payload = chain.payload_for(table, int(manifest.get("chain_payload", 1)))
        for row in rows:
            values = tuple(row[c] for c in spec["columns"])
            if chain.link(row["prev_hash"], payload(values)) != row["hash"]:
                return fail(f"{name}: record {row['id']} does not match its chain hash (altered)", name)
            if (
                previous is not None
                and previous["id"] == row["id"] - 1
                and previous["hash"] != row["prev_hash"]
            ):
                return fail(f"{name}: record {row['id']} does not chain to record {previous['id']}", name)
            previous = row
        report.records += len(rows)
        hashes[table] = [(r["id"], r["hash"]) for r in rows]
        tables[table] = TableRows(table, tuple(spec["columns"]), spec["types"], rows)
    # The TLC tables may be absent from an export made by a build without them.
    missing = [t for t in BASE_TABLES if t not in tables]
    missing += [f for f in ("run.json", "summary.json") if f not in manifest["files"]]
    if missing:
        return fail(f"the manifest lacks {', '.join(missing)}", MANIFEST)
    at[0] = "run.json"
    run_text = (outdir / "run.json").read_text(encoding="utf-8")
    # The run's metadata follows from its run_events records.
    derived = runs_from_events(tables["run_events"].rows)
    if len(derived) != 1 or _json_text(derived[0]) != run_text:
        return fail("run.json does not follow from the run's run_events records (altered)", "run.json")
    run = json.loads(run_text)
    seal = compute_seal(str(manifest["run_id"]), hashes, manifest["seal_through"])
    if seal != manifest["seal"] or (run.get("seal") and run["seal"] != seal):
        return fail(f"the records do not reproduce the seal {manifest['seal']} (got {seal})", MANIFEST)
    report.seal = seal
    if "signatures" in tables:
        problem = check_exported(
            tables["signatures"].rows, run_id=str(manifest["run_id"]), seal=seal,
            analyses=tables["analyses"].rows if "analyses" in tables else [],
        )  # fmt: skip
        if problem is not None:
            return fail(problem, spec_file(manifest, "signatures"))
    at[0] = "summary.json"
    summary_text = (outdir / "summary.json").read_text(encoding="utf-8")
    exported = RunData(run, tables, int(manifest.get("chain_payload", 1)))
    if _json_text(figures.summarize(decoded(exported))) != summary_text:
        return fail("summary.json does not follow from the exported records", "summary.json")
    if data_dir is not None:
        conn = open_journal(data_dir)
        try:
            jdata, journal_seal, _ = journal_run(conn, str(manifest["run_id"]))
            jrun = jdata.run
        except DaqError as exc:
            return fail(f"checked against the journal: {exc}", JOURNAL_FILE)
        finally:
            conn.close()
        if jrun.get("seal") and journal_seal != seal:
            return fail(f"the journal's seal {journal_seal} differs from the export's {seal}", MANIFEST)
    report.ok = True
    return report


__all__ = ["ExportError", "ExportReport", "verify_export", "write_export"]
