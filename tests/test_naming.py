"""Fleet-safe naming at ``daq check-config``: every point a cell forwards must be told apart from
every other cell's in a shared store, and every name must survive line protocol.

The refusals run the command's entry point in the test's process (``daq.cli.main``: the same
parsing, checks and exit code, without starting an interpreter for each case); the accepted
names run over the real command (``python -m daq check-config``), as a site would run it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w

from daq.cli import main
from tests.helpers import toml_table

SINK = """
[[sinks]]
name = "central"
kind = "influxdb"
url = "http://127.0.0.1:8086"
org = "radiopharmacy"
bucket = "hotcell"
"""


def instrument(**extra: str) -> str:
    settings = {"name": "dc1", "kind": "veenstra-vdc404", "port": "socket://127.0.0.1:7001", **extra}
    return "\n" + toml_table("instruments", settings)


def daemon(**keys: str) -> str:
    return tomli_w.dumps({"daemon": {"data_dir": "data", **keys}})


def check_config(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daq", "check-config", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def check_config_here(capsys: pytest.CaptureFixture[str], *paths: Path) -> subprocess.CompletedProcess[str]:
    """``daq check-config PATHS`` through the command's entry point, in this process."""
    capsys.readouterr()
    code = main(["check-config", *map(str, paths)])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["daq", "check-config"], code, out, err)


@pytest.mark.parametrize(
    ("text", "key_path", "says"),
    [
        (daemon(cell="hc-1") + instrument() + SINK, "daemon.site", "must be given when a sink"),
        (daemon(site="lyon") + instrument() + SINK, "daemon.cell", "must be given when a sink"),
        (daemon() + SINK, "daemon.site", "site and cell must be given"),
        (daemon(site="lyon\\", cell="hc-1") + SINK, "daemon.site", "backslash"),
        (daemon(site="lyon", cell="hc\n1") + SINK, "daemon.cell", "newline"),
        (daemon(site="lyon", cell="") + SINK, "daemon.cell", "empty"),
        (daemon(site="ly\\\\on", cell="hc-1"), "daemon.site", "backslash"),
        (
            daemon(site="lyon", cell="hc-1") + instrument(channel="activity\\"),
            "instruments[0].channel",
            "backslash",
        ),
        (
            daemon(site="lyon", cell="hc-1") + instrument(channel="act\nivity"),
            "instruments[0].channel",
            "newline",
        ),
    ],
    ids=[
        "no-site",
        "no-cell",
        "neither",
        "site-trailing-backslash",
        "cell-newline",
        "cell-empty",
        "site-double-backslash-without-sink",
        "channel-trailing-backslash",
        "channel-newline",
    ],
)
def test_check_config_refuses_names_a_fleet_cannot_tell_apart_or_carry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key_path: str, says: str
) -> None:
    path = tmp_path / "cell.toml"
    path.write_text(text, encoding="utf-8")
    proc = check_config_here(capsys, path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{path}: {key_path}: " in proc.stderr
    assert says in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_check_config_accepts_named_cells_and_odd_but_carried_names(tmp_path: Path) -> None:
    named = tmp_path / "named.toml"
    # Spaces, commas and equals signs are escaped by line protocol: carried, not refused.
    named.write_text(daemon(site="Lyon site", cell="cell,1=a") + instrument(channel="activity 1") + SINK)
    # Without an enabled sink nothing is shared, and the default names are fine.
    local = tmp_path / "local.toml"
    local.write_text(
        daemon() + instrument() + SINK.replace('bucket = "hotcell"', 'bucket = "hotcell"\nenabled = false')
    )
    for path in (named, local):
        proc = check_config(path)
        assert proc.returncode == 0, proc.stderr
        assert f"{path}: OK" in proc.stdout


def test_check_config_refuses_two_cells_of_one_fleet_with_the_same_site_and_cell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = []
    for i, (site, cell) in enumerate(
        [("lyon", "hc-1"), ("lyon", "hc-2"), ("paris", "hc-1"), ("lyon", "hc-2")]
    ):
        path = tmp_path / f"cell{i}.toml"
        path.write_text(daemon(site=site, cell=cell) + instrument() + SINK)
        files.append(path)
    proc = check_config_here(capsys, *files[:3])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(": OK") == 3
    proc = check_config_here(capsys, *files)
    assert proc.returncode == 2
    assert f"{files[3]}: daemon.cell: " in proc.stderr
    assert f"already used by {files[1]}" in proc.stderr
