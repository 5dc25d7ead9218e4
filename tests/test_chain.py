"""The hash payload encodings: version 2 gives distinct rows distinct payloads; journals (and
their exports) written with version 1 stay verifiable and keep being written with version 1."""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from daq.journal import JournalReader, chain, verify_journal
from daq.journal.journal import JOURNAL_FILE
from daq.journal.schema import CHAINED, migrate
from daq.runs.export import verify_export, write_export
from tests.runs_helpers import record_run

column = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(),
    st.binary(),
)
rows = st.lists(column, max_size=6).map(tuple)


def identity(row: tuple[Any, ...]) -> tuple[tuple[str, str], ...]:
    """What makes two rows the same row: each column's type and exact value (``repr`` tells
    0.0 from -0.0, which compare equal)."""
    return tuple((type(v).__name__, repr(v)) for v in row)


@given(rows, rows)
def test_distinct_rows_give_distinct_payloads(a: tuple[Any, ...], b: tuple[Any, ...]) -> None:
    payload = chain.payload_for("events", 2)
    assert (payload(a) == payload(b)) == (identity(a) == identity(b))


#: A readings row: 14 columns, the 8th (``value``, REAL) a float or NULL.
reading_rows = st.tuples(
    st.lists(column, min_size=7, max_size=7),
    st.none() | st.floats(allow_nan=False),
    st.lists(column, min_size=6, max_size=6),
).map(lambda t: (*t[0], t[1], *t[2]))


@given(reading_rows, reading_rows)
def test_distinct_reading_rows_give_distinct_payloads(a: tuple[Any, ...], b: tuple[Any, ...]) -> None:
    payload = chain.payload_for("readings", 2)
    assert (payload(a) == payload(b)) == (identity(a) == identity(b))


def reference_v2(row: tuple[Any, ...], real_at: int = -1) -> bytes:
    """Version 2 as the module docstring specifies it, written plainly: the writer's encoder
    is tuned for speed (cached text, looked-up prefixes) and must give exactly these bytes."""
    out = b""
    for index, v in enumerate(row):
        if v is None:
            tag, data = b"N", b""
        elif index == real_at or isinstance(v, float):
            tag, data = b"f", struct.pack(">d", float(v))
        elif isinstance(v, int):
            tag, data = b"i", str(int(v)).encode()
        elif isinstance(v, str):
            tag, data = b"s", v.encode()
        else:
            tag, data = b"b", bytes(v)
        out += tag + struct.pack(">Q", len(data)) + data
    return out


@given(rows)
def test_the_encoder_gives_the_specified_bytes(row: tuple[Any, ...]) -> None:
    assert chain.payload_for("events", 2)(row) == reference_v2(row)
    assert chain.payload_for("events", 2)(row) == reference_v2(row)  # again, from the text cache


int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
#: The shapes the writer hashes (a canonical reading's row), which take the encoder's fast path.
canonical_reading_rows = st.tuples(
    int64, st.text(), st.text(), int64, int64, int64, st.none() | int64,
    st.none() | st.floats(allow_nan=False), st.text(), int64, st.none() | st.text(),
    st.none() | st.binary(), st.none() | st.text(), st.none() | st.text(),
)  # fmt: skip


@given(reading_rows | canonical_reading_rows)
def test_the_readings_encoder_gives_the_specified_bytes(row: tuple[Any, ...]) -> None:
    assert chain.payload_for("readings", 2)(row) == reference_v2(row, real_at=7)
    assert chain.payload_for("readings", 2)(row) == reference_v2(row, real_at=7)  # from the text cache


@given(canonical_reading_rows)
def test_the_writers_encoder_of_canonical_rows_gives_the_same_bytes(row: tuple[Any, ...]) -> None:
    # The writer skips the type checks for rows of canonical readings; the verifier does not.
    assert chain.payload_for("readings", 2, canonical_rows=True)(row) == reference_v2(row, real_at=7)


@given(canonical_reading_rows, canonical_reading_rows)
def test_distinct_canonical_reading_rows_give_distinct_payloads(
    a: tuple[Any, ...], b: tuple[Any, ...]
) -> None:
    payload = chain.payload_for("readings", 2)
    assert (payload(a) == payload(b)) == (identity(a) == identity(b))


def test_long_text_and_huge_integers_are_encoded_whole() -> None:
    row = ("x" * 100_000, 10**30, -(10**25), True, b"\x00" * 3)
    assert chain.typed_payload(row) == reference_v2(row)
    # A readings row of the canonical shape with an integer beyond int64 (an altered row read
    # back for verification) leaves the fast path and is still encoded whole.
    reading_row = (10**30, "dc1", "activity", 1, 2, 3, None, 1.5, "MBq", 0, None, None, None, None)
    assert chain.payload_for("readings", 2)(reading_row) == reference_v2(reading_row, real_at=7)


def test_version_1_confused_what_version_2_tells_apart() -> None:
    pairs = [
        ((1, 1), (1, "1")),  # the int 1 and the string "1"
        ((1, "a\x1fb", "c"), (1, "a", "b\x1fc")),  # the separator inside text
        ((1, None), (1, "\x00")),  # NULL and its marker as text
    ]
    for a, b in pairs:
        assert chain.payload_for("audit", 1)(a) == chain.payload_for("audit", 1)(b)
        assert chain.payload_for("audit", 2)(a) != chain.payload_for("audit", 2)(b)


def test_the_encoding_is_exact() -> None:
    # Fixed bytes: a change to the encoding would make every stored journal unverifiable.
    payload = chain.payload_for("audit", 2)((7, None, "é", b"\x01", 1.5))
    assert payload == (
        b"i" + (1).to_bytes(8, "big") + b"7"
        + b"N" + bytes(8)
        + b"s" + (2).to_bytes(8, "big") + "é".encode()
        + b"b" + (1).to_bytes(8, "big") + b"\x01"
        + b"f" + (8).to_bytes(8, "big") + bytes.fromhex("3ff8000000000000")
    )  # fmt: skip


def test_a_new_journal_records_version_2(data_dir: Path) -> None:
    conn = sqlite3.connect(data_dir / JOURNAL_FILE)
    migrate(conn)
    assert chain.payload_version(conn) == chain.PAYLOAD_VERSION == 2
    conn.close()


async def test_a_version_1_journal_stays_verifiable(data_dir: Path, tmp_path: Path) -> None:
    # A journal created before version 2 existed: the same schema without the meta key. The
    # daemon keeps writing it with version 1 (one chain, one encoding).
    conn = sqlite3.connect(data_dir / JOURNAL_FILE)
    migrate(conn)
    conn.execute("DELETE FROM meta WHERE key = ?", (chain.META_KEY,))
    conn.commit()
    assert chain.payload_version(conn) == 1
    conn.close()
    rec = await record_run(data_dir, readings=5)
    report = verify_journal(data_dir)
    assert report.ok, report
    # Every row is hashed with the version-1 encoding, not the version-2 one.
    with JournalReader(data_dir) as r:
        assert r.readings(limit=1_000)
    conn = sqlite3.connect(data_dir / JOURNAL_FILE)
    assert chain.payload_version(conn) == 1
    for table in ("readings", "events", "audit", "run_events"):
        cols = ", ".join(CHAINED[table])
        previous = chain.GENESIS
        rows = conn.execute(f"SELECT {cols}, hash FROM {table} ORDER BY id").fetchall()
        assert rows, table
        for row in rows:
            previous = chain.link(previous, chain.payload_for(table, 1)(row[:-1]))
            assert previous == row[-1], (table, row[0])
        assert chain.link(chain.GENESIS, chain.payload_for(table, 2)(rows[0][:-1])) != rows[0][-1]
    conn.close()
    out = tmp_path / "export"
    manifest = write_export(data_dir, rec.run_id, out, "csv")
    assert manifest["chain_payload"] == 1
    checked = verify_export(out, data_dir=data_dir)
    assert checked.ok, checked.problem
