"""Run a py_ref.commands subcommand in process with its long work replaced by a failure."""

import argparse

from py_ref import commands
from py_ref.errors import main_guard


def _no_long_work(*a, **k):
    raise AssertionError("the long work started before the input was checked")


def run_command(argv, monkeypatch):
    from py_ref import velcro
    monkeypatch.setattr(velcro, "profile", _no_long_work)
    monkeypatch.setattr(velcro, "evaluate", _no_long_work)
    p = argparse.ArgumentParser(prog="velcro")
    sub = p.add_subparsers(dest="command", required=True)
    commands.register(sub)
    args = p.parse_args(argv)
    return main_guard(args.func, args)
