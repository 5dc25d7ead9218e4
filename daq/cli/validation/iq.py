"""Installation qualification on the machine ``daq validate --iq`` runs on.

Pass/fail: the Python version, each pinned dependency's installed version, the installed
files against the distribution's RECORD, the config (when given) and the data directory's
permissions. Informational (recorded, never a failure, since a development machine has no
unit and may have no time service): whether the systemd unit is installed and its hardening
score, and the clock's synchronisation state.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as md
import platform
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from daq.cli.validation.results import INFORMATIONAL, Scenario, now_iso
from daq.errors import DaqError
from daq.runs.clock import read_sync_state

DIST = "hotcell-daq"
_REPO = Path(__file__).resolve().parents[3]
UNIT = "hotcell-daq.service"


def _pins() -> dict[str, str]:
    """Exact pins ``name==version`` of the distribution's runtime requirements."""
    pins = {}
    for req in md.requires(DIST) or []:
        if "extra ==" in req:
            continue
        m = re.match(r"^([A-Za-z0-9_.\-]+)\s*==\s*([^;\s]+)", req)
        if m:
            pins[m.group(1)] = m.group(2)
    return pins


def versions(out: Path) -> Scenario:
    sc = Scenario("IQ-VERSIONS", "Python and dependency versions against the pinned set")
    sc.check("Python version", ">= 3.11", platform.python_version(), sys.version_info >= (3, 11))
    try:
        sc.observe(f"{DIST} version", md.version(DIST))
    except md.PackageNotFoundError:
        sc.check(f"{DIST} installed", "distribution metadata found", "not found", False)
        return sc.finish()
    found = {}
    for name, pinned in sorted(_pins().items()):
        try:
            got = md.version(name)
        except md.PackageNotFoundError:
            got = "not installed"
        found[name] = {"pinned": pinned, "installed": got}
        sc.check(f"{name} version", pinned, got, got == pinned)
    sc.evidence_json(out, "versions.json", {"python": platform.python_version(), "dependencies": found})
    return sc.finish()


def files(out: Path) -> Scenario:
    """Each file the RECORD lists with a hash is hashed again. An editable install (a
    development checkout) records only its metadata; the source files are then hashed for
    the record, not checked."""
    sc = Scenario("IQ-FILES", "Installed package files against the distribution's RECORD")
    try:
        dist = md.distribution(DIST)
    except md.PackageNotFoundError:
        sc.check("distribution found", DIST, "not found", False)
        return sc.finish()
    checked, bad, rows = 0, [], []
    for f in dist.files or []:
        if not f.hash or f.hash.mode != "sha256":
            continue
        path = Path(str(f.locate()))
        try:
            digest = (
                base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"=").decode()
            )
        except OSError as exc:
            bad.append(f"{f}: {exc.strerror}")
            continue
        checked += 1
        rows.append({"file": str(f), "sha256": digest})
        if digest != f.hash.value:
            bad.append(f"{f}: hash differs from RECORD")
    editable = not any(str(f).startswith("daq/") for f in dist.files or [])
    sc.check(
        "files listed in RECORD re-hashed",
        "every hash matches",
        f"{checked} checked, {len(bad)} differ: {bad[:5]}",
        not bad,
    )
    if editable:
        for p in sorted((_REPO / "daq").rglob("*.py")):
            rows.append(
                {"file": str(p.relative_to(_REPO)), "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
            )
        sc.observe("install kind", "editable (development checkout): source files hashed for the record only")
    sc.evidence_json(out, "files.json", rows)
    return sc.finish()


def config(out: Path, path: Path | None) -> Scenario:
    from daq.configfile.load import load_config

    sc = Scenario("IQ-CONFIG", "The site configuration validated and identified by its hash")
    if path is None:
        sc.observe("config", "none given (--config SITE.toml): nothing to validate")
        return sc.finish(INFORMATIONAL)
    try:
        cfg = load_config(path)
    except DaqError as exc:
        sc.check(f"validate {path}", "valid", exc, False)
        return sc.finish()
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    sc.check(f"validate {path}", "valid", f"valid, {len(cfg.instruments)} instrument(s)", True)
    sc.observe("config SHA-256", digest)
    copy = out / "evidence" / "IQ-CONFIG-config.toml"
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_bytes(Path(path).read_bytes())
    sc.add_evidence(out, copy)
    return sc.finish()


def data_dir(out: Path, path: Path | None) -> Scenario:
    sc = Scenario("IQ-DATA-DIR", "The data directory's file system and permissions")
    if path is None:
        sc.observe("data directory", "none given (--config SITE.toml names it)")
        return sc.finish(INFORMATIONAL)
    sc.check("exists", "a directory", path, path.is_dir())
    if not path.is_dir():
        return sc.finish()
    st = path.stat()
    mode = stat.S_IMODE(st.st_mode)
    sc.check("permissions", "not writable by group or others", oct(mode), not mode & 0o022)
    try:
        fs = subprocess.run(
            ["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        fs = "unknown"
    sc.check(
        "file system", "a local file system (not NFS/CIFS)", fs, fs not in ("nfs", "cifs", "smb2", "fuseblk")
    )
    return sc.finish()


def systemd(out: Path) -> Scenario:
    sc = Scenario("IQ-SYSTEMD", "The systemd unit: installed? and its hardening score")
    installed = [
        p
        for p in (
            Path("/etc/systemd/system") / UNIT,
            Path("/usr/lib/systemd/system") / UNIT,
            Path("/lib/systemd/system") / UNIT,
        )
        if p.is_file()
    ]
    sc.observe("unit installed", ", ".join(map(str, installed)) if installed else "not installed")
    unit = installed[0] if installed else _REPO / "systemd" / UNIT
    analyze = shutil.which("systemd-analyze")
    if analyze and unit.is_file():
        try:
            res = subprocess.run(
                [analyze, "security", "--offline=true", str(unit)], capture_output=True, text=True, timeout=60
            )
            text = res.stdout + res.stderr
        except (OSError, subprocess.TimeoutExpired) as exc:
            text = f"systemd-analyze failed: {exc}"
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\S+)", text)
        sc.observe(
            f"hardening of {unit.name}", f"exposure {m.group(1)} {m.group(2)}" if m else text.strip()[-200:]
        )
        path = out / "evidence" / "IQ-SYSTEMD-security.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        sc.add_evidence(out, path)
    else:
        sc.observe("hardening score", "systemd-analyze not available" if not analyze else "no unit file")
    return sc.finish(INFORMATIONAL)


def clock(out: Path) -> Scenario:
    sc = Scenario("IQ-CLOCK", "Clock synchronisation state")
    state = read_sync_state("auto")
    sc.observe("sync state (adjtimex, else timedatectl)", state)
    sc.evidence_json(out, "clock.json", {"at": now_iso(), **state})
    return sc.finish(INFORMATIONAL)


def run_iq(out: Path, *, config_path: Path | None, data: Path | None) -> list[Scenario]:
    return [
        versions(out),
        files(out),
        config(out, config_path),
        data_dir(out, data),
        systemd(out),
        clock(out),
    ]


IQ_IDS = ("IQ-VERSIONS", "IQ-FILES", "IQ-CONFIG", "IQ-DATA-DIR", "IQ-SYSTEMD", "IQ-CLOCK")
