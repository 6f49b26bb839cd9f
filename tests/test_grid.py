"""run_grid on all the hardware a user has: concurrent runs, one per device (CUDA_VISIBLE_DEVICES), and jobs through
submitit (its LocalExecutor). A stand-in training notebook records what each run saw and when it ran, so the
scheduling itself is checked in seconds (the real 10_train is exercised by test_paper / test_training)."""
import json

import nbformat
import pytest

from ssrs_nb.paper import Run, run_grid

FAKE_TRAIN = '''import json, os, time
from pathlib import Path
t0 = time.time(); time.sleep(sleep)
if fail: raise RuntimeError("this run fails on purpose")
Path(out_dir).mkdir(parents=True, exist_ok=True)
cfg = dict(dataset=dataset, backbone=backbone, use_obj=use_obj, use_bdy=use_bdy, seed=seed)
(Path(out_dir) / "metrics.json").write_text(json.dumps({"status": "finished", "config": cfg,
    "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "t0": t0, "t1": time.time()}))
'''


@pytest.fixture
def fake_nb(tmp_path):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("out_dir = None\nsleep = 2.0\nfail = False")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(FAKE_TRAIN)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3", "language": "python"}
    path = tmp_path / "fake_train.ipynb"
    nbformat.write(nb, path)
    return path


RUNS = [Run("vaihingen", "resnet18", v, 0) for v in ("seg", "seg+obj", "seg+bdy", "seg+obj+bdy")]


def _records(out):
    return {r.key: json.loads((r.folder(out) / "metrics.json").read_text()) for r in RUNS}


def test_one_run_per_device_at_a_time(fake_nb, tmp_path):
    out = tmp_path / "grid"
    st = run_grid(RUNS, out, train_nb=fake_nb, cwd=tmp_path, devices="0,1", progress=False)
    assert [s for _, s in st] == ["done"] * 4
    recs = _records(out)
    assert {r["cuda_visible_devices"] for r in recs.values()} == {"0", "1"}
    for dev in ("0", "1"):       # never two runs on one device at once
        iv = sorted((r["t0"], r["t1"]) for r in recs.values() if r["cuda_visible_devices"] == dev)
        assert all(a[1] <= b[0] for a, b in zip(iv, iv[1:])), iv
    iv = sorted((r["t0"], r["t1"]) for r in recs.values())
    events = sorted([(a, 1) for a, _ in iv] + [(b, -1) for _, b in iv])
    running = [sum(e for _, e in events[:k + 1]) for k in range(len(events))]
    assert max(running) == 2, "the two devices were not used at the same time"
    assert all((r.folder(out) / "10_train.ipynb").is_file() for r in RUNS)
    # a second call skips every finished run and starts nothing
    again = run_grid(RUNS, out, train_nb=fake_nb, cwd=tmp_path, devices="0,1", progress=False)
    assert [s for _, s in again] == ["skipped"] * 4 and _records(out) == recs


def test_a_failed_run_is_reported_and_the_others_finish(fake_nb, tmp_path):
    out = tmp_path / "grid"
    runs = RUNS[:2]
    st = dict((r.key, s) for r, s in run_grid(runs, out, common={"sleep": 0.1}, train_nb=fake_nb, cwd=tmp_path,
                                               devices="0,1", progress=False))
    assert set(st.values()) == {"done"}
    bad = Run("vaihingen", "resnet18", "seg", 1)
    (s,) = [s for _, s in run_grid([bad], out, common={"sleep": 0.1, "fail": True}, train_nb=fake_nb, cwd=tmp_path,
                                   devices="0,1", progress=False)]
    assert s.startswith("failed: papermill exited with 1") and "this run fails on purpose" in s


def test_submitit_local_executor(fake_nb, tmp_path):
    submitit = pytest.importorskip("submitit")
    ex = submitit.LocalExecutor(folder=tmp_path / "jobs")
    ex.update_parameters(timeout_min=5)
    out = tmp_path / "grid"
    st = run_grid(RUNS[:2], out, common={"sleep": 0.1}, train_nb=fake_nb, cwd=tmp_path, executor=ex, progress=False)
    assert [s for _, s in st] == ["done", "done"]
    assert all(json.loads((r.folder(out) / "metrics.json").read_text())["status"] == "finished" for r in RUNS[:2])
    assert [s for _, s in run_grid(RUNS[:2], out, train_nb=fake_nb, cwd=tmp_path, executor=ex, progress=False)] == \
        ["skipped", "skipped"]
