"""Writing a config back to TOML gives a file that validates to the same model."""

from __future__ import annotations

from pathlib import Path

from daq.configfile.load import load_config, parse_config
from daq.configfile.write import dump_config, to_toml

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


def test_every_shipped_config_round_trips() -> None:
    for path in sorted(CONFIG_DIR.glob("*.toml")):
        cfg = load_config(path)
        text = dump_config(cfg, header=f"generated from {path.name}")
        again = parse_config(text, path="round-trip.toml")
        assert again.model == cfg.model, path.name
        assert text.startswith("# generated from")


def test_nested_tables_and_arrays() -> None:
    text = to_toml(
        {
            "a": {"b": 1, "c": [1, 2], "d": {"e": "x y"}},
            "items": [{"name": "one", "sub": [{"k": True}, {"k": False}]}, {"name": "two"}],
            "weird key": 1.5,
            "skip": None,
        }
    )
    import tomllib

    assert tomllib.loads(text) == {
        "a": {"b": 1, "c": [1, 2], "d": {"e": "x y"}},
        "items": [{"name": "one", "sub": [{"k": True}, {"k": False}]}, {"name": "two"}],
        "weird key": 1.5,
    }
