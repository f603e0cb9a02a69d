"""cocotb host flow of several compute units (``make kernel CUS=k``), on the top of sim/multi_cu.py.

Every CU gets what v++ gives it: the shared ``ap_clk`` / ``ap_rst_n``, its own AXI4-Lite host
and its own two AXI masters, here two cocotbext-axi ``AxiRam`` front ends per CU onto one
sparse memory that stands for the HBM. HBM pseudo-channel i is the address range
[i * 256 MB, (i + 1) * 256 MB); each CU's buffers sit in the pseudo-channels connectivity.cfg
gives its masters (:func:`hdl.regmap.hbm_banks` with the channels make kernel gives the
configuration, :func:`hdl.placement.hbm_channels`; for the default, inputs in HBM[2j], the ofm in
HBM[2j+1]), and the burst monitor of every CU fails a burst outside them.

The host flow is host_velcro.py's: :func:`hdl.kernel_host.split_batch` splits a batch of B
images into one contiguous share per CU, every CU with a share is started, all run at once,
and :func:`hdl.kernel_host.gather` puts the outputs back in batch order; every image is
compared with ``golden_ofm`` with ``==``. All channels of all buses run under seeded random
stalls. The configuration arrives as JSON in ``VELCRO_CONFIG``, the CU count in ``VELCRO_CUS``;
``VELCRO_SEED`` replays a run.
"""

from __future__ import annotations

import os
import random

import cocotb
import numpy as np
from cocotb.utils import get_sim_time

from hdl.kernel_host import gather, split_batch
from hdl.placement import hbm_channels
from hdl.regmap import GMEM_IN, GMEM_OUT, check_compute_units, cu_names, hbm_banks
from py_ref.golden import golden_mismatch, random_batch, random_frame

from .tb_kernel import KernelTB

#: Bytes of one HBM pseudo-channel of the U280 (8 GB / 32).
HBM_CHANNEL_BYTES = 256 << 20
MAX_IMAGES = 3               # per CU and start: the largest share the cases below hand out


def channels(bank: str) -> tuple:
    """"HBM[5]" -> (5, 5); "HBM[4:5]" -> (4, 5): the first and last pseudo-channel."""
    first, _, last = bank.removeprefix("HBM[").removesuffix("]").partition(":")
    return int(first), int(last or first)


class MultiCuTB:
    """One :class:`KernelTB` per compute unit of the top, their buses on their own channels."""

    def __init__(self, dut):
        k = check_compute_units(int(os.environ["VELCRO_CUS"]))
        self.dut = dut
        self.cus = []
        placed = None
        for j, cu in enumerate(cu_names(k)):
            tb = KernelTB(dut, prefix=f"{cu}_", clock=(j == 0), max_images=MAX_IMAGES,
                          mem=self.cus[0].hbm.mem if self.cus else None)
            # the banks make kernel gives this configuration (hdl.placement.hbm_channels)
            placed = placed or hbm_banks(k, hbm_channels(tb.cfg))
            banks = placed[cu]
            # each CU its own stall and placement streams (VELCRO_SEED gives them all one seed)
            tb.rng = random.Random(tb.seed * 1009 + j)
            tb.name = cu
            tb.windows = {m: (channels(b)[0] * HBM_CHANNEL_BYTES,
                              (channels(b)[1] + 1) * HBM_CHANNEL_BYTES)
                          for m, b in banks.items()}
            self.cus.append(tb)
        assert [tb.name for tb in self.cus] == cu_names(k)
        self.cfg, self.seed = self.cus[0].cfg, self.cus[0].seed
        self.np_rng = np.random.default_rng(self.seed)

    def random_stalls(self, probability=0.3):
        for tb in self.cus:
            tb.random_stalls(probability)

    async def reset(self):
        await self.cus[0].reset()

    def place(self, tb) -> dict:
        """Buffer addresses of CU ``tb`` inside its pseudo-channels, at a random page offset."""
        lo_in, _ = tb.windows[GMEM_IN]
        lo_out, _ = tb.windows[GMEM_OUT]
        return tb.place(lo_in + 4096 * tb.rng.randrange(1, 4096),
                        out_base=lo_out + 4096 * tb.rng.randrange(1, 4096))

    async def run_batch(self, batch, *, load_config=True, interrupt=False) -> np.ndarray:
        """Split ``batch`` (frames sharing batch[0]'s constants) across the CUs, run every CU
        with a share at once, gather; every image ``==`` golden. Returns the ofm [B, N, H, W]."""
        shares = split_batch(len(batch), len(self.cus))
        spans = {}

        async def one(tb, share):
            frames = [batch[i] for i in share]
            for log in (tb.reads, tb.writes):
                log.clear()
            t0 = get_sim_time("ns")
            ofm = await tb.run(frames[0], self.place(tb), frames=frames, load_config=load_config,
                               interrupt=interrupt)
            spans[tb.name] = (t0, get_sim_time("ns"))
            return ofm

        for tb in self.cus:                   # an idle CU must not move: its logs stay empty
            tb.reads.clear()
            tb.writes.clear()
        tasks = [cocotb.start_soon(one(tb, share)) if len(share) else None
                 for tb, share in zip(self.cus, shares)]
        outputs = [await t if t is not None else None for t in tasks]
        ofm = gather(outputs, shares)
        assert ofm.shape[0] == len(batch)
        for i, f in enumerate(batch):
            differs = golden_mismatch(f, ofm[i])
            assert not differs, f"image {i} of {len(batch)} (gathered): {differs} (seed {self.seed})"
        for tb, share in zip(self.cus, shares):
            if not len(share):
                assert tb.reads == [] and tb.writes == [], f"{tb.name} had no share but moved"
        busy = [spans[tb.name] for tb, share in zip(self.cus, shares) if len(share)]
        if len(busy) > 1:                     # the CUs ran at the same time, not one after another
            assert max(s for s, _ in busy) < min(e for _, e in busy), \
                f"CUs did not overlap: {spans}"
        self.dut._log.info("batch of %d images over %s: shares %s, spans %s", len(batch),
                           [tb.name for tb in self.cus], [len(s) for s in shares], spans)
        return ofm


def batch_of(cfg, rng, images: int, density: float):
    return random_batch(cfg, rng, random_frame(cfg, rng, density=density), images)


@cocotb.test()
async def split_batches(dut):
    """Batches of 5 (3 + 2), 1 (the other CUs idle) and k + 1 images split across the CUs and
    run concurrently, polled and by interrupt, then one with load_config = 0; every image of
    every batch checked against the golden model after gathering."""
    tb = MultiCuTB(dut)
    tb.random_stalls(0.3)
    await tb.reset()
    cfg, k = tb.cfg, len(tb.cus)
    await tb.run_batch(batch_of(cfg, tb.np_rng, 5, 0.4))
    await tb.run_batch(batch_of(cfg, tb.np_rng, 1, 0.7), interrupt=True)
    third = batch_of(cfg, tb.np_rng, k + 1, 0.5)
    await tb.run_batch(third, interrupt=True)
    # the same constants again, only new ifmaps: every CU reuses what it loaded
    await tb.run_batch([third[0].with_ifmap(random_frame(cfg, tb.np_rng).ifmap)
                        for _ in range(2 * k)], load_config=False)
    for cu in tb.cus:                         # the CUs with a share of the 1-image batch: one
        counters = await cu.counters()
        assert counters["batches"] == 3 + (cu is tb.cus[0]), f"{cu.name}: {counters['batches']}"
