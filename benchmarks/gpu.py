r"""Every row of the GPU-speed table on the current device: the training step (R18 and Swin; fp32 and bf16; seg-only and
+ L_obj + L_bdy; eager and the fast path of `ssrs_nb.fast`), the losses alone, the sliding window against the bare
forward (and its peak GPU memory for two scene heights), the data loader against the step, SGO/SGB generation per
image (superpixels and SAM) and the superpixel speed-up with one process per core, and the estimated time of one
paper run and of the paper's whole grid.

    python benchmarks/gpu.py [--out gpu.json] [--rows REGEX] [--compile auto|off|on] [--budget-s S]   # paper sizes
    python benchmarks/gpu.py --smoke --out /tmp/smoke.json                                          # tiny, CPU, < 1 min
    python benchmarks/gpu.py --show benchmarks/results/*.json                                      # the GPU-speed table

On a lent GPU machine, `bash benchmarks/device.sh` (after `make gpu-wheels` here) runs it as one command within a
lease. The rows the GPU-speed table and the estimates need run first, the rest of the step grid last, so a time budget
(`--budget-s`: rows not started by then read "not measured (time budget)") cuts the least useful rows. A row that
fails (a compile error, out of memory) reads "error" with the message, and the run goes on. The JSON is rewritten after
every row, so a run killed by its time limit keeps what it measured. Each fast-path row compiles its own step (about a
minute for R18, more for Swin); `--rows` narrows the run, e.g.

    python benchmarks/gpu.py --out gpu.json --rows 'resnet18/(fp32|bf16)|swin/bf16/seg\+obj\+bdy|losses|sgo'

Times are medians of `--steps` calls after `--warmup` calls, taken with CUDA events on a GPU (perf_counter on the
CPU). Rows that need a GPU (peak GPU memory) read "not measured" without one; rows skipped by --smoke or --rows say
so. Random-weight models and generated data: speed does not depend on the weight values.
"""
import argparse
import contextlib
import datetime
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ssrs_nb.core import (  # noqa: E402
    atomic_write_json,
    get_device,
    get_preset,
    window_starts,  # noqa: E402
)
from ssrs_nb.fast import TrainStep, make_sgd, resolve_compile  # noqa: E402
from ssrs_nb.inference import sliding_window_predict  # noqa: E402
from ssrs_nb.losses import _bdy_term, _obj_term, boundary_loss, object_loss  # noqa: E402
from ssrs_nb.training import eval_epochs  # noqa: E402

NOT_MEASURED = "not measured"
PAPER = dict(epochs=50, iters=1000, milestones=[25, 35, 45], batch=10, window=256)
SIZES = {  # paper sizes (the GPU-speed table's) and the --smoke sizes
    False: dict(batch=10, window=256, scene=(2048, 2560), stride=32, eval_batch=16, sgo_size=1024, tiles=4,
                loader_batches=20, sam="vit_h", points_per_side=32, sgo_tiles=16),
    True: dict(batch=2, window=32, scene=(96, 128), stride=16, eval_batch=8, sgo_size=128, tiles=2,
               loader_batches=4, sam="tiny", points_per_side=4, sgo_tiles=4),
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


def compile_counts() -> tuple:
    "Dynamo's running totals: (graphs compiled, graph breaks, CUDA-graph skips), for the fast rows' notes."
    from torch._dynamo.utils import counters
    return (counters["stats"]["unique_graphs"], sum(counters["graph_break"].values()), counters["inductor"]["cudagraph_skips"])


def fake_batch(B, w, C, dev, seed=0):
    "A training batch like `WindowDataset`'s: image, label, SGO (blocks of 16 px, ids 1…), SGB (block edges)."
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij")
    sgo = (yy // 16 * ((w + 15) // 16) + xx // 16 + 1).expand(B, w, w).contiguous()
    sgb = ((yy % 16 == 0) | (xx % 16 == 0)).to(torch.uint8).mul(255).expand(B, w, w).contiguous()
    return {"image": torch.rand(B, 3, w, w, generator=g).to(dev), "label": torch.randint(0, C, (B, w, w), generator=g).to(dev),
            "sgo": sgo.to(dev), "sgb": sgb.to(dev)}


class Bench:
    def __init__(self, a, head=None):
        self.a, self.s = a, SIZES[a.smoke]
        self.dev = get_device(a.device)
        self.clock = Clock(self.dev, a.steps, a.warmup)
        self.rows, self.sel = [], re.compile(a.rows) if a.rows else None
        self.C = 6
        self.head, self.t0 = head or {}, time.time()

    def row(self, key, what, value=None, unit="", goal="", status="measured", note=""):
        r = dict(key=key, what=what, value=value, unit=unit, goal=goal, status=status, note=note)
        self.rows.append(r)
        v = "—" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))
        print(f"{key:<44}{v:>12} {unit:<10}{status:<24}{goal:<28}{note}", flush=True)
        self.save()
        return r

    def save(self):
        "The JSON so far (after every row: a run stopped by its time limit keeps what it measured)."
        if self.a.out: atomic_write_json(self.a.out, dict(self.head, seconds=round(time.time() - self.t0, 1), rows=self.rows))

    def want(self, key): return self.sel is None or bool(self.sel.search(key))

    def over_budget(self) -> bool: return self.a.budget_s is not None and time.time() - self.t0 > self.a.budget_s

    def done(self, key): return any(r["key"] == key for r in self.rows)

    @contextlib.contextmanager
    def section(self, rows: dict, unit=""):
        """Run one measurement that gives the rows `rows` ({key: what}): past `--budget-s` they read "not measured (time
        budget)"; an error (a compile failure, out of memory) is recorded in the rows it left unwritten, and the run goes on."""
        if not any(map(self.want, rows)):
            for k, w in rows.items():
                if not self.done(k): self.row(k, w, None, unit, status="skipped (--rows)")
            yield False; return
        if self.over_budget():
            for k, w in rows.items(): self.row(k, w, None, unit, status=f"{NOT_MEASURED} (time budget)",
                                               note=f"--budget-s {self.a.budget_s} spent before this row")
            yield False; return
        try: yield True
        except Exception as e:                            # recorded, printed in full, and the next rows still run
            traceback.print_exc()
            msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            for k, w in rows.items():
                if not self.done(k): self.row(k, w, None, unit, status="error", note=msg)
            if self.dev.type == "cuda": torch.cuda.empty_cache()

    def get(self, key):
        r = next((r for r in self.rows if r["key"] == key), None)
        return r["value"] if r and r["status"] == "measured" else None

    def gpu_only(self, key, what, unit, goal=""):
        if self.dev.type != "cuda": self.row(key, what, None, unit, goal, NOT_MEASURED, "needs a CUDA GPU"); return True
        return False

    # --- the training step -------------------------------------------------------------------------------------
    STEP_GRID = [(bb, prec, losses, path) for bb in ("resnet18", "swin") for prec in ("fp32", "bf16")
                 for losses in ("seg", "seg+obj+bdy") for path in ("eager", "fast")]
    TABLE_STEPS = [("resnet18", "bf16", "seg+obj+bdy", "fast"), ("resnet18", "bf16", "seg+obj+bdy", "eager"),
                   ("swin", "bf16", "seg+obj+bdy", "fast"), ("swin", "bf16", "seg+obj+bdy", "eager")]

    def steps(self, which):
        "The step rows: `'table'` (the four the GPU-speed table and the estimates need), or `'rest'` of the grid."
        grid = self.TABLE_STEPS if which == "table" else [c for c in self.STEP_GRID if c not in self.TABLE_STEPS]
        for c in grid: self.step_row(*c)

    def step_row(self, bb, prec, losses, path):
        from ssrs_nb.unetformer import create_model
        B, w = self.s["batch"], self.s["window"]
        key = f"step/{bb}/{prec}/{losses}/{path}"
        what = f"UNetFormer-{bb} training step, {prec}, {losses}, {path}"
        goal = {"resnet18": "≤ 10 ms", "swin": "≤ 60 ms"}[bb] if path == "fast" and prec == "bf16" else ""
        if not self.want(key): self.row(key, what, None, "s", goal, "skipped (--rows)"); return
        if bb == "swin" and self.a.smoke and not self.a.smoke_swin:
            self.row(key, what, None, "s", goal, "skipped (--smoke)", "the Swin model: run without --smoke (or --smoke-swin)")
            return
        with self.section({key: what}, "s") as go:
            if not go: return
            torch.manual_seed(0)
            model = create_model(bb, self.C).to(self.dev).train()
            use = dict(use_obj=losses != "seg", use_bdy=losses != "seg")
            adt = torch.bfloat16 if prec == "bf16" else None
            opt = make_sgd(model.parameters(), lr=1e-3, device=self.dev)
            st = TrainStep(model, opt, amp_dtype=adt, compile=self.a.compile if path == "fast" else "off", device=self.dev,
                           **use)
            fn = st
            note = (f"ssrs_nb.fast.TrainStep, compiled={st.compiled} (mode {st.mode}), channels_last={st.channels_last}"
                    if path == "fast" else "ssrs_nb.fast.TrainStep, compile='off' (the eager step)")
            batch = fake_batch(B, w, self.C, self.dev)
            c0 = compile_counts()
            t = self.clock(lambda: fn(batch))
            if path == "fast" and st.compiled:       # one graph, no break, no CUDA-graph skip is what the goal needs
                g, br, sk = (b - a for a, b in zip(c0, compile_counts(), strict=True))
                note += f"; {g} graph(s), {br} graph break(s), {sk} CUDA-graph skip(s)"
            self.row(key, what, t, "s", goal, note=f"{note}; batch {B}, {w}²")
        model = opt = fn = None
        if self.dev.type == "cuda": torch.cuda.empty_cache()

    # --- the losses alone -------------------------------------------------------------------------------------
    def losses(self):
        B, w = self.s["batch"], self.s["window"]
        b = fake_batch(B, w, self.C, self.dev)
        pred = torch.randn(B, self.C, w, w, device=self.dev, requires_grad=True)
        def eager():
            (object_loss(pred, b["sgo"]) + 0.1 * boundary_loss(pred, b["sgb"])).backward()
        fused = lambda p: _obj_term(p, b["sgo"], 50) + 0.1 * _bdy_term(p, b["sgb"], 3, 5, "agnostic")
        if resolve_compile(self.a.compile, self.dev): fused = torch.compile(fused, dynamic=False)
        def fast(): fused(pred).backward()
        for key, fn, what in (("losses/eager", eager, "L_obj + L_bdy fwd+bwd, losses.object_loss/boundary_loss"),
                              ("losses/fast", fast, "L_obj + L_bdy fwd+bwd, the same terms compiled (torch.compile)")):
            if not self.want(key): self.row(key, what, None, "s", status="skipped (--rows)"); continue
            with self.section({key: what}, "s") as go:
                if go: self.row(key, what, self.clock(fn), "s", note=f"batch {B}, {w}², {self.C} classes")
        self.share_row()

    def share_row(self):
        step = self.get("step/resnet18/bf16/seg+obj+bdy/fast")
        lf = self.get("losses/fast")
        if step and lf: self.row("losses/share_of_step", "fast losses / R18 bf16 fast step", 100 * lf / step, "%", "≤ 5 %")
        else:
            self.row("losses/share_of_step", "fast losses / R18 bf16 fast step", None, "%", "≤ 5 %", NOT_MEASURED,
                     "needs both rows")

    # --- the sliding window -----------------------------------------------------------------------------------
    WINDOW_ROWS = ("window/bare_forward", "window/sliding", "window/sliding_whole", "window/labels", "window/labels_vs_probs",
                   "window/sliding_vs_bare",
                   "window/banded_vs_whole", "window/peak_mem_scene", "window/peak_mem_2x_scene")

    def n_windows(self) -> int:
        (H, W), win, st = self.s["scene"], self.s["window"], self.s["stride"]
        return len(window_starts(H, win, st)) * len(window_starts(W, win, st))

    def window(self):
        from ssrs_nb.unetformer import create_model
        (H, W), win, st, bs = self.s["scene"], self.s["window"], self.s["stride"], self.s["eval_batch"]
        amp = self.dev.type == "cuda"
        torch.manual_seed(0)
        model = create_model("resnet18", self.C).to(self.dev).eval()
        n = self.n_windows()
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
        tl = self.clock(lambda: sliding_window_predict(model, img, self.C, win, st, bs, amp=amp, band_rows=band,
                                                       output="labels").numpy(), **reps)
        tp = self.clock(lambda: slide(band).argmax(0).to(torch.uint8).numpy(), **reps)
        self.row("window/labels", "sliding_window_predict(output='labels'): the arg-max on the device, " + what, tl, "s")
        self.row("window/labels_vs_probs", "scores + arg-max on the host (evaluation before) ÷ labels on the device", tp / tl,
                 "×", "≥ 1", note=f"{tp:.3g} s → {tl:.3g} s per scene")
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

    # --- the data loader --------------------------------------------------------------------------------------
    def tiles(self, tmp):
        "Two generated Vaihingen tiles with their SGO/SGB maps (in `tmp`)."
        from ssrs_nb.data import list_tiles
        from ssrs_nb.reference import gt_sgo_sgb_maps
        from ssrs_nb.synthetic import make_synthetic_vaihingen
        size = max(2 * self.s["window"], 512 if not self.a.smoke else 128)
        make_synthetic_vaihingen(tmp / "v", ids=[1, 3], size=size)
        tiles = list_tiles("vaihingen", tmp / "v", "train", ids=[1, 3])
        gt_sgo_sgb_maps(tiles, tmp / "sgo")
        return tiles

    def loader(self, tmp, tiles):
        from ssrs_nb.data import WindowDataset
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
        self.loader_ratio_row()

    def loader_ratio_row(self):
        B, rate = self.s["batch"], self.get("loader/samples_per_s")
        step = self.get("step/resnet18/bf16/seg+obj+bdy/fast") or self.get("step/resnet18/fp32/seg+obj+bdy/fast")
        what = "loader samples/s ÷ samples/s the R18 fast step consumes"
        if step and rate: self.row("loader/vs_step", what, rate * step / B, "×", "≥ 1 (loader never the bottleneck)")
        else: self.row("loader/vs_step", what, None, "×", "≥ 1", NOT_MEASURED, "needs the step row")

    def _wall(self, fn):
        if self.dev.type == "cuda": torch.cuda.synchronize()
        t = time.perf_counter(); fn()
        if self.dev.type == "cuda": torch.cuda.synchronize()
        return time.perf_counter() - t

    # --- SGO/SGB generation -----------------------------------------------------------------------------------
    def sgo_image(self, tiles) -> np.ndarray:
        "A `sgo_size`² image tiled from a generated Vaihingen tile."
        from ssrs_nb.data import read_image
        n = self.s["sgo_size"]
        img = read_image(tiles[0].image_path)
        return np.ascontiguousarray(np.tile(img, (n // img.shape[0] + 1, n // img.shape[1] + 1, 1))[:n, :n])

    def sgo(self, img, which):
        "SGO/SGB rows: `'per_image'` (superpixels and SAM, one image) or `'speedup'` (superpixels, processes vs one)."
        from ssrs_nb.sam import SuperpixelGenerator, generate_sgo_sgb
        n = img.shape[0]
        reps = dict(n=1 if not self.a.smoke else 2, warmup=0 if not self.a.smoke else 1)
        if which == "speedup":
            with self.section({"sgo/superpixel_speedup": "superpixel generate_dataset, workers vs one process"}, "×") as go:
                if go: self._speedup(img, n)
            return
        with self.section({"sgo/superpixel_per_image": "superpixel SGO/SGB"}, "s") as go:
            if go:
                t = self.clock(lambda: generate_sgo_sgb(img, SuperpixelGenerator(), crop=512), **reps)
                self.row("sgo/superpixel_per_image", f"superpixel SGO/SGB, one {n}² image, one process", t, "s")
        with self.section({"sgo/sam_per_image": "SAM automatic masks", "sgo/sam_encoder": "SAM image encoder"}, "s") as go:
            if go: self._sam(img, n, reps)

    def _speedup(self, img, n):
        "`generate_dataset` over `sgo_tiles` images with one process per core against `workers=0`: wall-time ratio."
        import cv2

        from ssrs_nb.maps import generate_dataset
        from ssrs_nb.sam import SuperpixelGenerator
        k, cores = self.s["sgo_tiles"], self.a.workers_sgo or os.cpu_count() or 1
        with tempfile.TemporaryDirectory() as d:
            paths = []
            for i in range(k):                          # distinct images: each tile shifted, so no two are alike
                p = Path(d) / f"tile{i:02d}.png"
                cv2.imwrite(str(p), np.roll(img, 37 * i, axis=(0, 1))[..., ::-1]); paths.append(p)
            one = self._wall(lambda: generate_dataset(paths, Path(d) / "one", SuperpixelGenerator(), progress=False))
            par = self._wall(lambda: generate_dataset(paths, Path(d) / "par", SuperpixelGenerator(), progress=False,
                                                      workers=cores))
            same = all((Path(d) / "one" / q.name).read_bytes() == (Path(d) / "par" / q.name).read_bytes()
                       for q in sorted((Path(d) / "one").glob("*_sg[ob].png")))
        self.row("sgo/superpixel_speedup", f"superpixel generate_dataset, {k} images of {n}², {cores} worker processes "
                 f"vs one process", one / par, "×", f"≥ {0.7 * cores:.3g} (0.7 × {cores} cores)",
                 note=f"{one:.1f} s → {par:.1f} s; maps byte-identical: {same}"
                      + ("; smoke sizes: starting the processes dominates" if self.a.smoke else ""))

    def _sam(self, img, n, reps):
        from ssrs_nb.generators import generator_from_model
        from ssrs_nb.sam import build_tiny_sam
        if self.s["sam"] == "tiny":
            sam, label = build_tiny_sam(img_size=256).to(self.dev), "tiny random SAM (build_tiny_sam)"
        else:
            from segment_anything import sam_model_registry
            torch.manual_seed(0); sam, label = sam_model_registry["vit_h"]().to(self.dev).eval(), "SAM ViT-H, random weights"
        gen = generator_from_model("sam", sam, points_per_side=self.s["points_per_side"])
        t = self.clock(lambda: gen.generate(img), **reps)
        self.row("sgo/sam_per_image",
                 f"{label}, automatic masks (paper settings, {self.s['points_per_side']}² points), one {n}² image",
                 t, "s", "GPU never waits")
        x = torch.rand(1, 3, sam.image_encoder.img_size, sam.image_encoder.img_size, device=self.dev)
        with torch.inference_mode(): te = self.clock(lambda: sam.image_encoder(x), n=3, warmup=1)
        self.row("sgo/sam_encoder", f"{label} image encoder, one {sam.image_encoder.img_size}² crop", te, "s")

    # --- estimates ---------------------------------------------------------------------------------------------
    def estimates(self, n_windows):
        s, p = self.s, PAPER
        scale = "" if not self.a.smoke else " (smoke sizes: not the paper's)"
        tw = self.get("window/labels") or self.get("window/sliding")      # evaluation's path: labels on the device
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
        else:
            self.row("estimate/run", what, None, "min", "≤ 12 min", NOT_MEASURED, "needs the R18 bf16 fast step and window rows")
        from ssrs_nb.paper import paper_grid
        runs = paper_grid()
        ts = [run_s(rn.backbone, rn.dataset, ev_new) for rn in runs]
        what = f"the paper's grid ({len(runs)} runs: Tables I–IV, 3 seeds, R18 and Swin, both datasets)"
        if all(ts): self.row("estimate/grid", what, sum(ts) / 3600, "GPU-h", "≤ 10 GPU-h", "estimate",
                             f"Swin evaluation scaled from R18 by the step ratio{scale}")
        else:
            self.row("estimate/grid", what, None, "GPU-h", "≤ 10 GPU-h", NOT_MEASURED,
                     "needs the Swin and R18 bf16 fast step rows")


# the GPU-speed table, row by row: (its words, the row key that answers it)
GPU_TABLE = [
    ("UNetFormer-R18 training step + L_obj + L_bdy, bf16, eager", "step/resnet18/bf16/seg+obj+bdy/eager"),
    ("UNetFormer-R18 training step + L_obj + L_bdy, bf16, fast path", "step/resnet18/bf16/seg+obj+bdy/fast"),
    ("Swin UNetFormer training step, bf16, eager", "step/swin/bf16/seg+obj+bdy/eager"),
    ("Swin UNetFormer training step, bf16, fast path", "step/swin/bf16/seg+obj+bdy/fast"),
    ("L_obj + L_bdy forward + backward, fused", "losses/fast"),
    ("… as a share of the R18 fast step", "losses/share_of_step"),
    ("sliding window: bare forward time / sliding-window time", "window/sliding_vs_bare"),
    ("evaluation per scene: scores + host arg-max ÷ labels on the device", "window/labels_vs_probs"),
    ("sliding window: peak GPU memory, one scene", "window/peak_mem_scene"),
    ("sliding window: peak GPU memory, a scene twice as tall", "window/peak_mem_2x_scene"),
    ("data loader samples/s ÷ what the R18 fast step consumes", "loader/vs_step"),
    ("superpixel SGO/SGB: speed-up with one process per core", "sgo/superpixel_speedup"),
    ("SAM automatic mask generator, one image", "sgo/sam_per_image"),
    ("SAM image encoder, one crop", "sgo/sam_encoder"),
    ("one whole R18 paper run (estimate)", "estimate/run"),
    ("the paper's whole grid (estimate)", "estimate/grid"),
]


def show(paths) -> str:
    "The GPU-speed table from recorded JSON files (`--out` of earlier runs), as Markdown: one value column per file."
    import json
    runs = [json.loads(Path(p).read_text()) for p in paths]
    if not runs: return "no recorded run: every row of the GPU-speed table reads \"not measured\"\n"
    cell = lambda r, key: next(((f"{x['value']:.4g} {x['unit']}" if x["value"] is not None
                                 else "—" if x["status"].startswith("skipped") else x["status"])
                                + (f" ({x['status']})"
                                   if x["status"] not in ("measured", NOT_MEASURED) and x["value"] is not None else "")
                                for x in r["rows"] if x["key"] == key), NOT_MEASURED)
    goal = lambda key: next((x["goal"] for r in runs for x in r["rows"] if x["key"] == key and x["goal"]), "")
    head = [f"{r['device']}, torch {r['torch']}, {r['date'][:10]}{' (smoke sizes)' if r.get('smoke') else ''}" for r in runs]
    lines = ["| row | goal | " + " | ".join(head) + " |", "|---|---|" + "---|" * len(runs)]
    lines += [f"| {what} | {goal(key)} | " + " | ".join(cell(r, key) for r in runs) + " |" for what, key in GPU_TABLE]
    return "\n".join(lines) + "\n"


DERIVED = ("losses/share_of_step", "loader/vs_step", "estimate/run", "estimate/grid")


def merge(paths, out, smoke=False) -> dict:
    """One table from several recorded runs on the same machine (a lease cut into calls): each row is taken from the
    first run that measured it (else from the first run), and the rows derived from others (shares, ratios, estimates)
    are computed again from the merged rows. The header lists the runs it came from."""
    import json
    runs = [json.loads(Path(p).read_text()) for p in paths]
    if len({r["device"] for r in runs}) != 1:
        raise SystemExit(f"--merge: runs on different devices: {[r['device'] for r in runs]}")
    keys = list(dict.fromkeys(x["key"] for r in runs for x in r["rows"]))
    pick = lambda k: next((x for r in runs for x in r["rows"] if x["key"] == k and x["status"] == "measured"),
                          next(x for r in runs for x in r["rows"] if x["key"] == k))
    a = argparse.Namespace(smoke=smoke, device="cpu", steps=runs[0]["steps"], warmup=runs[0]["warmup"], rows=None,
                           out=None, budget_s=None)
    b = Bench(a, head=dict(runs[0], merged_from=[f"{Path(p).name} ({r['date']}, {r['seconds']} s)" for p, r in zip(paths, runs)]))
    b.head.pop("rows", None)
    b.rows = [pick(k) for k in keys if k not in DERIVED]
    b.share_row(); b.loader_ratio_row(); b.estimates(b.n_windows())
    b.rows.sort(key=lambda x: keys.index(x["key"]))
    res = dict(b.head, seconds=round(sum(r["seconds"] for r in runs), 1), rows=b.rows)
    if out: atomic_write_json(out, res)
    return res


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
    ap.add_argument("--workers-sgo", type=int, default=None, help="processes for the superpixel speed-up row (default: cores)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="seconds after which the remaining rows read 'not measured (time budget)' (a lent GPU's lease)")
    ap.add_argument("--show", nargs="*", default=None, metavar="JSON",
                    help="print the GPU-speed table from recorded runs (their --out files) and exit")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                    help="write to --out one run made of recorded runs on the same machine, derived rows recomputed")
    a = ap.parse_args(argv)
    if a.merge is not None: merge(a.merge, a.out, a.smoke); return None
    if a.show is not None: print(show(a.show), end=""); return None
    a.steps = a.steps or (3 if a.smoke else 20)
    a.warmup = a.warmup if a.warmup is not None else (1 if a.smoke else 5)
    b = Bench(a)
    dev = b.dev
    b.head = dict(device=device_name(dev), device_type=dev.type, torch=torch.__version__, smoke=a.smoke,
                  date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), steps=a.steps,
                  warmup=a.warmup, compile=a.compile, budget_s=a.budget_s,
                  timer="CUDA events" if dev.type == "cuda" else "perf_counter", host_cpus=os.cpu_count())
    print(f"# GPU-speed benchmark on {b.head['device']}, torch {b.head['torch']}, {b.head['date']}"
          f"{' (--smoke sizes)' if a.smoke else ''}; median of {a.steps} after {a.warmup} warm-up ({b.head['timer']})")
    print(f"{'row':<44}{'value':>12} {'unit':<10}{'status':<24}{'goal':<28}note")
    # the rows of the GPU-speed table and the estimates first; the rest of the step grid last (a budget cuts that first)
    b.steps("table"); b.losses()
    with b.section({k: "sliding window" for k in b.WINDOW_ROWS}) as go:
        if go: b.window()
    data_rows = {k: "needs the generated tiles" for k in ("loader/samples_per_s", "loader/vs_step", "sgo/superpixel_per_image",
                                                          "sgo/sam_per_image", "sgo/sam_encoder", "sgo/superpixel_speedup")}
    img = None
    with tempfile.TemporaryDirectory() as d:
        with b.section(data_rows) as go:               # two generated tiles and their maps: seconds
            if go:
                tiles = b.tiles(Path(d))
                with b.section({"loader/samples_per_s": "data loader", "loader/vs_step": "data loader"}) as go:
                    if go: b.loader(Path(d), tiles)
                img = b.sgo_image(tiles)
    if img is not None: b.sgo(img, "per_image")
    with b.section({"estimate/run": "one paper run", "estimate/grid": "the paper's grid"}) as go:
        if go: b.estimates(b.n_windows())
    if img is not None: b.sgo(img, "speedup")          # CPU work (minutes at paper sizes): after the GPU's rows
    b.steps("rest")
    b.save()
    n_err = sum(r["status"] == "error" for r in b.rows)
    print(f"# {len(b.rows)} rows ({n_err} errors) in {round(time.time() - b.t0, 1)} s"
          + (f"; written to {a.out}" if a.out else ""))
    return dict(b.head, rows=b.rows)


if __name__ == "__main__":
    main()
