"""Formal properties of the kernel's parts, proven with SymbiYosys (``make formal``).

One harness per part (:mod:`hdl.formal.dma`, :mod:`hdl.formal.control`,
:mod:`hdl.formal.engine`, :mod:`hdl.formal.streams`): the part's protocol as ``Assert``, the
other side's as ``Assume``, ``Cover`` for the states each property is about. :data:`PROOFS` lists them with
the mode and depth each is run at; :mod:`hdl.formal.run` runs one.
"""

from __future__ import annotations

from functools import partial

from ..config import AccelConfig
from .control import ApCtrlHarness, LauncherHarness
from .dma import FeederHarness, ReadSequencerHarness, WriteBackHarness
from .engine import EngineHarness
from .run import Outcome, Proof, run_job
from .streams import DatapathHarness, FrontEndHarness, PackerHarness, WalkerHarness

__all__ = ["PROOFS", "Proof", "Outcome", "run_job"]

#: every proof: k-induction where it closes (depth = k), its covers within ``cover_depth``
PROOFS = (
    Proof("feeder", FeederHarness, "prove", 3, 12),
    # a run over three segments takes SEEK, LEN, CHECK, OFFER per burst: covers to 20
    Proof("read_sequencer", ReadSequencerHarness, "prove", 4, 20, slow=True),
    Proof("write_back", WriteBackHarness, "prove", 2, 16),
    Proof("ap_ctrl", ApCtrlHarness, "prove", 2, 10),
    # the default kernel's map: more counter words, the same registers
    Proof("ap_ctrl_default", partial(ApCtrlHarness, AccelConfig()), "prove", 2, 10),
    Proof("launcher", LauncherHarness, "prove", 4, 10),
    # the covers need a whole frame (LAYER, WEIGHTS, SCHEDULE, FRAME, ifmap): 41 cycles
    Proof("engine", EngineHarness, "prove", 4, 44, slow=True),
    # the engine's internal streams, each producer alone
    Proof("walker", WalkerHarness, "prove", 2, 10),
    Proof("packer", PackerHarness, "prove", 2, 12),
    Proof("frontend", FrontEndHarness, "prove", 2, 12),
    # a result needs the pipeline (PIPELINE_LATENCY = 29 cycles): covers to 34
    Proof("datapath", DatapathHarness, "prove", 2, 34),
)
