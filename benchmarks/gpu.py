"""Every row of issue 12's table on the current device: the training step (R18 and Swin; fp32 and bf16; seg-only and
+ L_obj + L_bdy; eager and the fast path of `ssrs_nb.fast`), the losses alone, the sliding window against the bare
forward (and its peak GPU memory for two scene heights), the data loader against the step, SGO/SGB generation per
image (superpixels and SAM), and the estimated time of one paper run and of the paper's whole grid.

    python benchmarks/gpu.py [--out gpu.json] [--rows REGEX] [--compile auto|off|on]   # paper sizes
    python benchmarks/gpu.py --smoke --out /tmp/smoke.json                              # tiny sizes, CPU, < 1 min

On a lent GPU with minutes to spare, the rows that need compiling (each fast-path row compiles its own step: about
a minute for R18, more for Swin) can be narrowed to the ones the estimates need:

    python benchmarks/gpu.py --out gpu.json --rows 'resnet18/(fp32|bf16)|swin/bf16/seg\+obj\+bdy|losses|sgo'

Times are medians of `--steps` calls after `--warmup` calls, taken with CUDA events on a GPU (perf_counter on the
CPU). Rows that need a GPU (peak GPU memory) read "not measured" without one; rows skipped by --smoke or --rows say
so. Random-weight models and generated data: speed does not depend on the weight values.
"""
import argparse
import datetime
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ssrs_nb.core import atomic_write_json, get_device, get_preset  # noqa: E402
from ssrs_nb.fast import TrainStep, _bdy_term, _obj_term, make_sgd, resolve_compile  # noqa: E402
from ssrs_nb.inference import eval_epochs, sliding_window_predict, window_starts  # noqa: E402
from ssrs_nb.losses import boundary_loss, object_loss, total_loss  # noqa: E402

NOT_MEASURED = "not measured"
PAPER = dict(epochs=50, iters=1000, milestones=[25, 35, 45], batch=10, window=256)
SIZES = {  # paper sizes (issue 12) and the --smoke sizes
    False: dict(batch=10, window=256, scene=(2048, 2560), stride=32, eval_batch=16, sgo_size=1024, tiles=4,
                loader_batches=20, sam="vit_h", points_per_side=32),
    True: dict(batch=2, window=32, scene=(96, 128), stride=16, eval_batch=8, sgo_size=128, tiles=2,
               loader_batches=4, sam="tiny", points_per_side=4),
}


class Clock:
    "Median seconds of `fn()` over `n` calls after `warmup` calls: CUDA events on a GPU, perf_counter elsewhere."
    def __init__(self, dev, n, warmup): self.dev, self.n, self.warmup = dev, n, warmup

    def __call__(self, fn, n=None, warmup=None):
        n, warmup = n or self.n, self.warmup if warmup is None else warmup
        for _ in range(warmup): fn()
        ts = []
        for _ in range(n):
            if self.dev.type == "cuda":
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record(); fn(); b.record(); b.synchronize(); ts.append(a.elapsed_time(b) / 1000)
            else:
                t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
        return statistics.median(ts)


def device_name(dev) -> str:
    if dev.type == "cuda": return torch.cuda.get_device_name(dev)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads)"


def fake_batch(B, w, C, dev, seed=0):
    "A training batch like `WindowDataset`'s: image, label, SGO (blocks of 16 px, ids 1…), SGB (block edges)."
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij")
    sgo = (yy // 16 * ((w + 15) // 16) + xx // 16 + 1).expand(B, w, w).contiguous()
    sgb = ((yy % 16 == 0) | (xx % 16 == 0)).to(torch.uint8).mul(255).expand(B, w, w).contiguous()
    return {"image": torch.rand(B, 3, w, w, generator=g).to(dev), "label": torch.randint(0, C, (B, w, w), generator=g).to(dev),
            "sgo": sgo.to(dev), "sgb": sgb.to(dev)}


def eager_step(model, opt, amp_dtype, use_obj, use_bdy, dev):
    "Today's training step: forward, `losses.total_loss` (float parts read back), the non-finite check, SGD."
    def step(batch):
        with torch.autocast(dev.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
            out = model(batch["image"])
        main = out[0] if isinstance(out, (tuple, list)) else out
        loss, parts = total_loss(main.float(), batch["label"], batch["sgo"], batch["sgb"], use_obj=use_obj, use_bdy=use_bdy)
        if not math.isfinite(parts["total"]): raise FloatingPointError(parts)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    return step


class Bench:
    def __init__(self, a):
        self.a, self.s = a, SIZES[a.smoke]
        self.dev = get_device(a.device)
        self.clock = Clock(self.dev, a.steps, a.warmup)
        self.rows, self.sel = [], re.compile(a.rows) if a.rows else None
        self.C = 6

    def row(self, key, what, value=None, unit="", goal="", status="measured", note=""):
        r = dict(key=key, what=what, value=value, unit=unit, goal=goal, status=status, note=note)
        self.rows.append(r)
        v = "—" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))
        print(f"{key:<44}{v:>12} {unit:<10}{status:<24}{goal:<28}{note}", flush=True)
        return r

    def want(self, key): return self.sel is None or bool(self.sel.search(key))

    def get(self, key):
        r = next((r for r in self.rows if r["key"] == key), None)
        return r["value"] if r and r["status"] == "measured" else None

    def gpu_only(self, key, what, unit, goal=""):
        if self.dev.type != "cuda": self.row(key, what, None, unit, goal, NOT_MEASURED, "needs a CUDA GPU"); return True
        return False

    # --- the training step -------------------------------------------------------------------------------------
    def steps(self):
        from ssrs_nb.unetformer import create_model
        B, w = self.s["batch"], self.s["window"]
        for bb in ("resnet18", "swin"):
            for prec in ("fp32", "bf16"):
                for losses in ("seg", "seg+obj+bdy"):
                    for path in ("eager", "fast"):
                        key = f"step/{bb}/{prec}/{losses}/{path}"
                        what = f"UNetFormer-{bb} training step, {prec}, {losses}, {path}"
                        goal = {"resnet18": "≤ 10 ms", "swin": "≤ 60 ms"}[bb] if path == "fast" and prec == "bf16" else ""
                        if not self.want(key): self.row(key, what, None, "s", goal, "skipped (--rows)"); continue
                        if bb == "swin" and self.a.smoke and not self.a.smoke_swin:
                            self.row(key, what, None, "s", goal, "skipped (--smoke)", "the Swin model: run without --smoke (or --smoke-swin)")
                            continue
                        torch.manual_seed(0)
                        model = create_model(bb, self.C).to(self.dev).train()
                        use = dict(use_obj=losses != "seg", use_bdy=losses != "seg")
                        adt = torch.bfloat16 if prec == "bf16" else None
                        if path == "eager":
                            opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
                            fn, note = eager_step(model, opt, adt, dev=self.dev, **use), "losses.total_loss + SGD (today's step)"
                        else:
                            opt = make_sgd(model.parameters(), lr=1e-3, device=self.dev)
                            st = TrainStep(model, opt, amp_dtype=adt, compile=self.a.compile, device=self.dev, **use)
                            fn, note = st, f"ssrs_nb.fast.TrainStep, compiled={st.compiled}, channels_last={st.channels_last}"
                        batch = fake_batch(B, w, self.C, self.dev)
                        t = self.clock(lambda fn=fn, batch=batch: fn(batch))
                        self.row(key, what, t, "s", goal, note=f"{note}; batch {B}, {w}²")
                        del model, opt, fn
                        if self.dev.type == "cuda": torch.cuda.empty_cache()

    # --- the losses alone -------------------------------------------------------------------------------------
    def losses(self):
        B, w = self.s["batch"], self.s["window"]
        b = fake_batch(B, w, self.C, self.dev)
        pred = torch.randn(B, self.C, w, w, device=self.dev, requires_grad=True)
        def eager():
            (object_loss(pred, b["sgo"]) + 0.1 * boundary_loss(pred, b["sgb"])).backward()
        fused = lambda p: _obj_term(p, b["sgo"], 50) + 0.1 * _bdy_term(p, b["sgb"], 3, 5)
        if resolve_compile(self.a.compile, self.dev): fused = torch.compile(fused, dynamic=False)
        def fast(): fused(pred).backward()
        for key, fn, what in (("losses/eager", eager, "L_obj + L_bdy fwd+bwd, losses.object_loss/boundary_loss"),
                              ("losses/fast", fast, "L_obj + L_bdy fwd+bwd, the fused terms of ssrs_nb.fast")):
            if not self.want(key): self.row(key, what, None, "s", status="skipped (--rows)"); continue
            self.row(key, what, self.clock(fn), "s", note=f"batch {B}, {w}², {self.C} classes")
        step = self.get("step/resnet18/bf16/seg+obj+bdy/fast")
        lf = self.get("losses/fast")
        if step and lf: self.row("losses/share_of_step", "fast losses / R18 bf16 fast step", 100 * lf / step, "%", "≤ 5 %")
        else: self.row("losses/share_of_step", "fast losses / R18 bf16 fast step", None, "%", "≤ 5 %", NOT_MEASURED, "needs both rows")

    # --- the sliding window -----------------------------------------------------------------------------------
    def window(self):
        from ssrs_nb.unetformer import create_model
        (H, W), win, st, bs = self.s["scene"], self.s["window"], self.s["stride"], self.s["eval_batch"]
        amp = self.dev.type == "cuda"
        torch.manual_seed(0)
        model = create_model("resnet18", self.C).to(self.dev).eval()
        n = len(window_starts(H, win, st)) * len(window_starts(W, win, st))
        img = (np.random.default_rng(0).random((H, W, 3)) * 255).astype(np.uint8)
        xs = torch.rand(bs, 3, win, win, device=self.dev)
        from ssrs_nb.inference import _autocast

        @torch.inference_mode()
        def bare():
            for b0 in range(0, n, bs):
                with _autocast(self.dev, amp): model(xs[:min(bs, n - b0)]).float().softmax(1)
        slide = lambda band: sliding_window_predict(model, img, self.C, win, st, bs, amp=amp, band_rows=band)
        reps = dict(n=max(3, self.a.steps // 4), warmup=1)
        band = 2 * win if self.a.smoke else "auto"         # smoke: a band of 2 windows, so the scene takes several
        what = f"{H}×{W} scene, window {win}, stride {st} ({n} windows), batch {bs}, R18{' bf16' if amp else ' fp32'}"
        tb = self.clock(bare, **reps); self.row("window/bare_forward", "bare batched forward + softmax, " + what, tb, "s")
        ts = self.clock(lambda: slide(band), **reps)
        self.row("window/sliding", "sliding_window_predict (bands), " + what, ts, "s", note=f"band_rows={band}")
        tw = self.clock(lambda: slide(None), **reps)
        self.row("window/sliding_whole", "sliding_window_predict, whole-scene accumulator, " + what, tw, "s")
        self.row("window/sliding_vs_bare", "bare forward time / sliding window time", 100 * tb / ts, "%", "≥ 95 %")
        self.row("window/banded_vs_whole", "whole-scene time / banded time", tw / ts, "×", "≥ 1")
        for key, scale in (("window/peak_mem_scene", 1), ("window/peak_mem_2x_scene", 2)):
            what = f"peak GPU memory, sliding window over a {H * scale}×{W} scene"
            if self.gpu_only(key, what, "MiB", "independent of scene size"): continue
            big = np.concatenate([img] * scale, 0)
            torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            sliding_window_predict(model, big, self.C, win, st, bs, amp=amp)
            self.row(key, what, (torch.cuda.max_memory_allocated() - base) / 2**20, "MiB", "independent of scene size")
        return n

    # --- the data loader --------------------------------------------------------------------------------------
    def loader(self, tmp):
        from ssrs_nb.data import WindowDataset, list_tiles
        from ssrs_nb.reference import gt_sgo_sgb_maps
        from ssrs_nb.synthetic import make_synthetic_vaihingen
        size = max(2 * self.s["window"], 512 if not self.a.smoke else 128)
        make_synthetic_vaihingen(tmp / "v", ids=[1, 3], size=size)
        tiles = list_tiles("vaihingen", tmp / "v", "train", ids=[1, 3])
        gt_sgo_sgb_maps(tiles, tmp / "sgo")
        B = self.s["batch"]; nb = self.s["loader_batches"]
        nw = self.a.workers if self.a.workers is not None else (0 if self.a.smoke else min(8, os.cpu_count() or 1))
        ds = WindowDataset(tiles, sgo_dir=tmp / "sgo", window=self.s["window"], length=B * nb, progress=False)
        dl = torch.utils.data.DataLoader(ds, batch_size=B, num_workers=nw, pin_memory=self.dev.type == "cuda",
                                         persistent_workers=nw > 0)
        def epoch():
            for b in dl: {k: v.to(self.dev, non_blocking=True) for k, v in b.items()}
        epoch()                                                            # workers started, pages warm
        t = min(self._wall(epoch) for _ in range(2))
        rate = B * nb / t
        self.row("loader/samples_per_s", f"WindowDataset + DataLoader ({nw} workers), image+label+SGO+SGB", rate, "samples/s",
                 note=f"{self.s['window']}² windows, batch {B}")
        step = self.get("step/resnet18/bf16/seg+obj+bdy/fast") or self.get("step/resnet18/fp32/seg+obj+bdy/fast")
        if step:
            self.row("loader/vs_step", "loader samples/s ÷ samples/s the R18 fast step consumes", rate * step / B, "×", "≥ 1 (loader never the bottleneck)")
        else: self.row("loader/vs_step", "loader samples/s ÷ samples/s the R18 fast step consumes", None, "×", "≥ 1", NOT_MEASURED, "needs the step row")
        return tiles

    def _wall(self, fn):
        if self.dev.type == "cuda": torch.cuda.synchronize()
        t = time.perf_counter(); fn()
        if self.dev.type == "cuda": torch.cuda.synchronize()
        return time.perf_counter() - t

    # --- SGO/SGB generation -----------------------------------------------------------------------------------
    def sgo(self, tiles):
        from ssrs_nb.data import read_image
        from ssrs_nb.sam import SuperpixelGenerator, build_tiny_sam, generate_sgo_sgb, mask_generator_from_model
        n = self.s["sgo_size"]
        img = read_image(tiles[0].image_path)
        img = np.ascontiguousarray(np.tile(img, (n // img.shape[0] + 1, n // img.shape[1] + 1, 1))[:n, :n])
        reps = dict(n=1 if not self.a.smoke else 2, warmup=0 if not self.a.smoke else 1)
        if self.want("sgo/superpixel_per_image"):
            t = self.clock(lambda: generate_sgo_sgb(img, SuperpixelGenerator(), crop=512), **reps)
            self.row("sgo/superpixel_per_image", f"superpixel SGO/SGB, one {n}² image, one process", t, "s",
                     note="×16 tiles / cores for the issue's row")
        else: self.row("sgo/superpixel_per_image", "superpixel SGO/SGB", None, "s", status="skipped (--rows)")
        if not self.want("sgo/sam"):
            for k in ("sgo/sam_per_image", "sgo/sam_encoder"): self.row(k, "SAM", None, "s", status="skipped (--rows)")
            return
        if self.s["sam"] == "tiny":
            sam, label = build_tiny_sam(img_size=256).to(self.dev), "tiny random SAM (build_tiny_sam)"
        else:
            from segment_anything import sam_model_registry
            torch.manual_seed(0); sam, label = sam_model_registry["vit_h"]().to(self.dev).eval(), "SAM ViT-H, random weights"
        gen = mask_generator_from_model(sam, points_per_side=self.s["points_per_side"])
        t = self.clock(lambda: gen.generate(img), **reps)
        self.row("sgo/sam_per_image", f"{label}, automatic masks (paper settings, {self.s['points_per_side']}² points), one {n}² image",
                 t, "s", "GPU never waits")
        x = torch.rand(1, 3, sam.image_encoder.img_size, sam.image_encoder.img_size, device=self.dev)
        with torch.inference_mode(): te = self.clock(lambda: sam.image_encoder(x), n=3, warmup=1)
        self.row("sgo/sam_encoder", f"{label} image encoder, one {sam.image_encoder.img_size}² crop", te, "s")

    # --- estimates ---------------------------------------------------------------------------------------------
    def estimates(self, n_windows):
        s, p = self.s, PAPER
        scale = "" if not self.a.smoke else " (smoke sizes: not the paper's)"
        tw = self.get("window/sliding")
        per_window = tw / n_windows if tw else None
        ev_new = len(eval_epochs(p["epochs"], p["milestones"], "last"))
        ev_old = p["epochs"]

        def tile_windows(dataset):
            H, W = s["scene"] if dataset == "vaihingen" else (s["scene"][0] // 2, s["scene"][0] // 2)
            st = s["stride"] if dataset == "vaihingen" else s["window"] // 2   # LoveDA: 1024² tiles at stride 128
            return len(window_starts(H, s["window"], st)) * len(window_starts(W, s["window"], st))

        def run_s(backbone, dataset, n_eval):
            step = self.get(f"step/{backbone}/bf16/seg+obj+bdy/fast")
            r18 = self.get("step/resnet18/bf16/seg+obj+bdy/fast")
            if not (step and per_window and r18): return None
            pw = per_window * step / r18                                     # Swin windows: scaled by the step ratio
            tiles = len(get_preset(dataset).test_ids)
            return p["epochs"] * p["iters"] * step + n_eval * tiles * tile_windows(dataset) * pw

        r = run_s("resnet18", "vaihingen", ev_new)
        old = run_s("resnet18", "vaihingen", ev_old)
        what = f"one R18 Vaihingen run: 50×1000 steps + {ev_new} evaluations (eval_epochs, select_on='last')"
        if r: self.row("estimate/run", what, r / 60, "min", "≤ 12 min", "estimate",
                       f"evaluating every epoch: {old / 60:.1f} min{scale}")
        else: self.row("estimate/run", what, None, "min", "≤ 12 min", NOT_MEASURED, "needs the R18 bf16 fast step and window rows")
        from ssrs_nb.paper import paper_grid
        runs = paper_grid()
        ts = [run_s(rn.backbone, rn.dataset, ev_new) for rn in runs]
        what = f"the paper's grid ({len(runs)} runs: Tables I–IV, 3 seeds, R18 and Swin, both datasets)"
        if all(ts): self.row("estimate/grid", what, sum(ts) / 3600, "GPU-h", "≤ 10 GPU-h", "estimate",
                             f"Swin evaluation scaled from R18 by the step ratio{scale}")
        else: self.row("estimate/grid", what, None, "GPU-h", "≤ 10 GPU-h", NOT_MEASURED, "needs the Swin and R18 bf16 fast step rows")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (CPU, well under a minute)")
    ap.add_argument("--smoke-swin", action="store_true", help="with --smoke, also time the (large) Swin model")
    ap.add_argument("--out", default=None, help="JSON file for the rows")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=None, help="timed calls per row (median); default 20, smoke 3")
    ap.add_argument("--warmup", type=int, default=None, help="untimed calls first; default 5, smoke 1")
    ap.add_argument("--compile", default="auto", choices=["auto", "off", "on"], help="the fast path's compile switch")
    ap.add_argument("--rows", default=None, help="only the rows whose key matches this regex (others: skipped)")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: 0 smoke, min(8, cores))")
    a = ap.parse_args(argv)
    a.steps = a.steps or (3 if a.smoke else 20)
    a.warmup = a.warmup if a.warmup is not None else (1 if a.smoke else 5)
    b = Bench(a)
    t0 = time.time()
    head = dict(device=device_name(b.dev), device_type=b.dev.type, torch=torch.__version__, smoke=a.smoke,
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                steps=a.steps, warmup=a.warmup, compile=a.compile, timer="CUDA events" if b.dev.type == "cuda" else "perf_counter")
    print(f"# issue 12 benchmark on {head['device']}, torch {head['torch']}, {head['date']}"
          f"{' (--smoke sizes)' if a.smoke else ''}; median of {a.steps} after {a.warmup} warm-up ({head['timer']})")
    print(f"{'row':<44}{'value':>12} {'unit':<10}{'status':<24}{'goal':<28}note")
    b.steps(); b.losses(); n = b.window()
    with tempfile.TemporaryDirectory() as d:
        tiles = b.loader(Path(d)); b.sgo(tiles)
    b.estimates(n)
    head["seconds"] = round(time.time() - t0, 1)
    out = dict(head, rows=b.rows)
    if a.out: atomic_write_json(a.out, out)
    print(f"# {len(b.rows)} rows in {head['seconds']} s" + (f"; written to {a.out}" if a.out else ""))
    return out


if __name__ == "__main__":
    main()
