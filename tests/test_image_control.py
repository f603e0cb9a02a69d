"""hdl.image_control's ImageControl on its own, in the Amaranth simulator, against a plain-Python
model of the images of a batch, under random load and completion events.

The bench plays the rest of the engine: after each batch ``start`` the dealer loads the images
one by one at random (never more than two ahead of the finished ones: two window buffers), the
walkers run for a random number of cycles after each ``walk``, and the packer ends the oldest
computing image at random once its walkers are done. Batches alternate between schedules with
and without work (``steps`` = 0: every image ends as it starts). The model keeps the images
themselves (which is next, which are in flight in which buffer, how many ended) and every cycle
the component's ``go``, ``walk``, ``buf``, ``empty``, ``end``, ``open``, ``ended`` and
``finished`` (the dealer's ``released``) must be what it implies.
"""

import random

import pytest

from conftest import seed_for
from stream_sim import simulate
from hdl.config import AccelConfig
from hdl.datapath import entries_per_instance
from hdl.image_control import ImageControl

CFG = AccelConfig(height=5, width=7, in_channels=1, instances=2, bus_width=64)


class Images:
    """The images of one batch: ``next`` to start, ``flight`` [(image, buffer)] computing,
    oldest first, ``done`` ended. Image j uses buffer j % 2."""

    def __init__(self):
        self.next, self.flight, self.done = 0, [], 0

    def outputs(self, *, start, loaded, running, steps, packed):
        go = not running and self.next < loaded and not start
        empty = go and steps == 0
        return dict(go=go, walk=go and steps != 0, buf=self.next % 2, empty=empty,
                    end=packed or empty, finished=self.done, ended=self.done % 2,
                    open=sum(1 << b for _, b in self.flight))

    def step(self, out, *, packed):
        if out["walk"]:
            self.flight.append((self.next, self.next % 2))
        if out["go"]:
            self.next += 1
        if packed:
            image, buf = self.flight.pop(0)
            assert image == self.done and buf == self.done % 2   # the model's own invariant
        if out["end"]:
            self.done += 1


@pytest.mark.parametrize("pace", [0.2, 0.6, 0.9])
@pytest.mark.parametrize("run", range(3))
def test_image_control_matches_model(run, pace):
    seed = seed_for("image_control", run, pace)
    rng = random.Random(seed)
    dut = ImageControl(CFG)
    batches = [(rng.randint(1, 6), rng.choice([0, 1, rng.randint(2, entries_per_instance(CFG))]))
               for _ in range(8)] + [(3, 0), (4, 5)]
    seen = {"two_open": 0, "empty": 0, "go_and_packed": 0}

    async def bench(ctx):
        cycle = 0
        model = Images()
        for images, steps in batches:
            ctx.set(dut.steps, steps)       # SCHEDULE, between batches
            ctx.set(dut.packed, 0)
            for _ in range(rng.randint(0, 3)):     # nothing moves between batches
                await ctx.tick()
                cycle += 1
                assert (ctx.get(dut.image.go), ctx.get(dut.image.end), ctx.get(dut.finished),
                        ctx.get(dut.image.open)) == (0, 0, model.done, 0), f"seed={seed}"
            start = True
            # the component's own start blocks go, whatever the dealer's count still shows
            loaded = rng.randint(0, 6)
            running_left, walked = 0, []    # walked: images whose walkers are done
            while start or model.done < images:
                packed = bool(model.flight) and model.flight[0][0] in walked \
                    and rng.random() < pace
                inputs = dict(start=start, loaded=loaded, running=running_left > 0,
                              steps=steps, packed=packed)
                for k, v in inputs.items():
                    ctx.set(getattr(dut, k), v)
                want = model.outputs(**inputs)
                got = dict(go=ctx.get(dut.image.go), walk=ctx.get(dut.walk),
                           buf=ctx.get(dut.image.buf), empty=ctx.get(dut.image.empty),
                           end=ctx.get(dut.image.end), finished=ctx.get(dut.finished),
                           ended=ctx.get(dut.image.ended), open=ctx.get(dut.image.open))
                assert got == {k: int(v) for k, v in want.items()}, \
                    f"seed={seed} cycle {cycle}: got {got}, expected {want}"
                seen["two_open"] += want["open"] == 3
                seen["empty"] += want["empty"]
                seen["go_and_packed"] += want["go"] and packed
                # the edge: the model, then the engine around the component
                if start:
                    model, loaded = Images(), 0     # the dealer's loaded restarts with it
                else:
                    model.step(want, packed=packed)
                    if loaded < images and loaded < model.done + 2 and rng.random() < pace:
                        loaded += 1
                if running_left:
                    running_left -= 1
                    if not running_left:
                        walked.append(model.next - 1)
                if want["walk"]:
                    running_left = rng.randint(1, 6)
                start = False
                await ctx.tick()
                cycle += 1

    simulate(dut, bench)
    # the cases that matter happened: two images in flight, empty images, an image ending as
    # the next one starts
    assert all(seen.values()), f"seed={seed}: {seen}"
