"""Peak memory of `ssrs_nb.predict.predict_raster` does not grow with the scene: a 2048² and an 8192² GeoTIFF (16×
the pixels) predicted in separate processes, each reporting its peak RSS (and CUDA memory) and its RSS after the
model is built, so the growth due to the scene is visible. Run: `python benchmarks/predict.py` (add `--device cuda`
on a GPU machine; `--sizes 2048 16384` for a larger contrast)."""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_scene(path, size, block=1024):
    "A size² 3-band uint8 GeoTIFF (tiled, deflate) written block by block from one generated 1024² Vaihingen-like tile."
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    from ssrs_nb.synthetic import _vaihingen_scene
    tile, _ = _vaihingen_scene(np.random.default_rng(0), block, block)
    tile = np.moveaxis(tile, -1, 0)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32632",
                       transform=from_origin(496000.0, 5420000.0, 0.09, 0.09), tiled=True, compress="deflate") as dst:
        for y in range(0, size, block):
            for x in range(0, size, block):
                h, w = min(block, size - y), min(block, size - x)
                dst.write(tile[:, :h, :w], window=Window(x, y, w, h))


def child(args):
    "Predict one scene; print one JSON line of memory and time figures."
    import torch

    from ssrs_nb.core import get_device
    from ssrs_nb.predict import predict_raster
    from ssrs_nb.unetformer import create_model
    torch.set_num_threads(args.threads)
    dev = get_device(args.device)
    torch.manual_seed(0); model = create_model(args.backbone, 6).eval().to(dev)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.time()
    predict_raster(model, args.child, Path(args.child).with_suffix(".pred.tif"), 6, window=args.window,
                   stride=args.stride, batch_size=args.batch_size, block=args.block, progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None
    print(json.dumps(dict(rss_after_model_mb=round(base), peak_rss_mb=round(peak), peak_gpu_mb=gpu and round(gpu),
                          seconds=round(time.time() - t0, 1))))


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192])
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--stride", type=int, default=256)
    p.add_argument("--block", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child: return child(args)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for s in args.sizes:
            scene = Path(d) / f"scene_{s}.tif"
            write_scene(scene, s)
            cmd = [sys.executable, __file__, "--child", str(scene)] + [f"--{k.replace('_', '-')}={v}"
                                                                        for k, v in vars(args).items()
                                                                        if k not in ("sizes", "child")]
            out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
            if out.returncode: sys.exit(out.stderr)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append((s, r)); scene.unlink()
            print(f"{s}² px ({s * s / 1e6:.0f} Mpx, {scene.name}): peak RSS {r['peak_rss_mb']} MB "
                  f"(after model build {r['rss_after_model_mb']} MB, +{r['peak_rss_mb'] - r['rss_after_model_mb']} MB "
                  f"while predicting), peak GPU {r['peak_gpu_mb']} MB, {r['seconds']} s", flush=True)
    (s0, a), (s1, b) = rows[0], rows[-1]
    print(f"ratio {s1}² / {s0}²: pixels ×{(s1 / s0) ** 2:.0f}, peak RSS ×{b['peak_rss_mb'] / a['peak_rss_mb']:.2f}, "
          f"predicting increment +{b['peak_rss_mb'] - b['rss_after_model_mb']} MB "
          f"vs +{a['peak_rss_mb'] - a['rss_after_model_mb']} MB"
          + (f", peak GPU ×{b['peak_gpu_mb'] / a['peak_gpu_mb']:.2f}" if a["peak_gpu_mb"] else ""))


if __name__ == "__main__":
    main()
