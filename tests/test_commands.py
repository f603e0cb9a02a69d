"""py_ref.commands: the velcro profile/compress/evaluate/export subcommands and their errors."""

import argparse

import numpy as np
import pytest

from py_ref import commands
from py_ref.errors import main_guard


def run(argv):
    p = argparse.ArgumentParser(prog="velcro")
    sub = p.add_subparsers(dest="command", required=True)
    commands.register(sub)
    args = p.parse_args(argv)
    return main_guard(args.func, args)


@pytest.fixture(scope="module")
def stats_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    path = d / "stats.pt"
    assert run(["profile", "--task", "shirts", "--images", "32", "--out", str(path)]) == 0
    return path


def test_profile_compress_evaluate(stats_file, tmp_path, capsys):
    masks = tmp_path / "m.pt"
    assert run(["compress", "--stats", str(stats_file), "--uniform", "0.25", "--out", str(masks)]) == 0
    assert "C = 25.00%" in capsys.readouterr().out
    assert run(["evaluate", "--task", "shirts", "--masks", str(masks), "--valid-images", "40"]) == 0
    assert "compressed" in capsys.readouterr().out
    s = tmp_path / "s.pt"
    assert run(["compress", "--stats", str(stats_file), "--thresholds", "10,20,30,40", "--percent",
                "--structured", "--out", str(s)]) == 0
    assert "S-VELCRO" in capsys.readouterr().out


def test_export_writes_frame(tmp_path, capsys):
    out = tmp_path / "FRAME.npz"
    assert run(["export", "--task", "footwear", "--images", "32", "--out", str(out)]) == 0
    with np.load(out) as a:
        assert set(a.files) == {"ifmap", "weight", "bias", "mask", "means", "mult", "shift"}
        assert a["ifmap"].shape == (16, 64, 64)


@pytest.mark.parametrize("argv,msg", [
    (["compress", "--uniform", "1.5"], "0 <= T < 1"),
    (["compress", "--thresholds", "0.1,0.2"], "2 entries"),
    (["compress", "--thresholds", "0.1,nan,0.1,0.1"], "NaN"),
    (["compress", "--thresholds", "0.1,x,0.1,0.1"], "not a number"),
    (["compress", "--preset", "cats:30%"], "no paper tuple"),
])
def test_compress_errors(stats_file, tmp_path, capsys, argv, msg):
    out = tmp_path / "m.pt"
    assert run(argv[:1] + ["--stats", str(stats_file)] + argv[1:] + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("velcro: error:") and msg in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("argv,msg", [
    (["profile", "--model", "vgg", "--out", "{tmp}/x.pt"], "unknown model"),
    (["profile", "--task", "hats", "--out", "{tmp}/x.pt"], "unknown task"),
    (["profile", "--model", "mobilenet_v2", "--task", "cats", "--out", "{tmp}/x.pt"], "needs --data"),
    (["profile", "--model", "mobilenet_v2", "--task", "cats", "--data", "/nonexistent",
      "--out", "{tmp}/x.pt"], "does not exist"),
    (["compress", "--stats", "{tmp}/missing.pt", "--uniform", "0.1", "--out", "{tmp}/x.pt"], "not found"),
    (["export", "--layer", "conv7", "--out", "{tmp}/x.npz"], "unknown layer"),
    (["export", "--threshold", "1", "--out", "{tmp}/x.npz"], "out of range"),
    (["export", "--out", "/nonexistent/dir/x.npz", "--images", "16"], "does not exist"),
])
def test_bad_input_exit_2_no_output(tmp_path, capsys, argv, msg):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("velcro: error:") and msg in err, err
    assert list(tmp_path.iterdir()) == []


def test_nan_weights_give_one_line_error(tmp_path, capsys):
    import torch
    from py_ref.models import load_fmnist_cnn
    sd = load_fmnist_cnn().state_dict()
    sd["conv2.weight"][0, 0, 0, 0] = float("nan")
    w = tmp_path / "nan.pt"
    torch.save(sd, w)
    out = tmp_path / "s.pt"
    assert run(["profile", "--weights", str(w), "--images", "16", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("velcro: error:") and "non-finite" in err
    assert not out.exists()


def test_imagenet_folder_flow(tmp_path, capsys):
    """A local ImageNet-style folder (class folders named by WordNet id) through profile,
    compress with the paper's preset, and evaluate, on MobileNetV2 with its real weights:
    calibration and validation images are disjoint parts of the folder, split with --seed,
    and each command says on stderr how many images each side has."""
    from PIL import Image
    from py_ref.presets import IMAGENET_TASKS
    rng = np.random.default_rng(7)
    for _, wnid, _ in IMAGENET_TASKS["cats-2"]:
        d = tmp_path / "val" / wnid
        d.mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(d / f"a{i}.png")
    (tmp_path / "val" / "n99999999").mkdir()   # an unrelated class folder is ignored
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "val" / "n99999999" / "b.png")
    st, m = tmp_path / "st.pt", tmp_path / "m.pt"
    base = ["--model", "mobilenet_v2", "--data", str(tmp_path / "val"), "--task", "cats-2"]
    assert run(["profile", *base, "--images", "1", "--seed", "5", "--out", str(st)]) == 0
    cap = capsys.readouterr()
    assert "35 activation points" in cap.out and "profiled 2 images" in cap.out
    assert "(seed 5): 2 calibration images (1 per class), 0 tuning images, 4 validation images" in cap.err
    assert run(["compress", "--stats", str(st), "--preset", "cats:13.5%", "--out", str(m)]) == 0
    assert "C = 13.5" in capsys.readouterr().out
    assert run(["evaluate", *base, "--masks", str(m)]) == 0
    cap = capsys.readouterr()
    assert "4 validation images" in cap.out and "(seed 5): 2 calibration images" in cap.err
    assert "task classes" in cap.out and "paired (top-1, task classes)" in cap.out
    assert run(["evaluate", *base, "--masks", str(m), "--valid-images", "3"]) == 0
    assert "3 validation images" in capsys.readouterr().out
    assert run(["evaluate", *base, "--masks", str(m), "--seed", "6"]) == 2
    one_error_line(capsys, "--seed 6 differs from the 5", "overlap")
    assert run(["evaluate", *base, "--masks", str(m), "--valid-images", "5"]) == 2
    one_error_line(capsys, "only 4 validation images are left", "5 requested")
    assert run(["evaluate", *base, "--images", "1", "--seed", "5"]) == 0     # uncompressed, same split
    assert "4 validation images" in capsys.readouterr().out


def test_imagenet_split_is_disjoint_and_seeded(tmp_path):
    from py_ref import data
    from py_ref.presets import IMAGENET_TASKS
    root = _imagenet_folder(tmp_path / "f", per_class=5)
    classes = IMAGENET_TASKS["cats-2"]
    files = {str(p) for p in root.rglob("*.png")}
    sp = data.imagenet_split(root, classes, calib_per_class=2, tune_per_class=1, seed=3)
    parts = [{p for p, _ in ds.samples} for ds in (sp.calib, sp.tune, sp.valid)]
    assert [len(x) for x in parts] == [4, 2, 4]
    assert parts[0] | parts[1] | parts[2] == files
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    for ds in (sp.calib, sp.tune, sp.valid):       # per class: labels are the 1000-class indices
        assert sorted(set(ds.targets)) == sorted(i for i, _, _ in classes)
    again = data.imagenet_split(root, classes, calib_per_class=2, tune_per_class=1, seed=3)
    assert again.calib.samples == sp.calib.samples and again.valid.samples == sp.valid.samples
    others = [data.imagenet_split(root, classes, calib_per_class=2, seed=s).calib.samples for s in range(4, 9)]
    assert any(o != sp.calib.samples for o in others)
    # a larger calibration count keeps the smaller one's images (one permutation per class)
    small = data.imagenet_split(root, classes, calib_per_class=1, seed=3)
    assert {p for p, _ in small.calib.samples} <= parts[0]
    sub = data.imagenet_split(root, classes, calib_per_class=2, valid_images=3, seed=3)
    assert len(sub.valid) == 3 and {p for p, _ in sub.valid.samples} <= files - parts[0]
    with pytest.raises(data.InputError, match="no validation images left"):
        data.imagenet_split(root, classes, calib_per_class=5)
    with pytest.raises(data.InputError, match="fewer than the 4 calibration"):
        data.imagenet_split(root, classes, calib_per_class=4, tune_per_class=2)
    with pytest.raises(data.InputError, match="only 6 validation images are left"):
        data.imagenet_split(root, classes, calib_per_class=2, valid_images=7)


def test_evaluate_shows_task_metrics_and_paired_tests(masks_file, capsys):
    assert run(["evaluate", "--masks", str(masks_file), "--valid-images", "60", "--seed", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("task shirts: 60 validation images, top-1 original")
    assert "task classes: 0, 6" in out[1]
    assert out[2].split()[0] == "uncompressed" and out[3].split()[0] == "compressed"
    # the table's columns: apart, and every value's last character under its header's
    head = out[1]
    assert "classes   top-1, task classes   out-of-task" in head, head
    ends = [head.index(h) + len(h) for h in ("top-1, all classes", "top-1, task classes",
                                             "out-of-task predictions")]
    for row in out[2:4]:
        assert [i + 1 for i, ch in enumerate(row) if ch == "%"] == ends, (head, row)
    assert out[4].startswith("  paired (top-1, task classes): ") and "McNemar p = " in out[4]
    assert out[5].startswith("  paired (top-1, all classes): ")
    assert "not significantly worse" in out[4] or "significantly" in out[4]


def test_compress_search(stats_file, tmp_path, capsys):
    """--search picks a tuple on tuning images disjoint from the 32 calibration images and
    records it; the masks then evaluate like any other."""
    import torch
    from py_ref import data
    m = tmp_path / "s.pt"
    assert run(["compress", "--stats", str(stats_file), "--search", "--tune-images", "40",
                "--max-evals", "2", "--out", str(m)]) == 0
    cap = capsys.readouterr()
    assert "search on 40 tuning images (task top-1" in cap.out and "-> " + str(m) in cap.out
    assert "disjoint from the 32 calibration images (seed 0)" in cap.err
    rec = torch.load(m, weights_only=False)
    assert rec["search"]["images"] == 40 and len(rec["thresholds"]) == 4
    assert rec["thresholds"] == rec["search"]["thresholds"]
    xc, _ = data.calibration("shirts", 32, 0)
    xt, _ = data.tuning("shirts", 40, 0, after=32)
    flat = {bytes(v.numpy().tobytes()) for v in xc}
    assert not any(bytes(v.numpy().tobytes()) in flat for v in xt)
    assert run(["compress", "--stats", str(stats_file), "--search", "--tune-images", "99999",
                "--out", str(tmp_path / "x.pt")]) == 2
    one_error_line(capsys, "--tune-images 99999", "unused train images")


# ---------------------------------------------------------------------------- the CLI contract

def one_error_line(capsys, *needles):
    """stderr ends with exactly one line `velcro: error: ...` holding every needle, after
    progress lines only (``stage: ..., 1.2 s``); stdout is empty."""
    import re
    cap = capsys.readouterr()
    lines = cap.err.splitlines()
    assert lines and lines[-1].startswith("velcro: error: "), cap.err
    assert all(re.fullmatch(r"[a-z]+: .*, \d+\.\d s", ln) for ln in lines[:-1]), cap.err
    assert "Traceback" not in cap.err and cap.out == ""
    for n in needles:
        assert str(n) in lines[-1], (n, lines[-1])
    return lines[-1]


@pytest.fixture(scope="module")
def masks_file(stats_file):
    path = stats_file.parent / "masks.pt"
    assert run(["compress", "--stats", str(stats_file), "--uniform", "0.2", "--out", str(path)]) == 0
    return path


def _corrupt(kind, good, path):
    """A broken copy of ``good`` at ``path``: truncated, garbage, empty or a foreign pickle."""
    import pickle
    data = good.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[:len(data) // 2])
    elif kind == "garbage":
        path.write_bytes(b"this is not a torch file\n" * 10)
    elif kind == "empty":
        path.write_bytes(b"")
    else:   # a pickle of an arbitrary object: weights_only refuses it
        path.write_bytes(pickle.dumps({"points": argparse.Namespace(a=1)}))
    return path


KINDS = ["truncated", "garbage", "empty", "pickle"]


@pytest.mark.parametrize("kind", KINDS)
def test_corrupt_stats_file(stats_file, tmp_path, capsys, kind):
    bad = _corrupt(kind, stats_file, tmp_path / "bad.pt")
    out = tmp_path / "m.pt"
    assert run(["compress", "--stats", str(bad), "--uniform", "0.1", "--out", str(out)]) == 2
    one_error_line(capsys, f"cannot read {bad}", "`velcro profile` output", "truncated or corrupt")
    assert not out.exists()


@pytest.mark.parametrize("kind", KINDS)
def test_corrupt_masks_file(masks_file, tmp_path, capsys, kind):
    bad = _corrupt(kind, masks_file, tmp_path / "bad.pt")
    assert run(["evaluate", "--masks", str(bad), "--valid-images", "8"]) == 2
    one_error_line(capsys, f"cannot read {bad}", "`velcro compress` output")


@pytest.mark.parametrize("kind", KINDS)
def test_corrupt_weights_file(tmp_path, capsys, kind):
    from py_ref.models import FMNIST_WEIGHTS
    bad = _corrupt(kind, FMNIST_WEIGHTS, tmp_path / "w.pt")
    out = tmp_path / "s.pt"
    assert run(["profile", "--weights", str(bad), "--images", "8", "--out", str(out)]) == 2
    one_error_line(capsys, f"cannot read {bad}", "state_dict")
    assert not out.exists()


def test_weights_that_do_not_fit(stats_file, tmp_path, capsys):
    import torch
    from py_ref.models import load_fmnist_cnn
    out = tmp_path / "s.pt"
    assert run(["profile", "--weights", str(stats_file), "--images", "8", "--out", str(out)]) == 2
    one_error_line(capsys, str(stats_file), "not a state_dict")
    sd = load_fmnist_cnn().state_dict()
    del sd["conv3.bias"]
    sd["conv2.weight"] = sd["conv2.weight"][:8]
    torch.save(sd, tmp_path / "w.pt")
    assert run(["evaluate", "--weights", str(tmp_path / "w.pt"), "--valid-images", "8"]) == 2
    one_error_line(capsys, str(tmp_path / "w.pt"), "missing: conv3.bias", "wrong shape: conv2.weight")
    assert not out.exists()


def test_files_without_a_record_are_refused(stats_file, masks_file, tmp_path, capsys):
    """Files of the old layout (no format record, a relative 'stats' path) and files of the
    other kind are refused with a message, not read as something they are not."""
    import torch
    blob = torch.load(stats_file, weights_only=True)
    old = {k: v for k, v in blob.items() if k not in ("format", "weights_sha256")}
    torch.save(old, tmp_path / "old_stats.pt")
    assert run(["compress", "--stats", str(tmp_path / "old_stats.pt"), "--uniform", "0.1",
                "--out", str(tmp_path / "m.pt")]) == 2
    one_error_line(capsys, "old_stats.pt", "velcro-stats/1", "older version")
    m = torch.load(masks_file, weights_only=True)
    torch.save({"stats": "stats.pt", "thresholds": m["thresholds"], "structured": False,
                "masks": m["masks"]}, tmp_path / "old_masks.pt")
    assert run(["evaluate", "--masks", str(tmp_path / "old_masks.pt")]) == 2
    one_error_line(capsys, "old_masks.pt", "velcro-masks/1", "older version")
    assert run(["evaluate", "--masks", str(stats_file)]) == 2          # stats given as masks
    one_error_line(capsys, str(stats_file), "not a `velcro compress` output")
    assert run(["compress", "--stats", str(masks_file), "--uniform", "0.1",
                "--out", str(tmp_path / "m.pt")]) == 2                  # masks given as stats
    one_error_line(capsys, str(masks_file), "not a `velcro profile` output")
    broken = dict(blob, points=blob["points"][:1] + [{"name": "x"}])
    torch.save(broken, tmp_path / "broken.pt")
    assert run(["compress", "--stats", str(tmp_path / "broken.pt"), "--uniform", "0.1",
                "--out", str(tmp_path / "m.pt")]) == 2
    one_error_line(capsys, "broken.pt", "activation point 1", "corrupt")
    assert not (tmp_path / "m.pt").exists()


def test_masks_record_the_statistics_by_content(stats_file, masks_file, tmp_path, capsys, monkeypatch):
    """The masks hold model, task, weights and statistics digests and the means: evaluate
    needs no other file (none is looked up by a path), from any folder."""
    import shutil

    import torch
    rec = torch.load(masks_file, weights_only=True)
    assert rec["format"] == "velcro-masks/1"
    src = rec["source"]
    assert (src["model"], src["task"]) == ("fmnist", "shirts")
    assert len(src["stats_sha256"]) == 64 and len(src["weights_sha256"]) == 64
    assert "stats" not in rec and str(stats_file) not in repr(rec)
    moved = tmp_path / "elsewhere" / "m.pt"
    moved.parent.mkdir()
    shutil.copy(masks_file, moved)
    monkeypatch.chdir(tmp_path)
    assert run(["evaluate", "--masks", str(moved), "--valid-images", "16"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("task shirts: 16 validation images") and "at C = 20.00%" in out
    # the same statistics under another name are accepted, by content
    copy = tmp_path / "copy.pt"
    shutil.copy(stats_file, copy)
    assert run(["evaluate", "--masks", str(moved), "--stats", str(copy), "--valid-images", "16"]) == 0
    assert capsys.readouterr().out == out


def test_evaluate_refuses_masks_of_another_model_task_weights_or_stats(stats_file, masks_file,
                                                                       tmp_path, capsys):
    import torch
    from py_ref.models import load_fmnist_cnn
    m = str(masks_file)
    assert run(["evaluate", "--masks", m, "--task", "tops", "--valid-images", "8"]) == 2
    one_error_line(capsys, m, "task shirts", "--task tops")
    assert run(["evaluate", "--masks", m, "--model", "mobilenet_v2", "--data", str(tmp_path)]) == 2
    one_error_line(capsys, m, "model fmnist", "--model mobilenet_v2")
    # statistics of another task
    other = tmp_path / "other.pt"
    assert run(["profile", "--task", "other", "--images", "8", "--out", str(other)]) == 0
    capsys.readouterr()
    assert run(["evaluate", "--masks", m, "--stats", str(other), "--valid-images", "8"]) == 2
    one_error_line(capsys, str(other), "task other", "task shirts")
    # statistics of the same model and task, but other images: a different digest
    same_task = tmp_path / "shirts16.pt"
    assert run(["profile", "--task", "shirts", "--images", "16", "--out", str(same_task)]) == 0
    capsys.readouterr()
    assert run(["evaluate", "--masks", m, "--stats", str(same_task), "--valid-images", "8"]) == 2
    one_error_line(capsys, str(same_task), "is not the statistics file", m)
    # other weights than the profiled ones
    sd = load_fmnist_cnn().state_dict()
    sd["fc.bias"] += 0.01
    torch.save(sd, tmp_path / "w.pt")
    assert run(["evaluate", "--masks", m, "--weights", str(tmp_path / "w.pt"), "--valid-images", "8"]) == 2
    one_error_line(capsys, "w.pt", "not those", m)


@pytest.mark.parametrize("argv,msg", [
    (["profile", "--images", "-3"], "--images must be at least 1, not -3"),
    (["profile", "--images", "0"], "--images must be at least 1, not 0"),
    (["profile", "--batch-size", "0"], "--batch-size must be at least 1, not 0"),
    (["profile", "--threads", "0"], "--threads must be at least 1, not 0"),
    (["profile", "--task", "shirts", "--images", "5000"], "only 1993 images"),
    (["evaluate", "--valid-images", "-3"], "--valid-images must be at least 1, not -3"),
    (["evaluate", "--batch-size", "0"], "--batch-size must be at least 1, not 0"),
    (["evaluate", "--threads", "0"], "--threads must be at least 1, not 0"),
    (["evaluate", "--task", "shirts", "--valid-images", "2001"], "only 2000 images"),
    (["export", "--images", "0"], "--images must be at least 1, not 0"),
    (["export", "--batch-size", "-1"], "--batch-size must be at least 1, not -1"),
    (["export", "--threads", "0"], "--threads must be at least 1, not 0"),
    (["export", "--images", "3001"], "only 2972 images"),
])
def test_counts_are_refused_not_clamped(tmp_path, capsys, monkeypatch, argv, msg):
    from py_ref import velcro
    monkeypatch.setattr(velcro, "profile", _no_long_work)
    monkeypatch.setattr(velcro, "evaluate", _no_long_work)
    if argv[0] != "evaluate":
        argv = argv + ["--out", str(tmp_path / ("x.npz" if argv[0] == "export" else "x.pt"))]
    assert run(argv) == 2
    one_error_line(capsys, msg)
    assert list(tmp_path.iterdir()) == []


def test_library_refuses_counts():
    from py_ref import data
    from py_ref.errors import InputError
    with pytest.raises(InputError, match="only 1993 images"):
        data.calibration_validation("shirts", n_calib=1994)
    with pytest.raises(InputError, match="validation images of task 'shirts': only 2000"):
        data.calibration_validation("shirts", n_calib=8, n_valid=2001)
    with pytest.raises(InputError, match="at least 1, not 0"):
        data.calibration("shirts", 0)
    with pytest.raises(InputError, match="at least 1, not 0"):
        data.batches(np.zeros(4), None, 0)
    (xc, _), (xv, _) = data.calibration_validation("shirts", n_calib=1993, n_valid=2000)
    assert len(xc) == 1993 and len(xv) == 2000


def _no_long_work(*a, **k):
    raise AssertionError("the long work started before the input was checked")


@pytest.mark.parametrize("argv,msg", [
    (["export", "--data", "{tmp}"], "--data is for the ImageNet models"),
    (["compress", "--stats", "{stats}", "--uniform", "0.1", "--percent"], "--percent applies to --thresholds only"),
    (["compress", "--stats", "{stats}", "--preset", "cats:10%", "--percent"], "--percent applies to --thresholds only"),
    (["evaluate", "--stats", "{stats}"], "--stats needs --masks"),
    (["evaluate", "--seed", "3"], "--seed only picks the --valid-images subset"),
    (["evaluate", "--images", "5"], "--images applies to ImageNet folders"),
    (["compress", "--stats", "{stats}", "--uniform", "0.1", "--tune-images", "5"], "--tune-images applies to --search only"),
    (["compress", "--stats", "{stats}", "--uniform", "0.1", "--search"], "give exactly one of"),
    (["compress", "--stats", "{stats}", "--search", "--tune-images", "0"], "--tune-images must be at least 1"),
])
def test_ignored_options_are_refused(stats_file, tmp_path, capsys, monkeypatch, argv, msg):
    from py_ref import velcro
    monkeypatch.setattr(velcro, "profile", _no_long_work)
    monkeypatch.setattr(velcro, "evaluate", _no_long_work)
    work = tmp_path / "work"
    work.mkdir()
    argv = [a.replace("{tmp}", str(work)).replace("{stats}", str(stats_file)) for a in argv]
    if argv[0] != "evaluate":
        argv += ["--out", str(tmp_path / ("x.npz" if argv[0] == "export" else "x.pt"))]
    assert run(argv) == 2
    one_error_line(capsys, msg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


@pytest.mark.parametrize("argv,msg", [
    (["profile", "--out", "/nonexistent/dir/s.pt"], "output folder /nonexistent/dir does not exist"),
    (["profile", "--out", "{tmp}"], "is a folder"),
    (["profile", "--weights", "{w}", "--out", "{w}"], "is also an input file"),
    (["profile", "--out", "{default_w}"], "is also an input file"),
    (["export", "--out", "/nonexistent/dir/x.npz"], "output folder /nonexistent/dir does not exist"),
    (["export", "--out", "{tmp}/w.pt/x.npz"], "does not exist"),
    (["compress", "--stats", "{stats}", "--uniform", "0.1", "--out", "{stats}"], "is also an input file"),
    (["compress", "--stats", "{stats}", "--uniform", "0.1", "--out", "/nonexistent/m.pt"], "does not exist"),
])
def test_outputs_checked_before_the_long_work(stats_file, tmp_path, capsys, monkeypatch, argv, msg):
    import shutil

    from py_ref import velcro
    from py_ref.models import FMNIST_WEIGHTS
    monkeypatch.setattr(velcro, "profile", _no_long_work)
    w = tmp_path / "w.pt"
    shutil.copy(FMNIST_WEIGHTS, w)
    before = stats_file.read_bytes(), FMNIST_WEIGHTS.read_bytes()
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{w}", str(w)).replace("{stats}", str(stats_file))
            .replace("{default_w}", str(FMNIST_WEIGHTS)) for a in argv]
    assert run(argv) == 2
    one_error_line(capsys, msg)
    assert (stats_file.read_bytes(), FMNIST_WEIGHTS.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pt"]


def test_progress_lines_without_a_terminal(stats_file, masks_file, tmp_path, capsys):
    """No tty (capsys): stage lines with the elapsed time on stderr; stdout: results only."""
    import re
    assert run(["evaluate", "--masks", str(masks_file), "--valid-images", "40", "--batch-size", "8"]) == 0
    cap = capsys.readouterr()
    assert cap.out.count("\n") == 6 and cap.out.startswith("task shirts: 40 validation images")
    lines = cap.err.splitlines()
    assert lines[0].startswith("evaluate: fmnist, task shirts: 40 validation images in 5 batches")
    assert [ln.split(",")[0] for ln in lines[1:]] == [f"evaluate: {i}/5 batches done" for i in range(1, 6)]
    assert all(re.search(r", \d+\.\d s$", ln) for ln in lines)
    assert run(["profile", "--task", "shirts", "--images", "24", "--batch-size", "8",
                "--out", str(tmp_path / "s.pt")]) == 0
    cap = capsys.readouterr()
    assert cap.out.startswith("profiled 24 images") and "batches" not in cap.out
    assert cap.err.startswith("profile: calibration: 24 images of task shirts") and "(disjoint)" in cap.err
    assert cap.err.splitlines()[-1].startswith("profile: 3/3 batches done, ")


def test_every_option_has_help():
    p = argparse.ArgumentParser(prog="velcro")
    sub = p.add_subparsers(dest="command", required=True)
    commands.register(sub)
    for name, sp in sub.choices.items():
        for action in sp._actions:
            if action.help == argparse.SUPPRESS:          # export --data: refused with a message
                assert name == "export" and action.dest == "data"
                continue
            assert action.help and action.help.strip(), (name, action.option_strings)


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        run(["profile", "--images", "x", "--out", "s.pt"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("velcro: error: profile: argument --images")


def _imagenet_folder(root, per_class=1, broken=False):
    from PIL import Image
    from py_ref.presets import IMAGENET_TASKS
    rng = np.random.default_rng(3)
    for _, wnid, _ in IMAGENET_TASKS["cats-2"]:
        d = root / wnid
        d.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(d / f"{i}.png")
    if broken:
        (root / IMAGENET_TASKS["cats-2"][0][1] / "zz_broken.png").write_bytes(b"not a png")
    return root


def test_imagenet_folder_errors(tmp_path, capsys):
    base = ["--model", "mobilenet_v2", "--task", "cats-2"]
    out = tmp_path / "s.pt"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(["profile", *base, "--data", str(empty), "--images", "1", "--out", str(out)]) == 2
    line = one_error_line(capsys, f"ImageNet folder {empty}", "class folder")
    assert "None" not in line
    from py_ref import data
    from py_ref.presets import IMAGENET_TASKS
    bad = _imagenet_folder(tmp_path / "bad", per_class=2, broken=True)
    seed = next(s for s in range(20) if any(p.endswith("zz_broken.png") for p, _ in data.imagenet_split(
        bad, IMAGENET_TASKS["cats-2"], calib_per_class=1, seed=s).valid.samples))
    assert run(["evaluate", *base, "--data", str(bad), "--images", "1", "--seed", str(seed)]) == 2
    one_error_line(capsys, "cannot read image", str(bad), "zz_broken.png")
    good = _imagenet_folder(tmp_path / "good")
    assert run(["profile", *base, "--data", str(good), "--images", "2", "--out", str(out)]) == 2
    one_error_line(capsys, "has 1 image, fewer than the 2 calibration per class requested")
    assert run(["profile", *base, "--data", str(good), "--images", "1", "--out", str(out)]) == 2
    one_error_line(capsys, "no validation images left", "every image of the task is used for calibration")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert run(["profile", *base, "--data", str(a_file), "--images", "1", "--out", str(out)]) == 2
    one_error_line(capsys, str(a_file), "not a folder")
    assert not out.exists()


# (layer, ifmap shape, weight shape): every conv layer of the committed CNN (issue 19)
EXPORT_SHAPES = [("conv1", (1, 64, 64), (16, 1, 3, 3)), ("conv2", (16, 64, 64), (16, 16, 3, 3)),
                 ("conv3", (16, 64, 64), (16, 16, 3, 3)), ("conv4", (16, 32, 32), (32, 16, 3, 3)),
                 ("conv5", (32, 16, 16), (32, 32, 3, 3))]


@pytest.mark.parametrize("layer, ifmap, weight", EXPORT_SHAPES)
def test_export_with_masks_file(masks_file, tmp_path, capsys, layer, ifmap, weight):
    """`export --masks`: the layer's mask is the one `compress` chose (the skipped first point:
    dense), the means its quantised means, the scales from the masks' calibration images."""
    import torch
    from py_ref import export
    out = tmp_path / "FRAME.npz"
    assert run(["export", "--layer", layer, "--masks", str(masks_file), "--out", str(out)]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert f"exported {layer} of the fmnist CNN (shirts, " in line
    blob = torch.load(masks_file, weights_only=True)
    point = export.LAYERS[layer][1]
    found = [i for i, p in enumerate(blob["points"]) if p["index"] == point]
    with np.load(out) as a:
        assert a["ifmap"].shape == ifmap and a["weight"].shape == weight
        if found:
            assert "VELCRO T = 0.2" in line
            np.testing.assert_array_equal(a["mask"], blob["masks"][found[0]].numpy())
            assert 0.19 < a["mask"].mean() < 0.21
        else:
            assert "dense" in line and not a["mask"].any()


@pytest.mark.parametrize("extra, msg", [
    (["--threshold", "0.2"], "give --masks or --threshold, not both"),
    (["--images", "64"], "--images 64 differs from the 32"),
    (["--seed", "3"], "--seed 3 differs from the 0"),
    (["--task", "footwear"], "was made for task shirts, not --task footwear"),
    (["--layer", "fc"], "unknown layer 'fc': it is a Linear, not a Conv2d"),
])
def test_export_masks_refusals(masks_file, tmp_path, capsys, extra, msg):
    out = tmp_path / "FRAME.npz"
    assert run(["export", "--masks", str(masks_file), "--out", str(out)] + extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("velcro: error:") and msg in err and err.count("\n") == 1, err
    assert not out.exists()
