"""Option values of every command, checked by their class before anything runs.

:func:`checked_options` turns each option of a parser (and its subcommands) into an argparse
type that also checks the value's class: a float is finite, a string not empty, and by name
``--seed``, ``--threads``, ``--max-build-minutes``.  A bad value is then a one-line usage
error (:func:`py_ref.errors.one_line_errors`), one table for every command.
"""

from __future__ import annotations

import os

__all__ = ["checked_options", "MAX_SEED"]


#: Options whose value is a file name: their readers and check_output report an empty one.
_PATH_OPTIONS = {"out", "stats", "masks", "weights", "data", "config", "frame"}
#: The largest seed: what numpy's, torch's and Python's generators all take (32 bits).
MAX_SEED = 2**32 - 1


def _seed(value):
    if not 0 <= value <= MAX_SEED:
        raise ValueError(f"must be 0..{MAX_SEED} (32 bits), not {value}")
    return value


def _threads(value):
    cores = os.cpu_count() or 1
    if value > cores:
        raise ValueError(f"must be at most this machine's {cores} cores, not {value}")
    return value


def _finite(value):
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"must be a finite number, not {value}")
    return value


def _not_negative(value):
    if not value >= 0:
        raise ValueError(f"must be at least 0, not {value:g}")
    return value


def _not_empty(value):
    if value.strip() == "":
        raise ValueError("must not be empty (leave the option out for its default)")
    return value


#: dest -> extra checks of an option's value, beyond its type: one table for every command.
_VALUE_CHECKS = {"seed": (_seed,), "threads": (_threads,), "max_build_minutes": (_not_negative,)}


def checked_options(parser):
    """Give every option of ``parser`` and its subcommands the checks of its value class, as
    argparse types (so a bad value is a one-line usage error before anything runs): a float is
    finite (no nan, no inf), a string option not empty (unless a file name, refused by its own
    reader), and by name: ``--seed`` 0..2**32-1, ``--threads`` at most the machine's cores,
    ``--max-build-minutes`` at least 0 (0: no first build).  Returns the parser."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                checked_options(sub)
            continue
        if not action.option_strings or action.nargs == 0 or action.const is not None:
            continue
        checks = list(_VALUE_CHECKS.get(action.dest, ()))
        if action.type is float:
            checks.insert(0, _finite)
        if action.type is None and action.dest not in _PATH_OPTIONS and not action.choices:
            checks.insert(0, _not_empty)
        if checks:
            action.type = _checked_type(action.type or str, checks)
    return parser


def _checked_type(base, checks):
    def convert(text):
        import argparse

        value = base(text)                      # ValueError: argparse's "invalid int value"
        try:
            for check in checks:
                value = check(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value
    convert.__name__ = getattr(base, "__name__", "value")
    return convert
