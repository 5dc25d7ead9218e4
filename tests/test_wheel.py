"""The built wheel works installed, away from a checkout: ``daq --help`` and ``daq demo``.

The wheel is built from this tree with the pinned backend (no build isolation, nothing fetched)
and installed without dependencies into a fresh virtual environment. The pinned dependencies
come from the environment running the tests: a ``.pth`` file appends its site-packages after
the new environment's own, so ``daq`` itself is the installed wheel's, never this checkout.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DAQ_DATA_DIR", "DAQ_API")}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.slow
def test_wheel_installs_and_runs_the_demo(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
          "--no-index", "-w", str(dist), "--quiet"], cwd=tmp_path)  # fmt: skip
    wheels = list(dist.glob("hotcell_daq-*.whl"))
    assert len(wheels) == 1, wheels

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], cwd=tmp_path)
    py = venv / "bin" / "python"
    purelib = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=tmp_path).stdout.strip())  # fmt: skip
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (purelib / "test-deps.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index",
          "--quiet", str(wheels[0])], cwd=tmp_path)  # fmt: skip

    # The package and the demo cell both come from the installed wheel.
    where = _run([str(py), "-c", "import daq, daq.cli.demo as d; print(daq.__file__); print(d._default_config())"],
                 cwd=tmp_path).stdout.split()  # fmt: skip
    assert all(Path(p).is_relative_to(purelib) for p in where), where
    assert Path(where[1]).is_file()
    assert (Path(where[1]).parent / "synth-modbus-map.toml").is_file()

    daq = str(venv / "bin" / "daq")
    helptext = _run([daq, "--help"], cwd=tmp_path).stdout
    assert "demo" in helptext
    assert "verify" in helptext

    data_dir = tmp_path / "data"
    # A free port for the live page: another demo on this machine may hold the usual one.
    out = _run([daq, "demo", "--duration", "5", "--data-dir", str(data_dir), "--api-port", "0"],
               cwd=tmp_path).stdout  # fmt: skip
    assert re.search(r"^live page: http://127\.0\.0\.1:\d+/$", out, re.MULTILINE), out
    assert "GOOD" in out
    assert "summary" in out
    assert str(data_dir / "journal.sqlite3") in out
    assert "hash chains: intact" in out
    rows = re.findall(r"^  (\S+)\s+(\d+)\s+\d+\s+\d+\s+\d+", out, re.MULTILINE)
    assert rows, out
    assert all(int(n) > 0 for _, n in rows), out
