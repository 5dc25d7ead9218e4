"""``daq users add|passwd|disable|unlock|list``: local accounts for review and e-signatures.

Passwords (and the user ids of who signs in) are never taken from the command line: they are
asked on the terminal without echo, or read one per line from standard input when it is not
a terminal (for scripts: ``printf 'admin\\nsecret...\\n' | daq users ...``). The commands write
to the journal, so they run with the daemon stopped (they refuse while it holds
``daemon.lock``). Password length and lockout come from the ``[users]`` section of
``--config``, else of the newest config the journal holds, else the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from pathlib import Path

from daq.cli.argtypes import add_data_dir
from daq.configfile.snapshot import site_config
from daq.errors import DaqError
from daq.timefmt import human

NAME = "users"
HELP = "local user accounts (roles operator, reviewer, approver, admin) for review and e-signatures"


class Prompter:
    """Asks for secrets on the terminal (no echo), or reads them line by line from a pipe."""

    def __init__(self) -> None:
        self.tty = sys.stdin.isatty()

    def _line(self, label: str) -> str:
        line = sys.stdin.readline()
        if not line:
            raise DaqError(f"standard input ended before the {label}")
        return line.rstrip("\r\n")

    def text(self, prompt: str) -> str:
        return input(prompt).strip() if self.tty else self._line(prompt.rstrip(": ")).strip()

    def secret(self, prompt: str) -> str:
        return getpass.getpass(prompt) if self.tty else self._line(prompt.rstrip(": "))

    def new_secret(self, prompt: str) -> str:
        first = self.secret(prompt)
        if self.tty and getpass.getpass("again: ") != first:
            raise DaqError("the two passwords differ")
        return first

    def credentials(self, who: str) -> tuple[str, str]:
        user = self.text(f"{who} user id: ")
        return user, self.secret(f"password for {user}: ")


def _common(p: argparse.ArgumentParser) -> None:
    add_data_dir(p)
    p.add_argument("--config", type=Path, default=None, help="take [users] from this config file")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    a = sub.add_parser("add", help="create an account (the first must be an admin; later ones need an admin)")
    a.add_argument("user_id", metavar="USER", help="the new account's user id")
    a.add_argument("--name", required=True, help="full name, printed with the user's signatures")
    a.add_argument("--roles", required=True, help="comma-separated: operator, reviewer, approver, admin")
    _common(a)
    pw = sub.add_parser("passwd", help="set a new password (the user, or an admin: also lifts a lockout)")
    pw.add_argument("user_id", metavar="USER", help="whose password")
    _common(pw)
    d = sub.add_parser("disable", help="disable an account for good (it is never deleted)")
    d.add_argument("user_id", metavar="USER", help="the account to disable")
    d.add_argument("--reason", required=True, help="why (audited)")
    _common(d)
    u = sub.add_parser("unlock", help="lift a lockout after failed sign-ins (admin)")
    u.add_argument("user_id", metavar="USER", help="the locked account")
    u.add_argument("--reason", required=True, help="why (audited)")
    _common(u)
    ls = sub.add_parser("list", help="every account with its roles and state")
    _common(ls)
    ls.add_argument("--json", action="store_true", help="machine-readable output")


async def _write(args: argparse.Namespace) -> str:
    from daq import users
    from daq.runs.checked import open_journal

    ask = Prompter()
    cmd = args.users_command
    async with users.journal_session(args.data_dir) as journal:
        conn = open_journal(args.data_dir)
        try:
            settings = site_config(conn, args.config).users
            if cmd == "add":
                admin = ask.credentials("admin") if users.accounts(conn, settings) else None
                password = ask.new_secret(f"new password for {args.user_id}: ")
                roles = [r.strip() for r in args.roles.split(",") if r.strip()]
                users.add_user(
                    journal, conn, user_id=args.user_id, full_name=args.name, roles=roles,
                    password=password, admin=admin, settings=settings,
                )  # fmt: skip
                return f"user {args.user_id} created ({', '.join(roles)})"
            if cmd == "passwd":
                signer = ask.credentials(f"{args.user_id} (or an admin):")
                new = ask.new_secret(f"new password for {args.user_id}: ")
                users.change_password(
                    journal, conn, user_id=args.user_id, new_password=new, signer=signer, settings=settings
                )
                return f"password of {args.user_id} changed"
            admin = ask.credentials("admin")
            if cmd == "disable":
                users.disable_user(
                    journal, conn, user_id=args.user_id, reason=args.reason, admin=admin, settings=settings
                )
                return f"user {args.user_id} disabled"
            users.unlock_user(
                journal, conn, user_id=args.user_id, reason=args.reason, admin=admin, settings=settings
            )
            return f"user {args.user_id} unlocked"
        finally:
            conn.close()


def main(args: argparse.Namespace) -> int:
    if args.users_command != "list":
        print(asyncio.run(_write(args)))
        return 0
    from daq import users
    from daq.runs.checked import open_journal

    conn = open_journal(args.data_dir)
    try:
        accts = users.accounts(conn, site_config(conn, args.config).users)
    finally:
        conn.close()
    rows = [a.public() for a in accts.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no user accounts (create the first, an admin, with `daq users add`)")
    for r in rows:
        state = "active" if r["active"] else "DISABLED"
        if r["locked"]:
            state += ", LOCKED"
        print(
            f"{r['user_id']:<16} {r['full_name']:<28} {','.join(r['roles']):<28} {state:<16} "
            f"created {human(r['created_ns'])} by {r['created_by']}"
        )
    return 0
