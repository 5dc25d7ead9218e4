"""The command line as a person uses it."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from daq.cli import COMMAND_MODULES, commands, main
from tests.proc import DAQ


def test_help_lists_every_command() -> None:
    out = subprocess.run([*DAQ, "--help"], capture_output=True, text=True, check=True).stdout
    for name, module in zip(COMMAND_MODULES, commands(), strict=True):
        assert name == module.NAME  # a command is found by its name without importing the others
        assert name in out


def test_a_command_starts_without_importing_the_others() -> None:
    """``daq simulate`` (run by tests and benchmarks for every simulator) loads neither the
    daemon nor the journal nor another command's module."""
    code = "import sys; from daq.cli import main; main(['simulate', '--list']); print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(out.splitlines()[-1].split())
    assert loaded & set(COMMAND_MODULES.values()) == {"daq.cli.simulate"}
    assert not {m for m in loaded if m.startswith(("daq.daemon", "daq.journal", "daq.configfile"))}


def test_simulate_list(capsys: object) -> None:
    out = subprocess.run([*DAQ, "simulate", "--list"], capture_output=True, text=True, check=True).stdout
    assert "veenstra-vdc404" in out


def test_simulate_rejects_unknown_fault() -> None:
    proc = subprocess.run([*DAQ, "simulate", "veenstra-vdc404", "--fault", "lightning=1", "--duration", "1"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 1
    assert "unknown fault 'lightning'" in proc.stderr


@pytest.mark.slow
def test_demo_shows_live_readings_and_summary(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    # Another program holds the live page's usual port: the demo takes a free one and says where.
    with contextlib.ExitStack() as stack:
        holder = stack.enter_context(socket.socket())
        with contextlib.suppress(OSError):  # already held by someone else: busy all the same
            holder.bind(("127.0.0.1", 8470))
            holder.listen()
        proc = subprocess.run(
            [*DAQ, "demo", "--duration", "4", "--data-dir", str(data_dir)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    page = re.search(r"^live page: http://127\.0\.0\.1:(\d+)/$", out, re.MULTILINE)
    assert page is not None, out
    assert page.group(1) != "8470"
    assert f"DAQ_API=http://127.0.0.1:{page.group(1)} DAQ_API_TOKEN=demo daq runs annotate" in out
    assert "GOOD" in out
    assert "summary" in out
    assert str(data_dir / "journal.sqlite3") in out
    assert "hash chains: intact" in out
    assert main(["verify", "--data-dir", str(data_dir)]) == 0
    status = subprocess.run([*DAQ, "status", "--data-dir", str(data_dir), "--json"],
                            capture_output=True, text=True, check=True)  # fmt: skip
    data = json.loads(status.stdout)
    assert data["instruments"]
    assert all(s["rows"] > 0 for s in data["instruments"].values())


def test_python_dash_m_works() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "daq", "--version"], capture_output=True, text=True, check=True
    )
    assert "hotcell-daq" in proc.stdout


def test_every_option_and_argument_has_help() -> None:
    import argparse

    from daq.cli import build_parser

    missing: list[str] = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif action.help is None and not isinstance(action, argparse._HelpAction):
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "daq")
    assert missing == []


def test_offline_commands_take_the_data_dir_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DAQ_DATA_DIR", str(tmp_path / "nowhere"))
    # Parsed with the variable set: --data-dir is no longer required, and the journal named is the
    # variable's (it does not exist, so the command says so, naming it).
    assert main(["audit"]) == 1
    assert f"no journal at {tmp_path / 'nowhere'}" in capsys.readouterr().err
    assert main(["verify"]) == 1
    assert str(tmp_path / "nowhere") in capsys.readouterr().err
