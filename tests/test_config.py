"""Config validation: every failure names the file, the key path and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from daq.cli import main
from daq.configfile.load import load_config
from daq.errors import ConfigError
from drivers.comecer_vik202 import Vik202Config

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


# -- bounds: every number has a finite range; booleans are not numbers -------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("period_s = inf", "finite number (got inf)"),
        ("period_s = nan", "finite number (got nan)"),
        ("period_s = 1e300", "less than or equal to 86400"),
        ("period_s = true", "a boolean, not a number"),
        ("connect_timeout_s = -inf", "finite number"),
        ("max_consecutive_timeouts = true", "a boolean, not a number"),
        ("backoff_cap_s = 100000", "less than or equal to 86400"),
    ],
)
def test_instrument_numbers_are_finite_and_bounded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, expected: str
) -> None:
    code, err = check(tmp_path, GOOD + line + "\n", capsys)
    assert code == 2
    key = line.split(" = ")[0]
    assert f"cell.toml: instruments[0].{key}: " in err
    assert expected in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("section", "expected_key", "expected"),
    [
        ("[journal]\nmax_pending = 1e300\n", "journal.max_pending", "valid integer"),
        ("[journal]\nmax_pending = 100000000\n", "journal.max_pending", "less than or equal to 10000000"),
        ("[journal]\nmax_pending = true\n", "journal.max_pending", "a boolean, not a number"),
        ("[journal]\nretry_after_error_s = inf\n", "journal.retry_after_error_s", "finite number"),
        ("[runs]\nretention_days = 0\n", "runs.retention_days", "greater than 0"),
        ("[runs]\nretention_days = inf\n", "runs.retention_days", "finite number"),
        ("[runs]\ntrigger_threshold = nan\n", "runs.trigger_threshold", "finite number"),
        ("[runs]\ntrigger_threshold = false\n", "runs.trigger_threshold", "a boolean, not a number"),
        ("[clock]\ncheck_every_s = 1e9\n", "clock.check_every_s", "less than or equal to 3600"),
        ("[physics]\nac225_equilibrium_wait_s = inf\n", "physics.ac225_equilibrium_wait_s", "finite number"),
        ("[api]\nport = true\n", "api.port", "a boolean, not a number"),
        ("[api]\nheartbeat_s = 0\n", "api.heartbeat_s", "greater than 0"),
    ],
)
def test_section_numbers_are_finite_and_bounded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], section: str, expected_key: str, expected: str
) -> None:
    code, err = check(tmp_path, GOOD + "\n" + section, capsys)
    assert code == 2
    assert f": {expected_key}: " in err
    assert expected in err


def test_period_inf_refused_by_check_config_subprocess(tmp_path: Path) -> None:
    """The regression of ``period_s = inf`` / ``1e300`` over the real command line."""
    import subprocess
    import sys

    for value in ("inf", "1e300"):
        p = write(tmp_path, GOOD + f"period_s = {value}\n")
        out = subprocess.run(
            [sys.executable, "-m", "daq", "check-config", str(p)], capture_output=True, text=True, check=False
        )
        assert out.returncode == 2, out
        assert f"{p}: instruments[0].period_s: " in out.stderr
        assert ("finite number" if value == "inf" else "less than or equal to 86400") in out.stderr
        assert "Traceback" not in out.stderr


# -- semantic checks ---------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n\n", "# a comment only\n"])
def test_empty_file_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> None:
    code, err = check(tmp_path, text, capsys)
    assert code == 2
    assert "(top level): the file is empty" in err


def test_log_level_must_be_known(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = check(tmp_path, GOOD.replace("[daemon]\n", '[daemon]\nlog_level = "loud"\n'), capsys)
    assert code == 2
    assert "daemon.log_level: " in err
    assert "'info'" in err
    assert "(got 'loud')" in err


def test_trigger_instrument_must_name_an_instrument(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = check(
        tmp_path,
        GOOD + '\n[runs]\ntrigger_instrument = "synth"\ntrigger_channel = "sequence_running"\n',
        capsys,
    )
    assert code == 2
    assert "runs.trigger_instrument: no instrument named 'synth'; expected one of: dc1" in err


def test_factor_nuclides_must_be_known(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vik = """
[[instruments]]
name = "vik"
kind = "comecer-vik202"
port = "socket://127.0.0.1:7002"
[instruments.factor_nuclides]
"123" = "Xx-999"
"""
    code, err = check(tmp_path, GOOD + vik, capsys)
    assert code == 2
    assert "instruments[1].factor_nuclides.123: " in err
    assert "unknown nuclide 'Xx-999'" in err
    # A known nuclide in any spelling the table knows is stored in the table's spelling.
    cfg = load_config(write(tmp_path, GOOD + vik.replace("Xx-999", "18F")))
    assert isinstance(cfg.instruments[1], Vik202Config)
    assert cfg.instruments[1].factor_nuclides == {"123": "F-18"}


@pytest.mark.parametrize(
    "url",
    [
        "http://admin:hunter2@127.0.0.1:8086",
        "https://user:hunter2@influx.example/api/v2/write",
        "http://127.0.0.1:8086/write?db=x&p=hunter2",
        "http://127.0.0.1:8086/api/v2/write?token=hunter2",
    ],
)
def test_sink_url_with_credentials_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    sink = f'\n[[sinks]]\nname = "tsdb"\nkind = "influxdb"\nurl = "{url}"\norg = "o"\nbucket = "b"\n'
    code, err = check(tmp_path, GOOD + sink, capsys)
    assert code == 2
    assert "sinks[0].url: the URL carries" in err
    assert "token_credential" in err
    assert "hunter2" not in err  # the error never echoes the secret


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("max_pending = 1e12", "valid integer"),
        ("max_pending = 100000000000", "less than or equal to 10000000"),
        ("publishing_interval_ms = inf", "finite number"),
        ("publishing_interval_ms = 1e300", "less than or equal to 86400000"),
        ("sampling_interval_ms = true", "a boolean, not a number"),
    ],
)
def test_driver_sizes_and_intervals_are_bounded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, expected: str
) -> None:
    opcua = f"""
[[instruments]]
name = "plc"
kind = "opcua"
url = "opc.tcp://127.0.0.1:4840"
{line}

[[instruments.nodes]]
channel = "cell_pressure"
node_id = "ns=2;s=Cell.Pressure"
"""
    assert load_config(write(tmp_path, GOOD + opcua.replace(line, ""))).instruments[1].kind == "opcua"
    code, err = check(tmp_path, GOOD + opcua, capsys)
    assert code == 2
    assert f"instruments[1].{line.split(' = ')[0]}: " in err
    assert expected in err
    assert "more)" not in err  # the only error
