"""The statistics file of `velcro profile` and the masks file of `velcro compress`: their
format records, their readers (every field checked, a truncated or corrupt file one line) and
their content digest; outputs are written with py_ref.outputs.atomic_write."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..errors import CliError
from ..outputs import atomic_write


#: The record every statistics / masks file carries (files without it are refused).
STATS_FORMAT = "velcro-stats/1"


MASKS_FORMAT = "velcro-masks/1"


def digest_stats(blob: dict) -> str:
    """sha256 of a statistics file's content (its record and every tensor's values)."""
    from ..models import tensor_bytes
    h = hashlib.sha256()
    head = {k: blob[k] for k in ("format", "model", "task", "skip_first", "weights_sha256")}
    h.update(json.dumps(head, sort_keys=True).encode())
    for p in blob["points"]:
        h.update(json.dumps({k: p[k] for k in ("name", "index", "count", "macs")}, sort_keys=True).encode())
        for key in ("mean", "m2", "zeros"):
            t = p[key]
            h.update(b"none" if t is None else f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
            if t is not None:
                h.update(tensor_bytes(t))
    return h.hexdigest()


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _read_record(path, command: str, fmt: str, key: str, of: str = "") -> dict:
    """The dict a `velcro COMMAND` output ``path`` holds, with the format record ``fmt``; a
    file without it is refused, one an older version made (it holds ``key``) with the advice
    to run the command again."""
    from ..models import read_pt
    what = f"a `velcro {command}` output"
    blob = read_pt(path, what)
    if not isinstance(blob, dict) or blob.get("format") != fmt:
        old = isinstance(blob, dict) and key in blob
        raise CliError(f"{path} is not {what} with a '{fmt}' record{of}"
                       + (f" (made by an older version: run `velcro {command}` again)" if old else ""))
    return blob


def load_stats(path):
    """(record, [PointStats], content sha256) of a `velcro profile` output."""
    from ..velcro import PointStats
    blob = _read_record(path, "profile", STATS_FORMAT, "points")
    ok = (isinstance(blob.get("model"), str) and isinstance(blob.get("task"), str)
          and isinstance(blob.get("skip_first"), bool) and isinstance(blob.get("weights_sha256"), str)
          and isinstance(blob.get("points"), list) and blob["points"])
    if not ok:
        raise CliError(f"cannot read {path}: its record is incomplete (truncated or corrupt)")
    stats = []
    for i, p in enumerate(blob["points"]):
        good = (isinstance(p, dict) and isinstance(p.get("name"), str) and is_int(p.get("index"))
                and is_int(p.get("count")) and p["count"] >= 1 and is_int(p.get("macs"))
                and p["macs"] >= 0 and isinstance(p.get("mean"), torch.Tensor)
                and isinstance(p.get("m2"), torch.Tensor) and p["mean"].is_floating_point()
                and p["m2"].is_floating_point() and p["mean"].shape == p["m2"].shape
                and p["mean"].numel() > 0
                and (p.get("zeros") is None or (isinstance(p["zeros"], torch.Tensor)
                                                and p["zeros"].shape == p["mean"].shape)))
        if not good:
            raise CliError(f"cannot read {path}: activation point {i} is incomplete (truncated or corrupt)")
        if not (torch.isfinite(p["mean"]).all() and torch.isfinite(p["m2"]).all() and (p["m2"] >= 0).all()):
            raise CliError(f"{path}: activation point {i} '{p['name']}' holds NaN, inf or negative spread")
        stats.append(PointStats(p["name"], p["index"], p["mean"].double(), p["m2"].double(),
                                p["count"], p["macs"], p.get("zeros")))
    return blob, stats, digest_stats(blob)


def load_masks(path):
    """(record, [PointStats] with the embedded means, masks) of a `velcro compress` output."""
    from ..velcro import PointStats
    blob = _read_record(path, "compress", MASKS_FORMAT, "masks", " of the statistics it came from")
    src = blob.get("source")
    ok = (isinstance(src, dict) and all(isinstance(src.get(k), str) for k in
                                        ("model", "task", "weights_sha256", "stats_sha256"))
          and isinstance(blob.get("masks"), list) and isinstance(blob.get("points"), list)
          and len(blob["masks"]) == len(blob["points"]) and blob["points"])
    if not ok:
        raise CliError(f"cannot read {path}: its record is incomplete (truncated or corrupt)")
    stats = []
    for i, (p, m) in enumerate(zip(blob["points"], blob["masks"])):
        good = (isinstance(p, dict) and isinstance(p.get("name"), str) and is_int(p.get("index"))
                and is_int(p.get("count")) and is_int(p.get("macs"))
                and isinstance(p.get("mean"), torch.Tensor) and p["mean"].is_floating_point()
                and isinstance(m, torch.Tensor) and m.dtype == torch.bool and m.shape == p["mean"].shape)
        if not good:
            raise CliError(f"cannot read {path}: mask {i} is incomplete (truncated or corrupt)")
        mean = p["mean"].double()
        stats.append(PointStats(p["name"], p["index"], mean,
                                torch.zeros((), dtype=torch.float64).expand(mean.shape),
                                p["count"], p["macs"]))
    return blob, stats, blob["masks"]


def write_output(out: Path, write) -> None:
    """cli.atomic_write, with an unwritable folder or a full disk reported against ``out``."""
    try:
        atomic_write(out, write)
    except OSError as e:
        raise CliError(f"cannot write {out}: {e.strerror or type(e).__name__}") from None


def fmnist_masks(args, command: str):
    """(record, stats, masks, source record, task) of the fmnist masks file ``args.masks``,
    its model and task checked against the options given."""
    mblob, stats, masks = load_masks(args.masks)
    src = mblob["source"]
    if src["model"] != "fmnist":
        raise CliError(f"{args.masks} holds masks of model {src['model']}; {command} supports "
                       "the fmnist model")
    task = args.task or src["task"]
    if task != src["task"]:
        raise CliError(f"{args.masks} was made for task {src['task']}, not --task {task}")
    return mblob, stats, masks, src, task
