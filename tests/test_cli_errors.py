"""Every command, given bad arguments, answers with one line naming the problem and a non-zero
exit: never a traceback, never a silent success.

The table runs in process (``daq.cli.main``, fast); a few cases that only show at the process
boundary (a reader closing the pipe, interpreter shutdown) run ``daq`` as a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from daq.cli import main as cli
from tests.runs_helpers import record_run

CORRUPT = "<corrupt>"
EMPTY = "<empty>"
RUN = "<run>"
DATA = "<data>"


def _expand(args: list[str], paths: dict[str, str]) -> list[str]:
    out = []
    for a in args:
        for key, value in paths.items():
            a = a.replace(key, value)
        out.append(a)
    return out


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    try:
        code = cli(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, f"{argv}: {err}"
    assert code != 0, f"{argv} exited 0: {err}"
    assert len(lines) == 1, f"{argv}: expected one line of error, got {lines}"
    return code, lines[0]


# (argv, a fragment the error line must hold). Placeholders: <corrupt> a data dir whose
# journal is not a database, <empty> a directory with no journal, <data> a real data dir,
# <run> the id of a run in it.
OFFLINE_CASES: list[tuple[list[str], str]] = [
    (["run", "--config", "/nonexistent/hotcell.toml"], "/nonexistent/hotcell.toml"),
    (["run", "--config", "x.toml", "--duration", "nan"], "--duration"),
    (["run", "list"], "daq runs list"),
    (["check-config", "/nonexistent/hotcell.toml"], "/nonexistent/hotcell.toml"),
    (["demo", "--duration", "-1"], "--duration"),
    (["demo", "--every", "inf"], "--every"),
    (["simulate", "no-such-kind"], "unknown simulator"),
    (["simulate", "veenstra-vdc404", "--listen", "tcp://127.0.0.1:99999"], "Port out of range"),
    (["simulate", "veenstra-vdc404", "--listen", "tcp://192.0.2.1:5000"], "loopback only"),
    (["simulate", "veenstra-vdc404", "--fault", "novalue"], "--fault"),
    (["status", "--api", "not-a-url"], "not-a-url"),
    (["status", "--data-dir", CORRUPT], "not a readable journal"),
    (["status", "--data-dir", EMPTY], "no journal"),
    (["tail", "--api", "not-a-url", "--duration", "1"], "not-a-url"),
    (["tail", "--duration", "nan"], "--duration"),
    (["tail", "--since", "yesterday"], "--since"),
    (["verify", "--data-dir", CORRUPT], "not a readable journal"),
    (
        ["decay", "F-18", "1", "GBq", "--from", "9999-01-01T00:00:00Z", "--to", "2020-01-01T00:00:00Z"],
        "too large",
    ),
    (
        ["decay", "F-18", "1", "furlong", "--from", "2020-01-01T00:00:00Z", "--to", "2020-01-01T01:00:00Z"],
        "furlong",
    ),
    (
        ["decay", "F-18", "1", "GBq", "--from", "2020-01-01T00:00:00", "--to", "2020-01-01T01:00:00Z"],
        "offset",
    ),
    (
        ["decay", "Xx-999", "1", "GBq", "--from", "2020-01-01T00:00:00Z", "--to", "2020-01-01T01:00:00Z"],
        "Xx-999",
    ),
    (["runs", "list", "--data-dir", CORRUPT], "not a readable journal"),
    (["runs", "show", "nosuch", "--data-dir", EMPTY], "no journal"),
    (["runs", "bogus"], "invalid choice"),
    (["runs", "t0", "--reason", "x", "--at", "yesterday"], "--at"),
    (["audit", "--data-dir", CORRUPT], "not a readable journal"),
    (["tlc", "list", "--data-dir", CORRUPT], "not a readable journal"),
    (["prune", "--data-dir", EMPTY, "--retention-days", "nan"], "--retention-days"),
    (["prune", "--data-dir", EMPTY, "--retention-days", "0"], "--retention-days"),
    (["prune", "--data-dir", EMPTY, "--retention-days", "-1"], "--retention-days"),
    (["export", "nosuch", "--data-dir", CORRUPT, "--out", "/nonexistent/dir/x"], "does not exist"),
    (["report", "nosuch", "--data-dir", EMPTY, "--out", "report.txt"], ".pdf or .png"),
]

# Cases over a journal holding a real, sealed run.
RUN_CASES: list[tuple[list[str], str]] = [
    (["audit", "--data-dir", DATA, "--since", "0001-01-01T00:00:00Z"], "1970"),
    (["audit", "--data-dir", DATA, "--since", "99999999999d"], "longer than"),
    (["export", RUN, "--data-dir", DATA, "--out", "/etc/hostname"], "not a directory"),
    (["export", RUN, "--data-dir", DATA, "--out", "<tmp>/missing/export"], "does not exist"),
    (["export", "no-such-run", "--data-dir", DATA, "--out", "<tmp>/e1"], "no-such-run"),
    (["report", RUN, "--data-dir", DATA, "--out", "<tmp>/missing/r.pdf"], "does not exist"),
    (["report", RUN, "--data-dir", DATA, "--out", "<tmp>/r.pdf", "--png"], ".png"),
    (["report", RUN, "--data-dir", DATA, "--out", "/proc/no/r.pdf"], "does not exist"),
    (["tlc", "show", "no-such-trace", "--data-dir", DATA], "no-such-trace"),
]


@pytest.fixture
def paths(tmp_path: Path) -> dict[str, str]:
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "journal.sqlite3").write_bytes(b"not a database " * 200)
    empty = tmp_path / "empty"
    empty.mkdir()
    return {CORRUPT: str(corrupt), EMPTY: str(empty), "<tmp>": str(tmp_path)}


@pytest.mark.parametrize(("argv", "fragment"), OFFLINE_CASES, ids=[" ".join(c[0]) for c in OFFLINE_CASES])
def test_bad_arguments_give_one_line(
    argv: list[str],
    fragment: str,
    paths: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    dead_port: int,
) -> None:
    # A daemon that might be running on this machine must not answer for these cases.
    monkeypatch.setenv("DAQ_API", f"http://127.0.0.1:{dead_port}")
    monkeypatch.setenv("DAQ_API_TOKEN", "t")
    _, line = _one_line_error(capsys, _expand(argv, paths))
    assert fragment in line


async def test_bad_arguments_over_a_real_run(
    data_dir: Path, paths: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    rec = await record_run(data_dir, readings=5)
    capsys.readouterr()
    paths = {**paths, DATA: str(data_dir), RUN: rec.run_id}
    for argv, fragment in RUN_CASES:
        _, line = _one_line_error(capsys, _expand(argv, paths))
        assert fragment in line, (argv, line)
    assert not (Path(paths["<tmp>"]) / "missing").exists(), "a missing --out directory was created"


def _daq(*args: str, **kw: object) -> list[str]:
    return [sys.executable, "-m", "daq", *args]


async def test_a_reader_closing_the_pipe_ends_quietly(data_dir: Path) -> None:
    await record_run(data_dir, readings=5)
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    for argv in (["audit", "--data-dir", str(data_dir)], ["tlc", "list", "--data-dir", str(data_dir)]):
        # `daq audit | head -0`: the reader has gone before the first line is written.
        proc = subprocess.run(
            f"{' '.join(_daq(*argv))} | head -c 0", shell=True, capture_output=True, text=True,
            env=env, timeout=60, executable="/bin/bash",
        )  # fmt: skip
        assert "Traceback" not in proc.stderr, proc.stderr
        assert "BrokenPipe" not in proc.stderr, proc.stderr
        assert proc.stderr.strip() == "", proc.stderr


def test_an_unexpected_error_is_one_line_and_exit_70(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from daq.cli import decay

    def boom(args: object) -> int:
        raise RuntimeError("line one\nline two")

    monkeypatch.setattr(decay, "main", boom)
    monkeypatch.delenv("DAQ_DEBUG", raising=False)
    argv = ["decay", "F-18", "1", "GBq", "--from", "2020-01-01T00:00:00Z", "--to", "2020-01-01T01:00:00Z"]
    code, line = _one_line_error(capsys, argv)
    assert code == 70
    assert "RuntimeError: line one line two" in line
    assert "DAQ_DEBUG" in line


def test_ctrl_c_while_the_command_loads_exits_130_quietly(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The command's modules are imported while the parser is built: Ctrl-C there is the
    # same as once the command runs.
    import daq.cli

    def interrupted(command: str | None = None) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(daq.cli, "build_parser", interrupted)
    try:
        code = cli(["tail", "--api", "http://127.0.0.1:1"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C while the command loaded escaped the command line (a traceback)")
    assert code == 130
    captured = capsys.readouterr()
    assert captured.out == captured.err == ""
