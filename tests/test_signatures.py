"""Users, review and electronic signatures: every refusal audited, signatures bound to their run.

The commands run as a person would run them (``daq users ...``, ``daq runs sign ...``) with the
user id and password fed on standard input, never on the command line.
"""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

import daq.users.records
from daq.cli import main as cli
from daq.cli import signing
from daq.clock import SystemClock
from daq.journal import chain
from daq.journal.journal import JOURNAL_FILE, Journal
from daq.journal.schema import guards
from daq.runs.export import verify_export, write_export
from daq.runs.signature_checks import verify_signatures
from daq.users import accounts
from tests.runs_helpers import record_run

ADMIN_PW = "admin-password-1"
REV_PW = "reviewer-pass-22"
APPR_PW = "approver-pass-333"
ALICE_PW = "alice-operator-4444"


@pytest.fixture
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2id with a small cost for the signing tests (each signs in a dozen times); the
    parameters travel in each hash, and the users test keeps the production ones."""
    monkeypatch.setattr(
        daq.users.records, "_HASHER", PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
    )


def run_cli(argv: list[str], stdin: str = "") -> tuple[int, str, str]:
    """Run ``daq`` with ``stdin`` piped in; returns (exit code, stdout, stderr)."""
    old_in, old_out, old_err = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = io.StringIO(stdin), io.StringIO(), io.StringIO()
    try:
        rc = cli(argv)
        return rc, sys.stdout.getvalue(), sys.stderr.getvalue()
    finally:
        sys.stdin, sys.stdout, sys.stderr = old_in, old_out, old_err


async def arun(argv: list[str], stdin: str = "") -> tuple[int, str, str]:
    return await asyncio.to_thread(run_cli, argv, stdin)


def audit(data_dir: Path, action: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(data_dir / JOURNAL_FILE)
    try:
        rows = conn.execute(
            "SELECT actor, subject, detail, run_id FROM audit WHERE action = ? ORDER BY id", (action,)
        ).fetchall()
    finally:
        conn.close()
    return [{"actor": a, "subject": s, "detail": json.loads(d or "{}"), "run_id": r} for a, s, d, r in rows]


def make_users(data_dir: Path) -> None:
    d = ["--data-dir", str(data_dir)]
    assert (
        run_cli(["users", "add", "admin", "--name", "Ada Admin", "--roles", "admin", *d], f"{ADMIN_PW}\n")[0]
        == 0
    )
    admin = f"admin\n{ADMIN_PW}\n"
    for uid, name, roles, pw in (
        ("rev", "Rita Reviewer", "reviewer", REV_PW),
        ("appr", "Arno Approver", "approver", APPR_PW),
        ("alice", "Alice Operator", "operator,approver", ALICE_PW),
    ):
        rc, _, err = run_cli(["users", "add", uid, "--name", name, "--roles", roles, *d], f"{admin}{pw}\n")
        assert rc == 0, err


def test_users_add_passwd_disable_list_and_lockout(data_dir: Path, tmp_path: Path) -> None:
    d = ["--data-dir", str(data_dir)]
    cfg = tmp_path / "users.toml"
    cfg.write_text("[users]\nmin_password_length = 12\nmax_failed_attempts = 3\n")
    c = [*d, "--config", str(cfg)]
    # The first account must be an admin.
    rc, _, err = run_cli(
        ["users", "add", "bob", "--name", "Bob", "--roles", "reviewer", *c], "long-enough-pw\n"
    )
    assert rc == 1
    assert "first account must have the admin role" in err
    assert (
        run_cli(["users", "add", "admin", "--name", "Ada Admin", "--roles", "admin", *c], f"{ADMIN_PW}\n")[0]
        == 0
    )
    # Later accounts need an admin; a short password is refused and audited.
    rc, _, err = run_cli(
        ["users", "add", "rev", "--name", "Rita Reviewer", "--roles", "reviewer", *c],
        f"admin\n{ADMIN_PW}\nshort\n",
    )
    assert rc == 1
    assert "at least 12 characters" in err
    rc, _, err = run_cli(
        ["users", "add", "rev", "--name", "Rita Reviewer", "--roles", "reviewer", *c],
        f"admin\n{ADMIN_PW}\n{REV_PW}\n",
    )
    assert rc == 0, err
    # A reviewer cannot create accounts.
    rc, _, err = run_cli(
        ["users", "add", "eve", "--name", "Eve", "--roles", "admin", *c], f"rev\n{REV_PW}\nxxxxxxxxxxxxxx\n"
    )
    assert rc == 1
    assert "not an admin" in err
    refused = audit(data_dir, "user_change_refused")
    assert [r["detail"]["refused"] for r in refused] == [
        "the first account must have the admin role",
        "the password must have at least 12 characters",
        "rev is not an admin",
    ]
    # Three wrong passwords lock the account; then even the right one is refused.
    for _ in range(3):
        rc, _, err = run_cli(["users", "passwd", "rev", *c], "rev\nwrong-password!!\nnew-password-123\n")
        assert rc == 1
        assert "wrong password" in err
    rc, _, err = run_cli(["users", "passwd", "rev", *c], f"rev\n{REV_PW}\nnew-password-123\n")
    assert rc == 1
    assert "locked" in err
    reasons = [a["detail"]["reason"] for a in audit(data_dir, "auth_failed") if a["subject"] == "rev"]
    assert reasons[:3] == ["wrong password"] * 3
    assert "account locked" in reasons[3]
    assert [a["subject"] for a in audit(data_dir, "account_locked")] == ["rev"]
    rc, out, _ = run_cli(["users", "list", *c])
    assert "LOCKED" in out
    # An admin unlocks; the user changes their own password.
    assert run_cli(["users", "unlock", "rev", "--reason", "forgot", *c], f"admin\n{ADMIN_PW}\n")[0] == 0
    rc, _, err = run_cli(["users", "passwd", "rev", *c], f"rev\n{REV_PW}\nnew-password-123\n")
    assert rc == 0, err
    # Disabled for good: it stays listed, cannot sign in.
    assert (
        run_cli(["users", "disable", "rev", "--reason", "left the site", *c], f"admin\n{ADMIN_PW}\n")[0] == 0
    )
    rc, out, _ = run_cli(["users", "list", "--json", *c])
    listed = {u["user_id"]: u for u in json.loads(out)}
    assert listed["rev"]["active"] is False
    assert "pw_hash" not in out
    assert "argon2" not in out
    rc, _, err = run_cli(["users", "passwd", "rev", *c], "rev\nnew-password-123\nanother-password-9\n")
    assert rc == 1
    assert "disabled" in err
    # Stored: argon2id hashes only, one row per change, never a password in clear.
    raw = (data_dir / JOURNAL_FILE).read_bytes()
    assert REV_PW.encode() not in raw
    assert b"new-password-123" not in raw
    conn = sqlite3.connect(data_dir / JOURNAL_FILE)
    kinds = [r[0] for r in conn.execute("SELECT kind FROM users WHERE user_id='rev' ORDER BY id")]
    hashes = [r[0] for r in conn.execute("SELECT pw_hash FROM users WHERE pw_hash IS NOT NULL")]
    conn.close()
    assert kinds == ["created", "unlocked", "password_changed", "disabled"]
    # argon2id with RFC 9106's low-memory profile (64 MiB, 3 passes, 4 lanes).
    assert all(h.startswith("$argon2id$v=19$m=65536,t=3,p=4$") for h in hashes)
    assert [a["subject"] for a in audit(data_dir, "user_created")] == ["admin", "rev"]
    assert run_cli(["verify", *d])[0] == 0


@pytest.mark.usefixtures("cheap_hashes")
async def test_signing_rules_each_refusal_audited(data_dir: Path) -> None:
    rec = await record_run(data_dir, readings=5)
    await asyncio.to_thread(make_users, data_dir)
    d = ["--data-dir", str(data_dir)]
    sign = ["runs", "sign", rec.run_id, *d, "--meaning"]

    async def refused(meaning: str, stdin: str, text: str) -> None:
        rc, _, err = await arun([*sign, meaning], stdin)
        assert rc == 1
        assert text in err

    await refused("reviewed", "rev\nnot-the-password\n", "wrong password")
    await refused("approved", f"rev\n{REV_PW}\n", "signing 'approved' needs approver")
    await refused("approved", f"appr\n{APPR_PW}\n", "must be reviewed before it is approved")
    rc, out, err = await arun([*sign, "reviewed", "--comment", "trace and gaps checked"], f"rev\n{REV_PW}\n")
    assert rc == 0, err
    assert "REVIEWED by Rita Reviewer (rev)" in out
    # alice operated the run (its operator): separation of duties.
    await refused("approved", f"alice\n{ALICE_PW}\n", "separation of duties: alice operated run")
    rc, out, err = await arun([*sign, "approved"], f"appr\n{APPR_PW}\n")
    assert rc == 0, err
    failed = [a for a in audit(data_dir, "auth_failed") if a["run_id"] == rec.run_id]
    assert [a["detail"]["reason"] for a in failed] == ["wrong password"]
    reasons = [a["detail"]["reason"] for a in audit(data_dir, "signature_refused")]
    assert len(reasons) == 3
    assert "needs approver" in reasons[0]
    assert "reviewed before it is approved" in reasons[1]
    assert "separation of duties" in reasons[2]
    assert all(a["run_id"] == rec.run_id for a in audit(data_dir, "signature_refused"))
    assert len(audit(data_dir, "run_signed")) == 2
    # An open (unsealed) run cannot be signed.
    journal = await Journal.open(data_dir, clock=SystemClock())
    now = journal.clock.time_ns()
    journal.record(
        "run_events",
        {
            "run_id": "OPEN-1",
            "kind": "start",
            "ts_ns": now,
            "mono_ns": 0,
            "actor": "x",
            "reason": None,
            "instrument": None,
            "detail": json.dumps({"batch": "B2"}),
        },
    )
    await journal.flush()
    await journal.close()
    rc, _, err = await arun(["runs", "sign", "OPEN-1", *d, "--meaning", "reviewed"], f"rev\n{REV_PW}\n")
    assert rc == 1
    assert "not sealed" in err
    assert "not sealed" in audit(data_dir, "signature_refused")[-1]["detail"]["reason"]
    # A locked account is refused even with the right password, and audited.
    for _ in range(5):
        await arun([*sign, "rejected"], "appr\nnope-nope-nope\n")
    await refused("rejected", f"appr\n{APPR_PW}\n", "locked")
    assert audit(data_dir, "account_locked")[-1]["subject"] == "appr"
    assert "account locked" in audit(data_dir, "auth_failed")[-1]["detail"]["reason"]
    # The review shows the signatures and what is left.
    rc, out, _ = await arun(["runs", "review", rec.run_id, *d])
    assert rc == 0
    assert "REVIEWED" in out
    assert "APPROVED" in out
    assert "unsigned: nothing" in out
    # daq demo's closing summary prints the QC commands for the last sealed run.
    qc = "\n".join(signing.summary_lines(data_dir))
    assert f"daq runs review {rec.run_id} --data-dir {data_dir}" in qc
    assert f"daq runs sign {rec.run_id} --meaning approved --data-dir {data_dir}" in qc
    assert f"daq report {rec.run_id} --data-dir {data_dir} --out" in qc
    assert (await arun(["verify", *d]))[0] == 0


def _tamper(data_dir: Path, sql: list[str]) -> None:
    conn = sqlite3.connect(data_dir / JOURNAL_FILE)
    for s in sql:
        conn.execute(s)
    conn.commit()
    conn.close()


@pytest.mark.usefixtures("cheap_hashes")
async def test_reintegration_after_signing_and_tampered_signatures(data_dir: Path, tmp_path: Path) -> None:
    rec = await record_run(data_dir, readings=5)
    await asyncio.to_thread(make_users, data_dir)
    d = ["--data-dir", str(data_dir)]
    rc, _, err = await arun(["runs", "sign", rec.run_id, *d, "--meaning", "reviewed"], f"rev\n{REV_PW}\n")
    assert rc == 0, err
    # The export carries the signature and verifies; one flipped byte of it fails.
    out = tmp_path / "export"
    write_export(data_dir, rec.run_id, out, "csv")
    text = (out / "signatures.csv").read_text()
    assert "Rita Reviewer" in text
    assert verify_export(out, data_dir=data_dir).ok
    flipped = tmp_path / "flipped"
    write_export(data_dir, rec.run_id, flipped, "csv")
    blob = bytearray((flipped / "signatures.csv").read_bytes())
    i = blob.index(b"Rita")
    blob[i] ^= 0x01
    (flipped / "signatures.csv").write_bytes(bytes(blob))
    bad = verify_export(flipped)
    assert not bad.ok
    assert bad.file == "signatures.csv"
    # A re-integration after the signature: the signature covers the earlier analysis version.
    args = [
        "tlc",
        "reintegrate",
        "T-1",
        *d,
        "--roi",
        "p:product:0.1:0.35",
        "--roi",
        "f:impurity:0.7:0.9",
        "--origin-mm",
        "10",
        "--front-mm",
        "90",
        "--limit",
        "95",
        "--actor",
        "carol",
        "--reason",
        "wider ROI",
    ]
    assert (await arun(args))[0] == 0
    rc, review, _ = await arun(["runs", "review", rec.run_id, *d])
    assert "covers earlier analysis versions: A-2" in review
    assert "unsigned: review; approval" in review
    assert (await arun(["verify", *d]))[0] == 0
    # A signature copied into another run (even with a proper chain hash) fails verify, named.
    conn = sqlite3.connect(data_dir / JOURNAL_FILE)
    cols = (
        "id",
        "signature_id",
        "run_id",
        "ts_ns",
        "mono_ns",
        "user_id",
        "printed_name",
        "meaning",
        "comment",
        "clock",
        "seal",
        "analyses",
        "detail",
    )
    row = list(conn.execute(f"SELECT {', '.join(cols)} FROM signatures ORDER BY id DESC LIMIT 1").fetchone())
    prev = conn.execute("SELECT hash FROM signatures ORDER BY id DESC LIMIT 1").fetchone()[0]
    conn.close()
    row[0] += 1
    row[2] = "OTHER-RUN"
    digest = chain.link(prev, chain.payload_for("signatures", chain.PAYLOAD_VERSION)(tuple(row)))
    conn = sqlite3.connect(data_dir / JOURNAL_FILE)
    conn.execute(
        f"INSERT INTO signatures ({', '.join(cols)}, hash) VALUES ({', '.join('?' * 14)})", (*row, digest)
    )
    conn.commit()
    conn.close()
    rc, _, err = await arun(["verify", *d])
    assert rc == 1
    assert f"signatures record {row[0]}" in err
    assert "OTHER-RUN" in err
    _tamper(data_dir, ["DROP TRIGGER signatures_no_delete", f"DELETE FROM signatures WHERE id = {row[0]}"])
    # Now remove the real one and put the guard back: its audit entry still names it.
    _tamper(data_dir, ["DELETE FROM signatures", *guards("signatures")])
    rc, _, err = await arun(["verify", *d])
    assert rc == 1
    # The export anchored the chains' heads, so verify already names the table cut short;
    # the signature check, on its own, names the signature its audit entry still lists.
    assert "signatures: records after id 0 were deleted" in err
    conn = sqlite3.connect(f"file:{data_dir / JOURNAL_FILE}?mode=ro", uri=True)
    try:
        problems = [str(p) for p in verify_signatures(conn)]
    finally:
        conn.close()
    assert any("does not hold it (removed)" in p for p in problems)


@pytest.mark.usefixtures("cheap_hashes")
async def test_edited_signature_fails_verify_naming_it(data_dir: Path) -> None:
    rec = await record_run(data_dir, readings=5)
    await asyncio.to_thread(make_users, data_dir)
    d = ["--data-dir", str(data_dir)]
    assert (await arun(["runs", "sign", rec.run_id, *d, "--meaning", "reviewed"], f"rev\n{REV_PW}\n"))[0] == 0
    assert (await arun(["runs", "sign", rec.run_id, *d, "--meaning", "approved"], f"appr\n{APPR_PW}\n"))[
        0
    ] == 0
    _tamper(
        data_dir,
        ["DROP TRIGGER signatures_no_update", "UPDATE signatures SET meaning = 'reviewed' WHERE id = 2"],
    )
    rc, _, err = await arun(["verify", *d])
    assert rc == 1
    assert "signatures record 2 does not match its hash chain" in err
    conn = sqlite3.connect(data_dir / JOURNAL_FILE)
    assert len(accounts(conn)) == 4
    conn.close()


@pytest.mark.usefixtures("cheap_hashes")
async def test_signing_through_the_local_api(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the daemon running: the API token and the signer's own credentials, audited."""
    import aiohttp

    from tests.test_api import TOKEN, running_daemon

    await asyncio.to_thread(make_users, data_dir)
    monkeypatch.setenv("DAQ_TEST_API_TOKEN", TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}", "X-Actor": "alice"}
    start = {"batch": "B-9", "product": "[18F]FDG", "nuclide": "F-18", "operator": "alice"}
    async with (
        running_daemon(data_dir, api='token_env = "DAQ_TEST_API_TOKEN"\n') as (_, url, _),
        aiohttp.ClientSession() as http,
    ):
        async with http.post(f"{url}/api/runs", json=start, headers=auth) as resp:
            run_id = (await resp.json())["run_id"]
        sig_url = f"{url}/api/runs/{run_id}/signatures"
        body = {"user_id": "rev", "password": REV_PW, "meaning": "reviewed"}
        async with http.post(sig_url, json=body, headers=auth) as resp:
            assert resp.status == 403  # still open: not sealed
            assert "not sealed" in (await resp.json())["error"]
        async with http.post(f"{url}/api/runs/active/stop", json={}, headers=auth) as resp:
            assert resp.status == 200
        async with http.post(sig_url, json=body) as resp:
            assert resp.status == 401  # no API token
        async with http.post(sig_url, json={**body, "password": "wrong-password!"}, headers=auth) as resp:
            assert resp.status == 403
            assert "wrong password" in (await resp.json())["error"]
        async with http.post(sig_url, json={**body, "colour": "red"}, headers=auth) as resp:
            assert resp.status == 400
        async with http.post(sig_url, json={**body, "comment": "checked live"}, headers=auth) as resp:
            assert resp.status == 200, await resp.text()
            sig = await resp.json()
        assert sig["printed_name"] == "Rita Reviewer"
        assert "password" not in json.dumps(sig)
    refused = [a for a in audit(data_dir, "signature_refused") if a["run_id"] == run_id]
    assert "not sealed" in refused[0]["detail"]["reason"]
    assert [a["detail"]["reason"] for a in audit(data_dir, "auth_failed") if a["run_id"] == run_id] == [
        "wrong password"
    ]
    assert [a["subject"] for a in audit(data_dir, "run_signed")] == [run_id]
    _, out, _ = await arun(["runs", "review", run_id, "--data-dir", str(data_dir)])
    assert "REVIEWED" in out
    assert "comment: checked live" in out
    assert (await arun(["verify", "--data-dir", str(data_dir)]))[0] == 0


@pytest.mark.usefixtures("cheap_hashes")
async def test_export_signature_re_hashed_for_another_seal_fails(data_dir: Path, tmp_path: Path) -> None:
    """A forger edits the exported signature to sign another seal and re-hashes it and the
    manifest: every per-file and chain check passes, the binding to the exported seal does not."""
    import hashlib

    from daq.runs.export import MANIFEST, _json_text, _read_table, _table_text
    from daq.runs.store import TableRows

    rec = await record_run(data_dir, readings=3)
    await asyncio.to_thread(make_users, data_dir)
    d = ["--data-dir", str(data_dir)]
    assert (await arun(["runs", "sign", rec.run_id, *d, "--meaning", "reviewed"], f"rev\n{REV_PW}\n"))[0] == 0
    out = tmp_path / "e"
    write_export(data_dir, rec.run_id, out, "json")
    manifest = json.loads((out / MANIFEST).read_text())
    spec = manifest["tables"]["signatures"]
    rows = _read_table(out / spec["file"], spec, "json")
    assert len(rows) == 1
    rows[0]["seal"] = "0" * 64
    values = tuple(rows[0][c] for c in spec["columns"])
    rows[0]["hash"] = chain.link(
        rows[0]["prev_hash"], chain.payload_for("signatures", chain.PAYLOAD_VERSION)(values)
    )
    path = out / spec["file"]
    path.write_text(_table_text(TableRows("signatures", tuple(spec["columns"]), spec["types"], rows), "json"))
    manifest.pop("manifest_sha256")
    manifest["files"][spec["file"]] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest["manifest_sha256"] = hashlib.sha256(_json_text(manifest).encode()).hexdigest()
    (out / MANIFEST).write_text(_json_text(manifest))
    result = verify_export(out)
    assert result.ok is False
    assert result.file == "signatures.json"
    assert f"signs seal {'0' * 64}, not the exported seal" in str(result.problem)
