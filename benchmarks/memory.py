"""Peak memory of a training run against the number of training scenes: 8 and 48 Vaihingen-format scenes of 2048²
(with SGO/SGB maps), decoded tiles held in RAM (`tile_cache=None`, the default) or memory-mapped from the on-disk
cache (`tile_cache=DIR`). Each run is a fresh process (ResNet-18 UNetFormer, 1 epoch of 6 iterations, batch 4,
256² windows, the object and boundary losses on, one 512² test tile); its peak RSS is `ru_maxrss`.

    python benchmarks/memory.py          # prints a table and the 48/8 ratios (goal with the cache: <= 1.15)
    python benchmarks/memory.py --ddp    # also 48 scenes on 2 DDP processes (gloo, CPU): peak RSS of the larger one

One scene is generated and hard-linked under 47 other names (each name is its own tile to the dataset and to the
cache, which is keyed by path): decoding and memory are per tile, generation time is not what is measured.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ssrs_nb.data import list_tiles
from ssrs_nb.reference import gt_sgo_sgb_maps
from ssrs_nb.synthetic import make_synthetic_vaihingen

N_MAX, TEST_ID = 48, 99
FOLDERS = ("top", "gts_for_participants", "gts_eroded_for_participants")

def _name(folder, i): return f"top_mosaic_09cm_area{i}" + ("_noBoundary" if folder.startswith("gts_eroded") else "") + ".tif"

def make_data(root: Path) -> None:
    "One 2048² training scene linked as ids 1…48, one 512² test scene (id 99), and GT-derived SGO/SGB maps for all."
    make_synthetic_vaihingen(root, size=2048, ids=[1])
    make_synthetic_vaihingen(root / "small", size=512, ids=[TEST_ID])
    for f in FOLDERS:
        os.replace(root / "small" / f / _name(f, TEST_ID), root / f / _name(f, TEST_ID))
        for i in range(2, N_MAX + 1): os.link(root / f / _name(f, 1), root / f / _name(f, i))
    gt_sgo_sgb_maps(list_tiles("vaihingen", root, "train", ids=[1, TEST_ID]), root / "sgo")
    for suffix in ("_sgo.png", "_sgb.png"):
        for i in range(2, N_MAX + 1):
            os.link(root / "sgo" / f"top_mosaic_09cm_area1{suffix}", root / "sgo" / f"top_mosaic_09cm_area{i}{suffix}")

RUN = """
import json, resource, sys
from ssrs_nb.training import train
cfg = json.loads(sys.argv[1])
train(cfg)
print("PEAK_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""

DDP = """
import resource, subprocess, sys
subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", sys.argv[1],
                sys.argv[2]], check=True)
print("PEAK_MB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)   # the largest process of the job
"""

def peak_mb(root: Path, n: int, cache, out: Path, ddp: bool = False) -> float:
    "Peak RSS (MB) of one training run on `n` training scenes in a fresh process (`ddp`: the larger of 2 DDP ranks)."
    cfg = dict(dataset="vaihingen", data_root=str(root), sgo_root=str(root / "sgo"), out_dir=str(out),
               train_ids=list(range(1, n + 1)), test_ids=[TEST_ID], epochs=1, iters_per_epoch=6, batch_size=4,
               window=256, milestones=[], eval_stride=256, num_workers=0, device="cpu", pretrained=False,
               progress=False, tile_cache=str(cache) if cache else None, threads=1)
    script = out.parent / "bench_train.py"; script.write_text(RUN)
    cmd = [sys.executable, "-c", DDP, str(script), json.dumps(cfg)] if ddp else [sys.executable, str(script), json.dumps(cfg)]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if r.returncode: raise RuntimeError(r.stderr[-3000:])
    return float(r.stdout.rsplit("PEAK_MB", 1)[1])

def main(ddp: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as d:
        root, t0 = Path(d) / "data", time.time()
        make_data(root)
        print(f"data: {N_MAX} training scenes of 2048² (+ SGO/SGB), one 512² test scene ({time.time() - t0:.0f} s)")
        res = {}
        for mode in ("ram", "cache"):
            for n in (8, N_MAX):
                t0 = time.time()
                res[(mode, n)] = peak_mb(root, n, Path(d) / "cache" if mode == "cache" else None, Path(d) / f"run_{mode}_{n}")
                print(f"  {mode:5s} {n:2d} scenes: peak RSS {res[(mode, n)]:7.0f} MB ({time.time() - t0:.0f} s)")
        if ddp:
            for mode in ("ram", "cache"):
                res[(f"ddp_{mode}", N_MAX)] = peak_mb(root, N_MAX, Path(d) / "cache" if mode == "cache" else None,
                                                      Path(d) / f"run_ddp_{mode}", ddp=True)
                print(f"  {mode:5s} {N_MAX} scenes, 2 DDP processes: peak RSS of the larger "
                      f"{res[(f'ddp_{mode}', N_MAX)]:7.0f} MB (one process: {res[(mode, N_MAX)]:.0f} MB)")
        cache_mb = sum(f.stat().st_size for f in (Path(d) / "cache").rglob("*.npy")) / 2**20
    ratios = {m: res[(m, N_MAX)] / res[(m, 8)] for m in ("ram", "cache")}
    print(f"peak RSS 48/8 scenes: in RAM ×{ratios['ram']:.2f}, memory-mapped cache ×{ratios['cache']:.2f} (goal <= 1.15); "
          f"cache on disk {cache_mb:.0f} MB for {N_MAX} scenes ({cache_mb / N_MAX:.1f} MB each)")
    return dict(peak_mb={f"{m}_{n}": v for (m, n), v in res.items()}, ratios=ratios, cache_mb=cache_mb)

if __name__ == "__main__":
    main(ddp="--ddp" in sys.argv)
