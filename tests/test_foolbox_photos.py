"""Real ImageNet photos offline (foolbox 3.3.4's data folder, requirements-nodeps.txt): the
real-weight MobileNetV2 flow end to end.  Nothing is skipped: foolbox and the MobileNetV2
weights are requirements, so a missing one is a failure."""

import subprocess
import sys
from pathlib import Path

import torch

from py_ref import velcro
from py_ref.models import imagenet_model
from py_ref.photos import foolbox_imagenet_photos, imagenet_categories

ROOT = Path(__file__).resolve().parent.parent


def test_photos_and_labels():
    x, y, names = foolbox_imagenet_photos()
    assert x.shape == (20, 3, 224, 224) and x.dtype == torch.float32
    assert names[0] == "imagenet_00_243.jpg" and y[0] == 243
    assert [int(n.split("_")[2].split(".")[0]) for n in names] == y.tolist()
    assert len(set(y.tolist())) == 19              # two jeeps (609)
    assert imagenet_categories()[243] == "bull mastiff"
    # normalised with ImageNet's mean / std: values of natural photos, not [0, 1] pixels
    assert -2.2 < float(x.min()) < -1.5 and 2.0 < float(x.max()) < 2.7


def test_mobilenet_v2_real_weights_on_photos_end_to_end():
    """18 of 20 right (the misses: a jeep taken for a convertible at p = 0.45, a spoonbill for
    a white stork at p = 0.39); a broken preprocessing or weight file gives a handful at most.
    Then profile, masks, compressed forward: the means are substituted at all 35 points."""
    torch.set_num_threads(1)
    x, y, _ = foolbox_imagenet_photos()
    model = imagenet_model("mobilenet_v2")
    with torch.no_grad():
        pred = model(x).argmax(1)
    assert int((pred == y).sum()) == 18
    stats = velcro.profile(model, [x[::2]])
    assert len(stats) == 35 and stats[0].count == 10
    masks = velcro.make_masks(stats, [0.2] * 35)
    assert velcro.compression_ratio(stats, masks).elements == _exact_c(0.2, stats)
    with torch.no_grad(), velcro.compressed(model, stats, masks):
        got = velcro.capture_points(model, x[:2])
    for (name, a), s, m in zip(got, stats, masks):
        assert torch.equal(a[:, m], s.mean.float()[m].expand(2, -1)), name


def _exact_c(t, stats):
    """The exact C of floor(t * numel) elements per point."""
    import math
    return sum(math.floor(t * s.numel + 1e-9) for s in stats) / sum(s.numel for s in stats)


def test_sanity_script_writes_its_report(tmp_path):
    out = tmp_path / "foolbox_sanity.md"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "foolbox_sanity.py"), "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "A sanity check, not a result" in text
    assert "top-1 18/20" in text and "35 activation points" in text
    assert sum(line.startswith("| 0.") for line in text.splitlines()) == 4     # one row per T
