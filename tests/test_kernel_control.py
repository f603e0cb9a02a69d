"""The kernel's control (hdl/kernel_control.py) on its own, in the Amaranth simulator, against
plain-Python references.

* ApCtrl: random AXI4-Lite reads and writes (random byte strobes, AW and W offered apart,
  random delays on every channel) mixed with ap_done events, compared word by word with a
  model of the register map (:data:`hdl.regmap.REGISTERS`) and the ap_ctrl_hs rules of UG1393:
  ap_start set by writing 1 and cleared at ap_ready unless auto_restart; ap_done and ap_ready
  clear on read; ap_idle; ISR bits set by an event their IER bit enables and toggled by
  writing 1; interrupt = GIE and ISR != 0.
* Launcher: for random registers and random run lengths: unaligned pointers are refused at
  once with their STATUS bits and no launch; otherwise one launch strobe with the latched
  arguments, ap_idle low until ap_done, STATUS's axi_error, KERNEL_CYCLES from ap_start seen to
  ap_done inclusive.
"""

import random

import pytest
from amaranth.lib import data

from conftest import seed_for
from stream_sim import simulate
from hdl.config import AccelConfig
from hdl.regmap import BUFFERS, INPUT_BUFFERS
from hdl.kernel_control import REGISTER_LAYOUT, ApCtrl, Launcher
from hdl.protocol import counter_fields, counter_words, decode_stream_counters
from hdl.regmap import REGISTER, REGISTERS, field_mask

CFG = AccelConfig(height=6, width=9, in_channels=2, instances=4, out_channels=7, bus_width=512)
CTRL = REGISTER["CTRL"]
BIT = {f.name: f.bit for f in CTRL.fields}
STORED = [r for r in REGISTERS if r.name.lower() in REGISTER_LAYOUT.members]


class Model:
    """The register map as the host sees it."""

    def __init__(self, cfg):
        self.regs = {r.name: 0 for r in STORED}
        self.start = self.done = self.ready = self.auto_restart = self.isr = 0
        self.inputs = {"idle": 1, "status": 0, "kernel_cycles": 0, "out_beats": 0,
                       "counters": 0}
        self.cfg = cfg

    def word_of(self, addr):
        """(register, word index) at byte address ``addr``, or None."""
        for r in REGISTERS:
            words = len(counter_words(self.cfg)) if r.array else r.words
            if r.offset <= addr < r.offset + 4 * words:
                return r, (addr - r.offset) // 4
        return None

    def write(self, addr, data, strb):
        hit = self.word_of(addr)
        if hit is None or hit[0].access == "RO":
            return
        r, i = hit
        if r.name == "CTRL":
            if strb & 1:
                self.start |= data >> BIT["ap_start"] & 1
                self.auto_restart = data >> BIT["auto_restart"] & 1
        elif r.name == "ISR":
            if strb & 1:
                self.isr ^= data & 3
        else:
            mask = sum(0xFF << 8 * k for k in range(4) if strb >> k & 1)
            old = self.regs[r.name] >> 32 * i & 0xFFFFFFFF
            new = ((old & ~mask) | (data & mask)) & ((1 << min(32, r.width - 32 * i)) - 1)
            self.regs[r.name] += (new - old) << 32 * i

    def read(self, addr):
        hit = self.word_of(addr)
        if hit is None:
            return 0
        r, i = hit
        if r.name == "CTRL":
            word = (self.start << BIT["ap_start"] | self.done << BIT["ap_done"]
                    | self.inputs["idle"] << BIT["ap_idle"] | self.ready << BIT["ap_ready"]
                    | self.auto_restart << BIT["auto_restart"])
            self.done = self.ready = 0
            return word
        if r.name == "ISR":
            return self.isr
        if r.name == "COUNTERS":
            values = decode_stream_counters(self.cfg, self.inputs["counters"])
            return [v for name in values for v in
                    (values[name] if isinstance(values[name], list) else [values[name]])][i]
        if r.name in self.regs:
            return self.regs[r.name] >> 32 * i & 0xFFFFFFFF
        return self.inputs[r.name.lower()]

    def done_event(self):
        self.isr |= self.regs["IER"]
        if not self.auto_restart:
            self.start = 0
        self.done = self.ready = 1

    @property
    def interrupt(self):
        return int(bool(self.regs["GIE"] & 1 and self.isr))


class AxiLite:
    """An AXI4-Lite master with random delays: AW and W offered independently, random READY on
    B and R."""

    def __init__(self, ctx, bus, rng, stall):
        self.ctx, self.bus, self.rng, self.stall = ctx, bus, rng, stall

    def go(self):
        return self.rng.random() >= self.stall

    async def write(self, addr, data, strb):
        ctx, s = self.ctx, self.bus
        ctx.set(s.awaddr, addr)
        ctx.set(s.wdata, data)
        ctx.set(s.wstrb, strb)
        aw = w = False          # offered
        aw_done = w_done = b_done = False
        for _ in range(1000):
            aw = not aw_done and (aw or self.go())
            w = not w_done and (w or self.go())
            bready = self.go()
            ctx.set(s.awvalid, aw)
            ctx.set(s.wvalid, w)
            ctx.set(s.bready, bready)
            aw_took, w_took = aw and ctx.get(s.awready), w and ctx.get(s.wready)
            b_took = bready and ctx.get(s.bvalid)
            if b_took:
                assert aw_done and w_done and ctx.get(s.bresp) == 0
            await ctx.tick()
            aw_done, w_done = aw_done or aw_took, w_done or w_took
            if b_took:
                break
        else:
            raise AssertionError(f"write to {addr:#x} never answered")
        for sig in (s.awvalid, s.wvalid, s.bready):
            ctx.set(sig, 0)

    async def read(self, addr):
        ctx, s = self.ctx, self.bus
        ctx.set(s.araddr, addr)
        ar = ar_done = False
        for _ in range(1000):
            ar = not ar_done and (ar or self.go())
            rready = self.go()
            ctx.set(s.arvalid, ar)
            ctx.set(s.rready, rready)
            ar_took = ar and ctx.get(s.arready)
            if rready and ctx.get(s.rvalid):
                assert ar_done and ctx.get(s.rresp) == 0
                data = ctx.get(s.rdata)
                await ctx.tick()
                break
            await ctx.tick()
            ar_done = ar_done or ar_took
        else:
            raise AssertionError(f"read of {addr:#x} never answered")
        ctx.set(s.arvalid, 0)
        ctx.set(s.rready, 0)
        return data


def random_word(rng):
    return rng.choice([0, 1, 0xFFFFFFFF, 0x81, rng.getrandbits(32), rng.getrandbits(8)])


@pytest.mark.parametrize("stall", [0.0, 0.5])
@pytest.mark.parametrize("case", range(3))
def test_ap_ctrl(case, stall):
    seed = seed_for("kernel_control", "ap_ctrl", case, stall)
    rng = random.Random(seed)
    dut = ApCtrl(CFG)
    model = Model(CFG)
    counter_bits = sum(width * count for _, _, width, count in counter_fields(CFG))
    n_words = len(counter_words(CFG))
    # mostly the registers the handshake lives in, then all the others and some unmapped words
    hot = [REGISTER[n].offset for n in ("CTRL", "GIE", "IER", "ISR")]
    every = [r.offset + 4 * i for r in REGISTERS
             for i in range(n_words if r.array else r.words)]
    unmapped = [a for a in range(0, 1 << 12, 4) if model.word_of(a) is None]
    log = []

    async def bench(ctx):
        host = AxiLite(ctx, dut.bus, rng, stall)
        ctx.set(dut.control.idle, 1)
        for step in range(300):
            op = rng.choice(["write", "write", "read", "read", "done", "inputs"])
            addr = rng.choice(rng.choice([hot, hot, every, unmapped]))
            if op == "write":
                data, strb = random_word(rng), rng.choice([0xF, 0xF, 0x1, rng.getrandbits(4)])
                log.append(("write", hex(addr), hex(data), strb))
                await host.write(addr, data, strb)
                model.write(addr, data, strb)
            elif op == "read":
                got = await host.read(addr)
                want = model.read(addr)
                log.append(("read", hex(addr), hex(got)))
                assert got == want, f"seed={seed} step {step}: read {addr:#x}: {got:#x} != " \
                                    f"{want:#x}; last ops {log[-6:]}"
            elif op == "done":
                log.append(("done",))
                ctx.set(dut.control.done, 1)
                await ctx.tick()
                ctx.set(dut.control.done, 0)
                model.done_event()
            else:
                values = {"idle": rng.getrandbits(1), "status": rng.getrandbits(32),
                          "kernel_cycles": rng.getrandbits(32),
                          "out_beats": rng.getrandbits(32),
                          "counters": rng.getrandbits(counter_bits)}
                model.inputs = values
                for name in ("idle", "status", "kernel_cycles"):
                    ctx.set(getattr(dut.control, name), values[name])
                ctx.set(dut.out_beats, values["out_beats"])
                ctx.set(dut.counters.as_value(), values["counters"])
                await ctx.tick()
            assert ctx.get(dut.interrupt) == model.interrupt, f"seed={seed} step {step}: {log[-6:]}"
            assert ctx.get(dut.control.start) == model.start, f"seed={seed} step {step}: {log[-6:]}"
            for r in STORED:
                assert ctx.get(dut.control.regs[r.name.lower()]) == model.regs[r.name], \
                    f"seed={seed} step {step}: {r.name}"

    simulate(dut, bench)


def test_ap_ctrl_interrupt_sequence():
    """The UG1393 sequence spelled out: enable, run, interrupt, acknowledge by writing ISR."""
    dut = ApCtrl(CFG)

    async def bench(ctx):
        host = AxiLite(ctx, dut.bus, random.Random(0), 0.0)
        await host.write(REGISTER["GIE"].offset, 1, 0xF)
        await host.write(REGISTER["IER"].offset, 1, 0xF)       # ap_done only
        await host.write(CTRL.offset, 1 << BIT["ap_start"], 0xF)
        assert ctx.get(dut.control.start) and not ctx.get(dut.interrupt)
        ctx.set(dut.control.done, 1)
        await ctx.tick()
        ctx.set(dut.control.done, 0)
        assert not ctx.get(dut.control.start)                    # no auto_restart
        assert ctx.get(dut.interrupt)
        assert await host.read(REGISTER["ISR"].offset) == 1
        ctrl = await host.read(CTRL.offset)
        assert ctrl >> BIT["ap_done"] & 1 and ctrl >> BIT["ap_ready"] & 1
        assert not (await host.read(CTRL.offset)) >> BIT["ap_done"] & 1   # cleared on read
        await host.write(REGISTER["ISR"].offset, 1, 0xF)       # toggle: acknowledged
        assert not ctx.get(dut.interrupt)
        await host.write(CTRL.offset, 1 << BIT["ap_start"] | 1 << BIT["auto_restart"], 0xF)
        ctx.set(dut.control.done, 1)
        await ctx.tick()
        ctx.set(dut.control.done, 0)
        assert ctx.get(dut.control.start)                        # auto_restart keeps it
        assert ctx.get(dut.interrupt)

    simulate(dut, bench)


# -- Launcher --------------------------------------------------------------------------------

def random_registers(rng):
    regs = {r.name.lower(): rng.getrandbits(r.width) for r in STORED}
    unaligned = rng.random() < 0.4
    for b in BUFFERS:
        regs[b] &= ~63
        if unaligned and rng.random() < 0.5:
            regs[b] |= rng.choice([1 << rng.randrange(6), rng.randrange(1, 64)])
    regs["images"] = rng.choice([0, 1, rng.getrandbits(16)])
    return regs


def launch_reference(regs):
    """(STATUS if refused or None, the arguments a launch carries)."""
    bits = sum(1 << i for i, b in enumerate(BUFFERS) if regs[b] % 64)
    load_config = REGISTER["FLAGS"].field("load_config").bit
    args = {"base": {b: regs[b] for b in BUFFERS},
            "beats": {b: regs[f"{b}_beats"] for b in INPUT_BUFFERS},
            "load_config": regs["flags"] >> load_config & 1,
            "images": regs["images"] or 1}
    status = field_mask("STATUS", "refused") | bits << REGISTER["STATUS"].field("unaligned").bit
    return (status if bits else None), args


def as_dict(value):
    """A struct constant as nested dicts of ints."""
    if isinstance(value, data.Const):
        return {name: as_dict(value[name]) for name, _ in value.shape()}
    return int(value)


@pytest.mark.parametrize("case", range(4))
def test_launcher(case):
    seed = seed_for("kernel_control", "launcher", case)
    rng = random.Random(seed)
    dut = Launcher()

    async def bench(ctx):
        c = dut.control
        for run in range(8):
            regs = random_registers(rng)
            refused, args = launch_reference(regs)
            busy_for, error = rng.randrange(0, 40), rng.random() < 0.3
            for _ in range(rng.randrange(3)):
                await ctx.tick()
            ctx.set(c.regs, regs)
            ctx.set(c.start, 1)
            launches, done_at, idle = [], None, []
            busy_left = None
            for cycle in range(200):
                ctx.set(dut.busy, busy_left is not None and busy_left > 0)
                ctx.set(dut.axi_error, error and busy_left is not None)
                if ctx.get(dut.launch.start):
                    launches.append((cycle, as_dict(ctx.get(dut.launch.args))))
                idle.append(ctx.get(c.idle))
                done = ctx.get(c.done)
                await ctx.tick()
                if launches and busy_left is None:
                    busy_left = busy_for
                elif busy_left:
                    busy_left -= 1
                if done:
                    done_at = cycle
                    ctx.set(c.start, 0)            # ApCtrl clears ap_start at ap_ready
                    break
            assert done_at is not None, f"seed={seed} run {run}: no ap_done"
            await ctx.tick()                       # DONE: one cycle before IDLE
            assert ctx.get(c.idle) and not ctx.get(dut.launch.start)
            assert ctx.get(c.kernel_cycles) == done_at + 1, f"seed={seed} run {run}"
            if refused is not None:
                assert done_at == 0 and not launches and all(idle), f"seed={seed} run {run}"
                assert ctx.get(c.status) == refused, f"seed={seed} run {run}"
                continue
            assert [cyc for cyc, _ in launches] == [1], f"seed={seed} run {run}: {launches}"
            assert launches[0][1] == args, f"seed={seed} run {run}"
            assert done_at == 2 + busy_for, f"seed={seed} run {run}"
            assert idle == [1] + [0] * done_at, f"seed={seed} run {run}"
            assert ctx.get(c.status) == (field_mask("STATUS", "axi_error") if error else 0), f"seed={seed} run {run}"

    simulate(dut, bench)
