"""End to end: the tables notebook (smoke preset) through papermill, the tables it writes checked against the
metrics.json files of its runs, its figures opened, and a second run that must reuse every finished run."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ssrs_nb.core import get_preset, imread

ROOT = Path(__file__).resolve().parent.parent


def _papermill(out_nb, out_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("IN_TEST", None)
    cmd = [sys.executable, "-m", "papermill", "20_paper_tables.ipynb", str(out_nb), "-p", "preset", "smoke",
           "-p", "out_dir", str(out_dir), "-p", "seeds", "2"]
    r = subprocess.run(cmd, cwd=ROOT / "nbs", env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    # progress reaches the terminal without --log-output: a line per grid run and per epoch of each 10_train run
    assert re.search(r"^\[\d+/\d+\] vaihingen/resnet18/seg/seed0: (done|skipped)", r.stderr, re.M), r.stderr[-2000:]
    if "done" in r.stderr: assert re.search(r"^epoch 1/\d+ iter \d+ lr .* loss .* it/s, .* min left$", r.stderr, re.M)
    return json.loads(Path(out_nb).read_text())


def _mean_std(v):
    v = [x for x in v if not np.isnan(x)]
    if not v: return "–"
    return f"{np.mean(v):.2f}" if len(v) == 1 else f"{np.mean(v):.2f}±{np.std(v, ddof=1):.2f}"


def _printed(nb):
    return "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    d = tmp_path_factory.mktemp("paper")
    nb = _papermill(d / "run1.ipynb", d / "out")
    return d, nb


def test_tables_match_metrics_json(grid):
    d, _ = grid
    out = d / "out"
    pre = get_preset("vaihingen")
    t1 = pd.read_csv(out / "table1_vaihingen.csv")
    t3 = pd.read_csv(out / "table3_vaihingen_ablation.csv")
    for variant, method in (("seg", "baseline"), ("seg+obj+bdy", "Ours")):
        ms = [json.loads(p.read_text()) for p in sorted((out / "vaihingen/resnet18" / variant).glob("seed*/metrics.json"))]
        assert len(ms) == 2 and all(m["status"] == "finished" for m in ms)
        f1 = np.array([m["final"]["scores"]["f1"] for m in ms]) * 100
        iou = np.array([m["final"]["scores"]["iou"] for m in ms]) * 100
        ev = list(pre.eval_classes)
        row = t1[(t1.Method == method) & t1.source.str.startswith("ssrs-nb")].iloc[0]
        assert row["source"] == "ssrs-nb (n=2)"
        for c in ev:   # "mean±std/mean±std" per class over the seeds where it is defined, recomputed from the JSON
            assert row[pre.classes[c]] == f"{_mean_std(f1[:, c])}/{_mean_std(iou[:, c])}"
        mf1 = np.nanmean(f1[:, ev], axis=1)
        assert row["mF1"] == f"{mf1.mean():.2f}±{mf1.std(ddof=1):.2f}"
        paper = t1[(t1.Method == method) & (t1.source == "paper")].iloc[0]
        assert float(paper["mF1"]) == (89.85 if variant == "seg" else 90.40)
        diff = t1[(t1.Method == method) & t1.source.str.startswith("Δ")].iloc[0]
        assert diff["mF1"] == f"{mf1.mean() - float(paper['mF1']):+.2f}"
    # Table III has every row of the paper (the smoke grid ran two of the four variants; the others show dashes)
    assert list(t3.Method.unique()) == ["L_seg", "L_seg + L_obj", "L_seg + L_bdy", "L_seg + L_obj + L_bdy"]
    assert list(t3.columns) == ["Method", "source", *[pre.classes[c] for c in pre.eval_classes], "mF1", "mIoU"]
    missing = t3[(t3.Method == "L_seg + L_obj") & t3.source.str.startswith("ssrs-nb")].iloc[0]
    assert missing["mF1"] == "–" and missing["source"] == "ssrs-nb (n=0)"
    assert "not the paper's results" in (out / "tables.md").read_text()


def test_figures_are_images_of_the_data(grid):
    d, _ = grid
    figs = d / "out" / "figures"
    for name in ("fig1_vaihingen.png", "fig3_vaihingen.png"):
        img = imread(figs / name)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 300
        assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20   # a picture, not a blank canvas


def test_second_run_reuses_finished_runs(grid):
    d, nb1 = grid
    assert _printed(nb1).count(": done in") == 4
    stamps = {p: p.stat().st_mtime_ns for p in (d / "out").rglob("metrics.json")}
    nb2 = _papermill(d / "run2.ipynb", d / "out")
    text = _printed(nb2)
    assert text.count(": skipped in") == 4 and ": done in" not in text
    assert {p: p.stat().st_mtime_ns for p in (d / "out").rglob("metrics.json")} == stamps
