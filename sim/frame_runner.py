"""Run one FRAME (one image or a batch) through the RTL: the Python API behind ``velcro sim``.

    result = run_frame(frame, sim="verilator")   # hdl.results.StreamResult of one image
    result = run_frame(frame, batch=ifmaps)      # ifmaps int8 [B, C_in, H, W]: B images
    result.ofm, result.counters["image_cycles"], result.stream_cycles, result.arrays()

The design is generated to match the frame's shapes and compiled once per configuration
(see sim/runner.py); every call starts the simulator on that cached model, in a private
temporary folder (``velcro-sim-*`` in $TMPDIR) that is removed however the call ends. A batch
is sent as one FRAME command of B images after the constants (WEIGHTS, SCHEDULE);
``stream_cycles`` counts from the first input beat of the first image to the last output beat
of the last image.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

import numpy as np

from hdl.contract import config_for_frame
from hdl.program import LayerProgram
from hdl.results import StreamResult
from py_ref.golden import Frame
from py_ref.golden import golden_mismatch as image_mismatch
from py_ref.outputs import write_atomically

from .runner import Build, SimulationFailed, ticking

#: A failed run's simulator log is kept here, in the build folder (the temporary folder goes).
FAILED_LOG = "failed-run.log"


def run_frame(frame: Frame, sim: str = "verilator", *, saif_path: Path | None = None,
              build: Build | None = None, progress=None, batch=None, cfg=None,
              waves_path: Path | None = None, **config_overrides) -> StreamResult:
    """Simulate ``frame`` (or ``batch``, ifmaps [B, C_in, H, W] with ``frame``'s constants);
    returns the run's result record (ofm [B, N, H, W], B = 1 without ``batch``, and every
    counter).

    With ``saif_path`` (Verilator only) the switching activity of the run is saved there.
    With ``waves_path`` (``build`` a waves build, ``Build(..., waves="fst"|"vcd")``) the run's
    waveform, every signal of the design, is copied there.
    ``build`` is the model to use (default: the cached one for the frame's configuration);
    ``cfg`` is the layer to run on ``build``'s design (default: the build's own shape): the
    testbench sends the LAYER command that sets it (hdl.protocol), so one build runs every
    layer within its maxima.
    ``progress(message)`` hears about generation, compilation and simulation.
    On a failed run, SimulationFailed.log names a copy of the simulator log (FAILED_LOG in the
    build folder).
    """
    say = progress or (lambda message: None)
    with tempfile.TemporaryDirectory(prefix="velcro-sim-") as tmp:
        tmp = Path(tmp)
        if build is None:
            cfg = config_for_frame(frame, **config_overrides)
            build = Build(cfg, sim, saif=saif_path is not None, defer=True)
        build.build(progress=say)
        env = {}
        if cfg is not None:
            if cfg.design != build.cfg.design:
                raise ValueError(f"layer {cfg.tag} is not a layer of the build's design "
                                 f"{build.cfg.tag}")
            LayerProgram.for_frame(cfg, frame)      # ValueError unless the frame is the layer
            env["VELCRO_CONFIG"] = cfg.to_json()
        arrays = dataclasses.asdict(frame)
        if batch is not None:
            arrays["ifmap"] = np.asarray(batch, np.int8)
        np.savez(tmp / "frame.npz", **arrays)
        say("simulating")
        try:
            with ticking(say, "simulating"):
                run_dir = build.run("sim.tb_accel", ["run_frame_file"], test_dir=tmp / "run",
                                    quiet=True, env={"VELCRO_FRAME": str(tmp / "frame.npz"),
                                                     "VELCRO_RESULT": str(tmp / "result.npz"),
                                                     **env})
        except SimulationFailed as exc:
            exc.log = _keep_log(exc.log, build.build_dir / FAILED_LOG)
            raise
        with np.load(tmp / "result.npz") as arrays:
            result = StreamResult.from_arrays(arrays)
        if saif_path is not None:
            Path(saif_path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run_dir / "dump.saif", saif_path)
        if waves_path is not None:
            if not build.waves:
                raise ValueError("waves_path needs a waves build (Build(..., waves=...))")
            shutil.copyfile(build.waves_file(run_dir), waves_path)
    return result


def golden_mismatch(frame: Frame, result: StreamResult, batch=None) -> str | None:
    """None if every image's ofm in ``result`` equals ``py_ref.golden.golden_ofm`` bit for bit,
    else one line naming the first differing image and output (``velcro sim`` checks with it;
    the testbench's ``run_frame_file`` only runs the frame)."""
    frames = [frame] if batch is None else frame.batch(np.asarray(batch, np.int8))
    ofm = np.asarray(result.ofm).reshape(len(frames), *frame.mask.shape)
    for k, f in enumerate(frames):
        differs = image_mismatch(f, ofm[k])
        if differs:
            return f"image {k}: {differs}"
    return None


def _keep_log(log: Path | None, keep: Path) -> Path | None:
    """Copy ``log`` to ``keep`` (atomically: concurrent failures each leave a whole file)."""
    if log is None or not Path(log).exists():
        return None
    return write_atomically(keep, lambda tmp: shutil.copyfile(log, tmp))
