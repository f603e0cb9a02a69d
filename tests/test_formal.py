"""The quick formal proofs (hdl/formal, SymbiYosys with yices from requirements.txt): each
property proven and each cover reached. `make formal` runs every proof, the slow ones too (they
are not collected here: ``Proof.slow``)."""

import pytest

from hdl.formal import PROOFS, run_job

QUICK = [p for p in PROOFS if not p.slow]


def test_the_quick_proofs_are_a_subset():
    assert QUICK and set(p.name for p in QUICK) <= set(p.name for p in PROOFS)


@pytest.mark.parametrize("proof", QUICK, ids=[p.name for p in QUICK])
@pytest.mark.parametrize("mode", ["proof", "cover"])
def test_formal(proof, mode, tmp_path):
    o = run_job(proof, proof.mode if mode == "proof" else "cover", tmp_path)
    assert o.passed, f"{o.proof} {o.mode} depth {o.depth}:\n{o.summary}\n(log {o.log})"
