"""Training: kill-and-resume with a real process, DDP (gloo, 2 CPU processes) vs 1 process, NaN stop, ablation switches,
model selection, and the papermill entry notebook with every parameter overridden."""
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ssrs_nb.core import load_checkpoint
from ssrs_nb.reference import NaNAt, small_net
from ssrs_nb.reference import grid_sgo_sgb_maps as write_grid_maps
from ssrs_nb.training import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1",
       "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}

SCRIPT = '''
import json, sys
from ssrs_nb.training import TrainConfig, train
from ssrs_nb.reference import small_net   # no batch norm, no dropout: DDP on the CPU equals one process exactly
train(TrainConfig.from_dict(json.loads(sys.argv[1])), model_fn=small_net if sys.argv[2] == "small" else None)
'''


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from ssrs_nb.data import list_tiles
    from ssrs_nb.synthetic import make_synthetic_vaihingen
    d = tmp_path_factory.mktemp("vaihingen")
    make_synthetic_vaihingen(d / "data", ids=[1, 3, 23, 5, 21], size=96)
    tiles = list_tiles("vaihingen", d / "data", "train", ids=[1, 3, 23])
    write_grid_maps([t.image_path for t in tiles], d / "sgo")
    return d


def base_cfg(data, out, **kw):
    return replace(TrainConfig(data_root=str(data / "data"), sgo_root=str(data / "sgo"), out_dir=str(out),
                               train_ids=[1, 3, 23], test_ids=[5], epochs=2, iters_per_epoch=4, batch_size=4, window=64,
                               eval_stride=32, milestones=[1], progress=False, threads=1), **kw)


def run_script(cfg, model, nproc=1):
    "Start `train(cfg)` in a new process (or `nproc` processes under torchrun); returns the Popen."
    script = Path(cfg.out_dir).parent / "run.py"
    script.write_text(SCRIPT)
    launch = [sys.executable] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return subprocess.Popen(launch + [str(script), json.dumps(cfg.to_dict()), model], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(p, timeout=150):
    out, _ = p.communicate(timeout=timeout)
    assert p.returncode == 0, out[-3000:]
    return out


def same_weights(a, b, atol=0.0):
    wa, wb = load_checkpoint(a), load_checkpoint(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        if atol == 0: assert torch.equal(wa[k], wb[k]), k
        else: torch.testing.assert_close(wa[k], wb[k], atol=atol, rtol=1e-5, msg=k)


def test_kill_and_resume_equals_uninterrupted(data, tmp_path):
    "A real process killed (SIGKILL) after its first mid-epoch checkpoint, then resumed, ends exactly like a clean run."
    cfg = base_cfg(data, tmp_path / "full", backbone="resnet18", epochs=2, iters_per_epoch=8, batch_size=2, ckpt_every=3)
    full = run_script(cfg, "unetformer")
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))      # the killed run goes through the command line
    killed = subprocess.Popen([sys.executable, "-m", "ssrs_nb.cli", str(tmp_path / "cfg.json"),
                               f"out_dir={tmp_path / 'killed'}"], env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    ck = tmp_path / "killed" / "checkpoints" / "last.pth"
    t0 = time.time()
    while not ck.exists() and killed.poll() is None and time.time() - t0 < 150: time.sleep(0.01)
    killed.send_signal(signal.SIGKILL); killed.communicate(timeout=30)
    assert killed.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (tmp_path / "killed" / "model_final.pth").exists()
    step = load_checkpoint(ck)["step"]
    assert 3 <= step < 16
    out = finish(subprocess.Popen([sys.executable, "-m", "ssrs_nb.cli", str(tmp_path / "cfg.json"),
                                   f"out_dir={tmp_path / 'killed'}", "resume=true"], env=ENV, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True))
    assert "last epoch: epoch 2, test mF1" in out
    assert f"iteration {step}" in out and "resumed" in out
    finish(full)
    a, b = (json.loads((tmp_path / x / "metrics.json").read_text()) for x in ("full", "killed"))
    assert json.dumps(a["history"]) == json.dumps(b["history"]) and json.dumps(a["final"]) == json.dumps(b["final"])
    same_weights(tmp_path / "full" / "model_final.pth", tmp_path / "killed" / "model_final.pth")
    # the run learns: training loss falls over the run
    assert a["history"][-1]["train"]["total"] < a["history"][0]["train"]["total"]


def test_ddp_gloo_two_processes_equal_one(data, tmp_path):
    "torchrun with 2 CPU processes (gloo, batch 2 each) equals 1 process with the same global batch of 4."
    cfg = base_cfg(data, tmp_path / "ddp", test_ids=[5, 21], epochs=2, iters_per_epoch=4, batch_size=4)
    ddp = run_script(cfg, "small", nproc=2)
    one = run_script(replace(cfg, out_dir=str(tmp_path / "one")), "small")
    finish(ddp); finish(one)
    a, b = (json.loads((tmp_path / x / "metrics.json").read_text()) for x in ("ddp", "one"))
    assert (a["world_size"], b["world_size"]) == (2, 1)
    same_weights(tmp_path / "ddp" / "model_final.pth", tmp_path / "one" / "model_final.pth", atol=1e-6)
    for ha, hb in zip(a["history"], b["history"]):
        for k in ("seg", "obj", "bdy", "total"): assert ha["train"][k] == pytest.approx(hb["train"][k], rel=1e-5, abs=1e-7)
        assert ha["eval"]["confusion_matrix"] == hb["eval"]["confusion_matrix"]      # tiles sharded, matrices summed
        assert ha["eval"]["tiles"] == [5, 21]


def test_ddp_trains_the_real_unetformer_with_and_without_aux_loss(data, tmp_path):
    """torchrun with 2 CPU processes on the ResNet-18 UNetFormer itself (not the test net): without the aux loss its
    auxiliary head gets no gradient, which DDP must be told (before: every rank died with 'Expected to have finished
    reduction in the prior iteration')."""
    for aux in (False, True):
        cfg = base_cfg(data, tmp_path / f"aux{aux}", epochs=1, iters_per_epoch=2, batch_size=4, aux_loss=aux,
                       milestones=[], pretrained=False)
        p = run_script(cfg, "unetformer", nproc=2)
        finish(p)
        m = json.loads((tmp_path / f"aux{aux}" / "metrics.json").read_text())
        assert (m["world_size"], m["status"], m["config"]["aux_loss"]) == (2, "finished", aux)


def test_nan_stops_with_iteration_parts_and_last_good_checkpoint(data, tmp_path):
    cfg = base_cfg(data, tmp_path / "nan", ckpt_every=2, iters_per_epoch=6)
    with pytest.raises(FloatingPointError) as e: train(cfg, model_fn=lambda C: NaNAt(C, at=5))
    msg = str(e.value)
    assert "non-finite loss at iteration 5 (epoch 1, batch 5)" in msg
    assert "'seg': nan" in msg and "'total': nan" in msg
    ck = tmp_path / "nan" / "checkpoints" / "last.pth"
    assert f"last good checkpoint is {ck} (iteration 4" in msg
    state = load_checkpoint(ck)
    assert state["step"] == 4 and all(torch.isfinite(v).all() for v in state["model"].values())
    status = json.loads((tmp_path / "nan" / "metrics.json").read_text())["status"]
    assert status.startswith("stopped: non-finite loss at iteration 5"), status
    # the checkpoint resumes (here with a healthy network) from iteration 4
    r = train(replace(cfg, resume=True), model_fn=lambda C: NaNAt(C, at=10 ** 9))
    assert r["history"][-1]["iteration"] == 12


def test_baseline_row_trains_without_maps(data, tmp_path):
    r = train(base_cfg(data, tmp_path / "seg", sgo_root=None, use_obj=False, use_bdy=False, epochs=1, iters_per_epoch=2),
              model_fn=small_net)
    assert r["history"][0]["train"]["obj"] == 0 and r["history"][0]["train"]["bdy"] == 0
    with pytest.raises(FileNotFoundError, match="SGO/SGB map"):
        train(base_cfg(data, tmp_path / "nomaps", sgo_root=str(tmp_path)), model_fn=small_net)


@pytest.mark.parametrize("select_on", ["test", "val"])
def test_model_selection_is_recorded(data, tmp_path, select_on):
    cfg = base_cfg(data, tmp_path / select_on, select_on=select_on, val_tiles=1, epochs=3, iters_per_epoch=2,
                   milestones=[], lr=0.05)
    train(cfg, model_fn=small_net)
    m = json.loads((tmp_path / select_on / "metrics.json").read_text())
    split = "val" if select_on == "val" else "test"
    assert [h["eval"]["split"] for h in m["history"]] == [split] * 3
    mious = [h["eval"]["miou"] for h in m["history"]]
    best = int(np.argmax(mious)) + 1          # first best epoch
    assert m["final"]["epoch"] == best and m["final"]["split"] == "test" and m["final"]["weights"] == "model_best.pth"
    assert (tmp_path / select_on / "model_best.pth").exists()
    if select_on == "test":
        assert m["final"]["selection"].startswith("best test mIoU") and m["final"]["scores"]["miou"] == max(mious)
        with pytest.raises(FileExistsError, match="resume=True"): train(replace(cfg, select_on="last"), model_fn=small_net)
        train(replace(cfg, select_on="last", epochs=1, overwrite=True), model_fn=small_net)   # a fresh run over it
        assert not (tmp_path / "test" / "model_best.pth").exists()
        assert json.loads((tmp_path / "test" / "metrics.json").read_text())["final"]["selection"] == "last epoch"
    else:
        assert m["val_tiles"] == [23] and m["train_tiles"] == [1, 3] and m["final"]["scores"]["tiles"] == [5]
        net = small_net(6); net.load_state_dict(load_checkpoint(tmp_path / "val" / "model_best.pth"))
        from ssrs_nb.data import list_tiles
        from ssrs_nb.inference import evaluate
        again = evaluate(net, list_tiles("vaihingen", data / "data", "test", ids=[5]), window=64, stride=32, progress=False)
        assert again["confusion_matrix"] == m["final"]["scores"]["confusion_matrix"]


def _param_names(nb_path):
    nb = json.loads(Path(nb_path).read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    src = "".join(cell["source"])
    return [l.split("=")[0].strip() for l in src.splitlines() if "=" in l and not l.startswith((" ", "#"))]


def test_papermill_every_parameter_overridden(data, tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("PYTHONPATH", ENV["PYTHONPATH"]); monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)
    out = tmp_path / "pm_run"
    params = dict(dataset="vaihingen", data_root=str(data / "data"), sgo_root=str(data / "sgo"), out_dir=str(out),
                  backbone="resnet18", pretrained=None, use_obj=True, use_bdy=False, lambda_obj=0.5, lambda_bdy=0.2,
                  bdy_variant="ssrs2023", max_objects=30, theta0=5, theta=7, grad_clip=5.0,
                  aux_loss=True, lambda_aux=0.3, epochs=2, iters_per_epoch=3, batch_size=2, window=64, eval_stride=32,
                  milestones=[1], lr=0.02, momentum=0.8, weight_decay=1e-4, gamma=0.5, augment=False,
                  train_ids=[1, 3, 23], test_ids=[5], select_on="test", val_tiles=1, eval_every=1, eval_batch_size=8,
                  tta=True, seed=1, device="cpu", amp="off", compile="off", num_workers=0, ckpt_every=2, log_every=1,
                  resume=False, overwrite=True, deterministic=False, threads=1, progress=False, keep_checkpoints=True,
                  tile_cache=str(tmp_path / "cache"),
                  n_tiles=4, tile_size=96)
    nb = ROOT / "nbs" / "10_train.ipynb"
    assert sorted(params) == sorted(_param_names(nb)), "the test must override every parameter of the notebook"
    executed = tmp_path / "out.ipynb"
    papermill.execute_notebook(str(nb), str(executed), parameters=params, kernel_name="python3", cwd=str(tmp_path),
                               progress_bar=False)
    for f in ("metrics.json", "curves.png", "model_final.pth", "model_best.pth", "checkpoints/last.pth",
              "checkpoints/previous.pth"):                       # keep_checkpoints=True kept the spare checkpoint
        assert (out / f).is_file(), f
    m = json.loads((out / "metrics.json").read_text())
    c = m["config"]
    for k, v in params.items():
        if k not in ("n_tiles", "tile_size"): assert c[k] == v, k
    assert m["final"]["selection"].startswith("best test mIoU") and m["amp"] == "off"
    cached = list((tmp_path / "cache").rglob("*.npy"))                 # tile_cache: 4 arrays per training tile
    assert len(cached) == 4 * len(m["train_tiles"]), cached
    assert set(m["history"][0]["train"]) == {"seg", "obj", "bdy", "aux", "total"} and m["history"][0]["train"]["bdy"] == 0
    assert len(m["steps"]) == 6 and m["history"][-1]["lr"] == pytest.approx(0.01)
    cells = json.loads(executed.read_text())["cells"]
    outputs = [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2                 # curves + Fig. 3 panel
    text = "".join("".join(o.get("text", "")) for o in outputs)
    html = "".join("".join(o.get("data", {}).get("text/html", "")) for o in outputs)   # the scores: an HTML table
    assert "<th>mF1</th>" in html and "<th>mIoU</th>" in html and "selection: best test mIoU" in text


@pytest.mark.parametrize("bad,msg", [(dict(backbone="resnet81"), "resnet81"), (dict(epoch=3), "unknown parameter(s) ['epoch']"),
                                     (dict(select_on="best"), "choose one of ['last', 'val', 'test']"),
                                     (dict(milestones="[1]"), "-y 'milestones: [1]'")])
def test_papermill_rejects_bad_parameters(tmp_path, monkeypatch, bad, msg):
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("PYTHONPATH", ENV["PYTHONPATH"]); monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with pytest.raises(papermill.PapermillExecutionError) as e:
        papermill.execute_notebook(str(ROOT / "nbs" / "10_train.ipynb"), str(tmp_path / "o.ipynb"),
                                   parameters={"out_dir": str(tmp_path / "r"), **bad}, kernel_name="python3",
                                   cwd=str(tmp_path), progress_bar=False)
    assert msg in str(e.value)
    assert not (tmp_path / "r" / "checkpoints").exists()        # rejected before any training


def test_papermill_official_boundary_loss_reaches_the_loss(data, tmp_path, monkeypatch):
    """-p bdy_variant ssrs2023 -p max_objects 30: recorded in metrics.json, and the logged loss parts of the first step equal
    boundary_loss(..., variant='ssrs2023') and object_loss(..., max_objects=30) recomputed on that step's batch and weights."""
    papermill = pytest.importorskip("papermill")
    from ssrs_nb.losses import boundary_loss, object_loss
    from ssrs_nb.training import setup_run
    monkeypatch.setenv("PYTHONPATH", ENV["PYTHONPATH"]); monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "official"
    params = dict(data_root=str(data / "data"), sgo_root=str(data / "sgo"), out_dir=str(out), train_ids=[1, 3, 23],
                  test_ids=[5], bdy_variant="ssrs2023", max_objects=30, epochs=1, iters_per_epoch=1, batch_size=2,
                  window=64, eval_stride=64, lr=1e-3, log_every=1, threads=1, device="cpu")
    papermill.execute_notebook(str(ROOT / "nbs" / "10_train.ipynb"), str(tmp_path / "o.ipynb"), parameters=params,
                               kernel_name="python3", cwd=str(tmp_path), progress_bar=False)
    m = json.loads((out / "metrics.json").read_text())
    assert (m["config"]["bdy_variant"], m["config"]["max_objects"]) == ("ssrs2023", 30)
    logged = m["steps"][0]["loss"]
    # the same set-up in this process (same seeds, same initial weights: step 0 logs the loss before its update),
    # then the first batch by hand
    rs = setup_run(TrainConfig.from_dict({**m["config"], "out_dir": str(tmp_path / "again"), "progress": False}).check())
    batch = torch.utils.data.default_collate([rs.ds[i] for i in range(2)])
    rs.model.train()
    main, _ = rs.model(batch["image"])
    assert logged["bdy"] == pytest.approx(boundary_loss(main.float(), batch["sgb"], variant="ssrs2023").item(), rel=1e-5)
    assert logged["obj"] == pytest.approx(object_loss(main.float(), batch["sgo"], max_objects=30).item(), rel=1e-5)
    assert logged["bdy"] != pytest.approx(boundary_loss(main.float(), batch["sgb"]).item(), rel=1e-3)   # not the default form


def test_own_dataset_spec_trains_end_to_end(tmp_path, monkeypatch):
    """A layout no preset knows (02b_specs' example: 4-band uint16 GeoTIFF scenes in UTM, index labels with 255 no-data,
    4 classes of which 3 count in the mean): superpixel SGO/SGB from 11_generate_sgo with `-p dataset mycity.yaml`, then
    trained from its spec by the installed `ssrs-train`
    and by papermill: the scores carry the spec's class names, count exactly the test label's non-ignored pixels, and
    mIoU is the mean over `mean_classes` (road, building, tree; not water)."""
    papermill = pytest.importorskip("papermill")
    import tifffile

    from ssrs_nb.specs import make_example_dataset
    spec = make_example_dataset(tmp_path / "mycity", n_train=2, n_test=1, size=96)
    monkeypatch.setenv("PYTHONPATH", ENV["PYTHONPATH"]); monkeypatch.setenv("OMP_NUM_THREADS", "1")
    papermill.execute_notebook(str(ROOT / "nbs" / "11_generate_sgo.ipynb"), str(tmp_path / "g.ipynb"),   # the spec's bands, scale
                               parameters=dict(dataset=str(spec), out_dir=str(tmp_path / "sgo"), crop=0),
                               kernel_name="python3", cwd=str(tmp_path), progress_bar=False)
    assert len(list((tmp_path / "sgo").glob("*_sgo.png"))) == 3
    test_label = tifffile.imread(next((spec.parent / "labels" / "test").glob("*.tif")))
    scored = int((test_label != 255).sum())
    assert 0 < scored < test_label.size                                  # the example has no-data to leave out
    common = dict(dataset=str(spec), sgo_root=str(tmp_path / "sgo"), epochs=1, iters_per_epoch=2, batch_size=2,
                  window=64, eval_stride=32, milestones=[], threads=1, device="cpu", progress=False)
    cli = subprocess.run([str(Path(sys.executable).parent / "ssrs-train"),
                          *[f"{k}={json.dumps(v)}" for k, v in dict(common, out_dir=str(tmp_path / "cli")).items()]],
                         capture_output=True, text=True, env=ENV, timeout=600)
    assert cli.returncode == 0, cli.stderr[-3000:]
    papermill.execute_notebook(str(ROOT / "nbs" / "10_train.ipynb"), str(tmp_path / "o.ipynb"),
                               parameters=dict(common, out_dir=str(tmp_path / "pm")), kernel_name="python3",
                               cwd=str(tmp_path), progress_bar=False)
    for run in ("cli", "pm"):
        s = json.loads((tmp_path / run / "metrics.json").read_text())["final"]["scores"]
        assert s["class_names"] == ["road", "building", "tree", "water"], run
        assert int(np.sum(s["confusion_matrix"])) == scored, run
        assert np.isclose(s["miou"], np.nanmean(np.asarray(s["iou"], float)[:3])), run
