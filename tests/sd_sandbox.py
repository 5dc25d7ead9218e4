"""Run a command under the system-call sandbox a systemd unit declares, without systemd.

Usage (with the system Python, which has libseccomp's bindings, python3-seccomp)::

    /usr/bin/python3 tests/sd_sandbox.py UNIT_FILE COMMAND [ARG...]

Reads the unit's ``SystemCallFilter=`` lines (in order: the first allow list, then ``~``
removals and additions, as systemd.exec(5) merges them, with ``@default`` and the implicitly
allowed calls), ``SystemCallErrorNumber=``, ``RestrictAddressFamilies=`` and
``MemoryDenyWriteExecute=``, loads an equivalent seccomp filter (groups are expanded by
``systemd-analyze syscall-filter``, so they match the installed systemd), turns on the
kernel's own W^X refusal (``prctl(PR_SET_MDWE)``, Linux 6.3+) for the last one, and execs
the command. Exits 3 with a message when something it needs is missing.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import subprocess
import sys

PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1
# systemd.exec(5): allowed whatever the filter says.
IMPLICIT = {"execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn"}


def fail(message: str) -> None:
    print(f"sd_sandbox: {message}", file=sys.stderr)
    sys.exit(3)


def expand(item: str, cache: dict[str, set[str]]) -> set[str]:
    if not item.startswith("@"):
        return {item}
    if item not in cache:
        out = subprocess.run(
            ["systemd-analyze", "syscall-filter", item], capture_output=True, text=True, check=True
        ).stdout
        names: set[str] = set()
        for line in out.splitlines()[1:]:
            entry = line.strip()
            if entry and not entry.startswith("#"):
                names |= expand(entry, cache)
        cache[item] = names
    return cache[item]


def settings(unit: str) -> list[tuple[str, str]]:
    out = []
    with open(unit) as f:
        for raw in f:
            line = raw.strip()
            if line and not line.startswith(("#", ";", "[")) and "=" in line:
                key, _, value = line.partition("=")
                out.append((key.strip(), value.strip()))
    return out


def main() -> None:
    if len(sys.argv) < 3:
        fail("usage: sd_sandbox.py UNIT_FILE COMMAND [ARG...]")
    unit, command = sys.argv[1], sys.argv[2:]
    try:
        import seccomp  # type: ignore[import-not-found]
    except ImportError:
        fail("libseccomp's Python bindings are missing: apt-get install -y python3-seccomp")
    cache: dict[str, set[str]] = {}
    allow: set[str] | None = None
    families: set[int] | None = None
    error_number = errno.EPERM
    mdwe = False
    for key, value in settings(unit):
        if key == "SystemCallFilter":
            invert = value.startswith("~")
            names: set[str] = set()
            for item in value.lstrip("~").split():
                names |= expand(item, cache)
            if allow is None:
                if invert:
                    fail("only allow-list filters are emulated")
                allow = expand("@default", cache) | IMPLICIT
            allow = allow - names if invert else allow | names
        elif key == "SystemCallErrorNumber":
            error_number = getattr(errno, value)
        elif key == "RestrictAddressFamilies":
            families = {int(getattr(socket, name)) for name in value.split()}
        elif key == "MemoryDenyWriteExecute":
            mdwe = value == "yes"
    if allow is None:
        fail(f"{unit} has no SystemCallFilter=")
    flt = seccomp.SyscallFilter(defaction=seccomp.ERRNO(error_number))
    assert allow is not None  # fail() raised otherwise
    for name in sorted(allow):
        if name == "socket" and families is not None:
            continue
        try:
            flt.add_rule(seccomp.ALLOW, name)
        except (RuntimeError, ValueError, OSError):
            pass  # a name this architecture or libseccomp does not know
    if families is not None:
        for family in sorted(families):
            flt.add_rule(seccomp.ALLOW, "socket", seccomp.Arg(0, seccomp.EQ, family))
        flt.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.GT, max(families)))
    if mdwe:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
            fail(f"prctl(PR_SET_MDWE) failed ({os.strerror(ctypes.get_errno())}): needs Linux 6.3 or later")
    flt.load()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
