"ssrs_nb.fast: the one training step, eager and compiled, gives an independent SGD loop's loss curve and weights."
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ssrs_nb.fast import PARTS, LossMeter, TrainStep, compile_available, make_sgd
from ssrs_nb.reference import total_loss_naive


def net(seed=0, C=4):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, C, 3, padding=1))


def batches(n, B=2, C=4, H=24, W=24, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        lab = torch.randint(0, C, (B, H, W), generator=g); lab[0, :3] = 255
        out.append(dict(image=torch.rand(B, 3, H, W, generator=g), label=lab,
                        sgo=torch.randint(0, 60, (B, H, W), generator=g),
                        sgb=(torch.rand(B, H, W, generator=g) < .15).to(torch.uint8)))
    return out


def eager_run(bs, lr=0.05):
    "Reference: Eq. 2 from the naive oracles (reference.total_loss_naive) and a plain torch.optim.SGD loop."
    m = net(); opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    curve = []
    for b in bs:
        loss = total_loss_naive(m(b["image"]), b["label"], b["sgo"], b["sgb"])
        opt.zero_grad(); loss.backward(); opt.step(); curve.append(loss.item())
    return torch.tensor(curve), m


def fast_run(bs, compile, lr=0.05):
    m = net(); opt = make_sgd(m.parameters(), lr=lr)
    step = TrainStep(m, opt, compile=compile, device="cpu", log=lambda s: None)
    meter, curve = LossMeter(), []
    for b in bs:
        p = step(b); meter.add(p); curve.append(p)
    return torch.stack(curve), m, meter, step


def test_eager_fast_step_equals_eager_training():
    bs = batches(5)
    ref, rm = eager_run(bs)
    got, m, meter, step = fast_run(bs, "off")
    assert not step.compiled
    torch.testing.assert_close(got[:, 3], ref, rtol=1e-5, atol=1e-5)
    for p, q in zip(m.parameters(), rm.parameters(), strict=True): torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    mean = meter.mean()
    for i, k in enumerate(PARTS): assert abs(mean[k] - got[:, i].double().mean().item()) < 1e-6
    assert abs(mean["total"] - ref.mean().item()) < 1e-5 and meter.finite()


def test_fused_sgd_equals_foreach():
    bs = batches(3)
    ms = []
    for fused in (False, True):
        m = net(); opt = make_sgd(m.parameters(), lr=0.05, fused=fused)
        try: step = TrainStep(m, opt, compile="off", device="cpu")
        except RuntimeError as e: pytest.skip(f"fused SGD unsupported on the CPU here: {e}")
        try:
            for b in bs: step(b)
        except RuntimeError as e:
            if fused: pytest.skip(f"fused SGD unsupported on the CPU here: {e}")
            raise
        ms.append(m)
    for p, q in zip(ms[0].parameters(), ms[1].parameters(), strict=True): torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_nonfinite_seen_by_meter():
    meter = LossMeter(); meter.add(torch.tensor([1.0, 0, 0, 1])); meter.add(torch.tensor([float("nan"), 0, 0, 1]))
    assert not meter.finite() and meter.read()["bad"] == 1


@pytest.mark.skipif(os.environ.get("SSRS_SLOW") != "1", reason="compiles C++ for minutes on the 2-core CI machine; SSRS_SLOW=1")
def test_compiled_step_equals_eager_training():
    "The inductor-compiled step (CPU) gives the eager loss curve and weights within float tolerance."
    if not compile_available("cpu")[0]: pytest.skip(f"torch.compile does not work on this CPU: {compile_available('cpu')[1]}")
    bs = batches(4)
    ref, rm = eager_run(bs)
    got, m, _, step = fast_run(bs, "on")
    assert step.compiled
    torch.testing.assert_close(got[:, 3], ref, rtol=1e-4, atol=1e-4)
    for p, q in zip(m.parameters(), rm.parameters(), strict=True): torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-4)


# --- the training loop with the compiled step (TrainConfig.compile) -------------------------------------------------
def _data(tmp):
    from ssrs_nb.data import list_tiles
    from ssrs_nb.reference import gt_sgo_sgb_maps
    from ssrs_nb.synthetic import make_synthetic_vaihingen
    make_synthetic_vaihingen(tmp / "data", ids=[1, 3, 5], size=96)
    gt_sgo_sgb_maps(list_tiles("vaihingen", tmp / "data", "train", ids=[1, 3]), tmp / "sgo")
    return tmp


def _cfg(d, out, **kw):
    from ssrs_nb.training import TrainConfig
    return TrainConfig(data_root=str(d / "data"), sgo_root=str(d / "sgo"), out_dir=str(out), train_ids=[1, 3], test_ids=[5],
                       epochs=2, iters_per_epoch=5, batch_size=2, window=64, eval_stride=32, milestones=[1], log_every=2,
                       ckpt_every=3, progress=False, threads=1, **kw)


def small(C):   # no batch norm: the compiled and the eager step see the same batches in the same order
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, C, 3, padding=1))


def test_train_with_fast_step_equals_eager(tmp_path, monkeypatch):
    """`train` with compile='on' (torch.compile replaced by the identity, so this runs in seconds: the switch's wiring is
    what is tested: a compiled step, its first batch checked eagerly) gives the eager run's history bit for bit."""
    import ssrs_nb.fast as fast
    from ssrs_nb.training import train
    d = _data(tmp_path)
    ref = train(_cfg(d, tmp_path / "eager", compile="off"), model_fn=small)
    monkeypatch.setattr(fast.torch, "compile", lambda f, **kw: f)
    monkeypatch.setattr(fast, "_PROBED", {})
    got = train(_cfg(d, tmp_path / "fast", compile="on"), model_fn=small)
    assert [s["iteration"] for s in got["steps"]] == [s["iteration"] for s in ref["steps"]] == [2, 4, 6, 8, 10]
    assert got["steps"] == ref["steps"]
    for a, b in zip(got["history"], ref["history"], strict=True):
        assert a["train"] == b["train"] and a["eval"]["confusion_matrix"] == b["eval"]["confusion_matrix"]
    # the CPU default ('auto') is the eager step: the same numbers as compile='off', bit for bit
    auto = train(_cfg(d, tmp_path / "auto"), model_fn=small)
    assert auto["history"][-1]["train"] == ref["history"][-1]["train"]


def test_compiled_step_stops_on_nan(tmp_path, monkeypatch):
    "A non-finite loss inside the compiled step stops the run at the next read with the usual FloatingPointError."
    import ssrs_nb.fast as fast
    from ssrs_nb.training import train
    d = _data(tmp_path)
    monkeypatch.setattr(fast.torch, "compile", lambda f, **kw: f)
    monkeypatch.setattr(fast, "_PROBED", {})
    with pytest.raises(FloatingPointError, match=r"non-finite loss at iteration 2 \(epoch 1, batch 2\)"):
        train(_cfg(d, tmp_path / "nan", compile="on", lr=1e30), model_fn=small)
    assert json.loads((tmp_path / "nan" / "metrics.json").read_text())["status"].startswith("stopped")


# --- the compiled step under DistributedDataParallel (gloo, 2 CPU processes) ---------------------------------------
DDP_SCRIPT = '''
import json, sys, torch, torch.distributed as dist
from torch import nn
from ssrs_nb.fast import TrainStep, make_sgd
from test_fast import batches, net          # this file (tests/ is on PYTHONPATH)
dist.init_process_group("gloo"); rank = dist.get_rank()
out = {}
for name, compile, backend in (("eager", "off", "inductor"), ("compiled", "on", "aot_eager")):
    model = nn.parallel.DistributedDataParallel(net())
    step = TrainStep(model, make_sgd(model.parameters(), lr=0.05), compile=compile, backend=backend, device="cpu",
                     log=lambda s: None)
    curve = [step(b).tolist() for b in batches(3, seed=10 + rank)]       # each process its own batches
    out[name] = {"curve": curve, "weights": [p.detach().flatten().tolist() for p in model.module.parameters()],
                 "compiled": step.compiled}
json.dump(out, open(f"{sys.argv[1]}/rank{rank}.json", "w"))
dist.destroy_process_group()
'''


def test_compiled_step_under_ddp_equals_eager(tmp_path):
    """torchrun, 2 gloo processes, different batches each: the traced step (`backend='aot_eager'`: Dynamo splits the
    graph at DDP's buckets, AOTAutograd's backward fires DDP's all-reduce) gives each process the eager DDP step's loss
    curve, and both processes end with the same (averaged) weights."""
    script = tmp_path / "ddp.py"; script.write_text(DDP_SCRIPT)
    here = Path(__file__).resolve().parent
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(here.parent), str(here)])}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
                        str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    r = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    for ri in r:
        assert ri["compiled"]["compiled"] and not ri["eager"]["compiled"]
        torch.testing.assert_close(torch.tensor(ri["compiled"]["curve"]), torch.tensor(ri["eager"]["curve"]),
                                   rtol=1e-5, atol=1e-5)
        for a, b in zip(ri["compiled"]["weights"], ri["eager"]["weights"], strict=True):
            torch.testing.assert_close(torch.tensor(a), torch.tensor(b), rtol=1e-5, atol=1e-6)
    assert r[0]["eager"]["curve"][0] != r[1]["eager"]["curve"][0]                       # the processes saw other data
    for a, b in zip(r[0]["compiled"]["weights"], r[1]["compiled"]["weights"], strict=True):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), rtol=1e-6, atol=1e-7)   # gradients were averaged
