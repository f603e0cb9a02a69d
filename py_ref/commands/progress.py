"""Progress of a running command on stderr: stage lines with the elapsed time, a tqdm bar on a
terminal; stdout carries the result lines only."""

from __future__ import annotations

import sys
import time


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "es" if noun.endswith("ch") else "s")


def stage(cmd: str, msg: str, t0: float) -> None:
    print(f"{cmd}: {msg}, {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)


def note(args, msg: str) -> None:
    """A stage line of the running command (``cmd: msg, t s`` on stderr)."""
    stage(getattr(args, "_cmd", "velcro"), msg, getattr(args, "_t0", time.monotonic()))


def progress(items, cmd: str, t0: float):
    """Yield ``items``; report progress on stderr: tqdm on a terminal, otherwise a line
    ``cmd: i/n batches, t s`` about every tenth of the batches (and at least every 30 s)."""
    try:
        total = len(items)
    except TypeError:
        total = None
    if sys.stderr.isatty():
        from tqdm import tqdm
        yield from tqdm(items, desc=cmd, unit="batch", total=total, leave=False)
        return
    every = max(1, -(-total // 10)) if total else 10
    last = time.monotonic()
    for i, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if i % every == 0 or i == total or now - last >= 30:
            stage(cmd, f"{i}/{total if total is not None else '?'} batches done", t0)
            last = now
