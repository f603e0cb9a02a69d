"""One way to drive ``amaranth.lib.stream`` ports in the Amaranth simulator.

:func:`run_streams` plays any number of sources and sinks cycle by cycle, with seeded random
stalls (a source withholds ``valid``, a sink withholds ``ready``, each with probability
``stall``), and records the cycle of every transfer, so the same call serves correctness tests
under stalls and exact cycle-count tests without them. A source keeps ``valid`` and its payload
once offered until the transfer (the AXI-Stream rule).
"""

from __future__ import annotations


#: Clock period of every Amaranth-simulator test (the value is arbitrary: tests count cycles).
CLOCK_PERIOD = 1e-8


def simulate(dut, bench, *, monitors=()) -> None:
    """Run testbench ``bench`` on ``dut`` with one clock, plus background ``monitors``."""
    from amaranth.sim import Simulator

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(bench)
    for monitor in monitors:
        sim.add_testbench(monitor, background=True)
    sim.run()


class Timeout(AssertionError):
    pass


async def run_streams(ctx, *, sources=(), sinks=(), rng=None, stall=0.0, timeout=100_000,
                      drain=4):
    """Drive ``sources`` [(stream, payloads)] and ``sinks`` [(stream, count)] until every payload
    has gone in and every sink has ``count`` transfers, then keep the sinks ready ``drain`` more
    cycles and fail if anything else arrives.

    Returns one list per sink of ``(cycle, payload)``, cycle 0 being the call's first cycle;
    payloads come back as ``ctx.get`` gives them (an int, or a ``data.Const`` for layouts).
    """
    if stall and rng is None:
        raise ValueError("stalls need an rng")
    sent = [0] * len(sources)
    offered = [False] * len(sources)
    got = [[] for _ in sinks]
    cycle = 0

    def pending():
        return (any(n < len(p) for n, (_, p) in zip(sent, sources))
                or any(len(g) < count for g, (_, count) in zip(got, sinks)))

    while pending():
        if cycle >= timeout:
            raise Timeout(f"streams stuck after {cycle} cycles: sent {sent}, "
                          f"received {[len(g) for g in got]}")
        for i, (s, payloads) in enumerate(sources):
            more = sent[i] < len(payloads)
            offered[i] = more and (offered[i] or not stall or rng.random() >= stall)
            ctx.set(s.valid, offered[i])
            if offered[i]:
                ctx.set(s.payload, payloads[sent[i]])
        ready = []
        for j, (s, count) in enumerate(sinks):
            ready.append(len(got[j]) < count and (not stall or rng.random() >= stall))
            ctx.set(s.ready, ready[j])
        took = [offered[i] and ctx.get(s.ready) for i, (s, _) in enumerate(sources)]
        for j, (s, _) in enumerate(sinks):
            if ready[j] and ctx.get(s.valid):
                got[j].append((cycle, ctx.get(s.payload)))
        await ctx.tick()
        cycle += 1
        for i, t in enumerate(took):
            if t:
                sent[i] += 1
                offered[i] = False
    for s, _ in sources:
        ctx.set(s.valid, 0)
    for s, _ in sinks:
        ctx.set(s.ready, 1)
    for _ in range(drain):
        for j, (s, _) in enumerate(sinks):
            if ctx.get(s.valid):
                raise AssertionError(f"sink {j}: unexpected transfer {ctx.get(s.payload)!r} "
                                     f"after {len(got[j])} expected ones")
        await ctx.tick()
    for s, _ in sinks:
        ctx.set(s.ready, 0)
    return got
