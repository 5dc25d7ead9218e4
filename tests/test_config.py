"""Config validation: every failure names the file, the key path and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from daq.cli import main
from daq.config.load import load_config
from daq.errors import ConfigError

GOOD = """
[daemon]
data_dir = "/tmp/x"

[[instruments]]
name = "dc1"
kind = "veenstra-vdc404"
port = "socket://127.0.0.1:7001"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cell.toml"
    p.write_text(text)
    return p


def check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    p = write(tmp_path, text)
    code = main(["check-config", str(p)])
    err = capsys.readouterr().err
    assert str(p) in err or code == 0
    return code, err


def test_valid_config_exits_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = check(tmp_path, GOOD, capsys)
    assert code == 0


def test_shipped_configs_are_valid() -> None:
    root = Path(__file__).resolve().parents[1] / "config"
    files = sorted(root.glob("*.toml"))
    assert files
    for f in files:
        load_config(f)


def test_unknown_key_names_key_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = check(tmp_path, GOOD + "baudrat = 9600\n", capsys)
    assert code == 2
    assert "instruments[0].baudrat" in err
    assert "unknown key" in err


def test_unknown_nested_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = check(tmp_path, GOOD + "[instruments.serial]\nbaud = 9600\n", capsys)
    assert code == 2
    assert "instruments[0].serial.baud" in err


def test_wrong_type_names_key_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = check(
        tmp_path,
        GOOD.replace(
            'port = "socket://127.0.0.1:7001"', 'port = "socket://127.0.0.1:7001"\nperiod_s = "fast"'
        ),
        capsys,
    )
    assert code == 2
    assert "instruments[0].period_s" in err
    assert "'fast'" in err


def test_bad_baudrate_lists_expected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = check(tmp_path, GOOD + "[instruments.serial]\nbaudrate = 9601\n", capsys)
    assert code == 2
    assert "instruments[0].serial.baudrate" in err
    assert "9600" in err


def test_duplicate_instrument_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (
        GOOD + '\n[[instruments]]\nname = "dc1"\nkind = "veenstra-vdc404"\nport = "socket://127.0.0.1:7002"\n'
    )
    code, err = check(tmp_path, text, capsys)
    assert code == 2
    assert "instruments[1].name" in err
    assert "duplicate" in err


def test_two_instruments_on_one_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (
        GOOD + '\n[[instruments]]\nname = "dc2"\nkind = "veenstra-vdc404"\nport = "socket://127.0.0.1:7001"\n'
    )
    code, err = check(tmp_path, text, capsys)
    assert code == 2
    assert "instruments[1].port" in err


def test_timeout_not_shorter_than_period(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = GOOD + "period_s = 1.0\ntimeout_s = 1.0\n"
    code, err = check(tmp_path, text, capsys)
    assert code == 2
    assert "instruments[0]" in err
    assert "timeout_s" in err


def test_unknown_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = check(tmp_path, GOOD.replace("veenstra-vdc404", "no-such-kind"), capsys)
    assert code == 2
    assert "instruments[0]" in err
    assert "veenstra-vdc404" in err


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.toml"
    code = main(["check-config", str(missing)])
    err = capsys.readouterr().err
    assert code == 2
    assert str(missing) in err
    assert "no such file" in err


def test_bad_toml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = check(tmp_path, "[daemon\n", capsys)
    assert code == 2
    assert "TOML" in err


def test_inline_secret_refused(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD + 'password = "hunter2"\n')
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert info.value.key_path == "instruments[0].password"
    assert "hunter2" not in str(info.value)
