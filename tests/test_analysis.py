"""py_ref.analysis: the analyses behind scripts/velcro_analysis.py, on small synthetic inputs
(a tiny CNN, a few Fashion-MNIST images, hand-made rows)."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from py_ref import analysis, data, velcro
from py_ref.significance import ALPHA
from py_ref.velcro import PointStats


def tiny_cnn():
    """Two conv + ReLU points (the first is skipped, as Task profiles), ten classes."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)).eval()


@pytest.fixture(scope="module")
def task():
    return analysis.Task("shirts", tiny_cnn(), n_calib=16, n_tune=8, n_valid=20)


def test_task_holds_disjoint_image_sets_and_its_baseline(task):
    assert task.classes == data.task_classes("shirts") == [0, 6]
    assert len(task.calib) == 16 and len(task.tune[0]) == 8 and len(task.valid[0]) == 20
    assert len(task.stats) == 1 and task.stats[0].count == 16      # first point skipped
    assert task.stats[0].zeros is not None                          # counted for Table 4
    assert task.base["images"] == 20 and "top1_compressed" not in task.base
    assert task.network_macs == velcro.conv_macs(task.model, task.calib[:1])


def test_point_row_without_compression_is_the_baseline(task):
    masks = velcro.make_masks(task.stats, [0.0])
    row = analysis.point_row(task, masks, {"T": 0.0})
    assert row["C"] == 0 and row["T"] == 0.0 and "zero_values" not in row
    assert (row["top1"], row["top1_task"], row["out_of_task"]) == (
        task.base["top1"], task.base["top1_task"], task.base["out_of_task"])
    assert row["test_task"]["diff"] == 0 and row["test_all"]["diff"] == 0
    assert row["test_task"]["lost"] == row["test_task"]["gained"] == 0


def test_point_row_measures_the_compressed_model_on_the_held_out_images(task):
    masks = velcro.make_masks(task.stats, [0.5])
    row = analysis.point_row(task, masks)
    c = velcro.compression_ratio(task.stats, masks, network_macs=task.network_macs)
    assert (row["C"], row["C_macs"], row["C_network"]) == (c.elements, c.macs, c.network_macs)
    assert row["C"] == pytest.approx(0.5, abs=1e-3)
    assert row["zero_values"] == velcro.zero_share(task.stats, masks)
    assert row["zero_means"] == velcro.zero_mean_share(task.stats, masks)
    r = task.evaluate(masks)
    assert row["top1_task"] == r["top1_task_compressed"] and row["top1"] == r["top1_compressed"]
    assert row["_correct_task"].tolist() == r["correct_task_compressed"].tolist()


def test_sweep_gives_one_row_per_threshold(task):
    sw = analysis.sweep(task, [0.0, 0.25], [0.0, 0.5])
    assert [p["T"] for p in sw["velcro"]] == [0.0, 0.25] and [p["T"] for p in sw["svelcro"]] == [0.0, 0.5]
    assert sw["velcro"][1]["C"] == pytest.approx(0.25, abs=1e-3)
    assert sw["svelcro"][1]["C"] == pytest.approx(0.5)              # two of the four channels


def test_strip_drops_private_keys_at_every_depth():
    obj = {"a": 1, "_v": [1], "b": [{"c": 2, "_d": 3}, 4], "e": {"_f": 0, "g": {"_h": 1}}}
    assert analysis.strip(obj) == {"a": 1, "b": [{"c": 2}, 4], "e": {"g": {}}}


def test_variance_rows_compare_each_task_with_all():
    def stats(values):
        var = torch.tensor(values, dtype=torch.float64)
        return [PointStats("relu#1", 1, torch.zeros_like(var), var * 4, 4)]    # var = m2 / 4
    tasks = {"all": SimpleNamespace(stats=stats([0.0, 1.0, 2.0, 3.0])),
             "tops": SimpleNamespace(stats=stats([0.0, 0.0, 0.5, 4.0]))}
    rows = analysis.variance_rows(tasks)
    # the "all" median of the comparison is torch's (the lower middle value, 1.0), the reported
    # median numpy's (1.5): three of four "tops" elements lie below 1.0, one of "all"
    assert rows == [
        {"point": "relu#1", "task": "all", "median_var": 1.5, "share_below_all_median": 0.25,
         "share_var_zero": 0.25},
        {"point": "relu#1", "task": "tops", "median_var": 0.25, "share_below_all_median": 0.75,
         "share_var_zero": 0.5}]


def _paired(other, base):
    return {"other": other, "base": base}


def test_paper_style_takes_the_largest_c_not_below_the_baseline():
    points = [{"C": 0.1, "test_all": _paired(0.80, 0.80)}, {"C": 0.2, "test_all": _paired(0.81, 0.80)},
              {"C": 0.3, "test_all": _paired(0.79, 0.80)}, {"C": 0.4, "test_all": _paired(0.80, 0.80)},
              {"C": 0.5, "test_all": _paired(0.70, 0.80)}]
    assert analysis.paper_style(points)["C"] == 0.4


def _study(*rows):
    return {"rows": [{"images": n, "jaccard": j, "test_vs_largest": {"p": p}} for n, j, p in rows]}


def test_recommend_takes_the_smallest_size_that_agrees_with_the_largest():
    study = _study((16, 0.95, ALPHA / 2), (32, 0.85, 0.9), (64, 0.92, ALPHA), (128, 1.0, 1.0))
    assert analysis.recommend(study) == 64
    assert analysis.recommend(study, jaccard_min=0.8) == 32


def test_recommend_falls_back_to_the_largest_size():
    assert analysis.recommend(_study((16, 0.5, 1.0), (32, 0.6, 1.0), (64, 0.7, 1.0))) == 64


def test_calibration_study_compares_every_size_with_the_largest():
    study = analysis.calibration_study(tiny_cnn(), "footwear", [16, 8, 32], 0.3, 20)
    rows = study["rows"]
    assert study["task"] == "footwear" and study["T"] == 0.3
    assert [r["images"] for r in rows] == [8, 16, 32]
    largest = rows[-1]
    assert largest["jaccard"] == 1.0 and largest["agreement"] == 1.0
    assert largest["test_vs_largest"]["diff"] == 0
    assert study["base_top1_task"] == largest["test_vs_uncompressed"]["base"]
    for r in rows:
        assert 0 <= r["jaccard"] <= 1 and 0 <= r["agreement"] <= 1
        assert r["ci"][0] <= r["top1_task"] <= r["ci"][1]
    assert analysis.recommend(study) in (8, 16, 32)
