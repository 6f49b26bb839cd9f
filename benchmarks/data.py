"""Data pipeline: the vectorised Vaihingen colour decoding and SGO renumbering against the naive (official-style)
per-colour / per-object loops, the window sampler's samples/s, and that rate against the UNetFormer-R18 training
step it feeds (batch 10, 256×256; goal: the sampler ≥ 5× faster than the step).

    python benchmarks/data.py            # prints a table; `main()` returns the rows
"""
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ssrs_nb.core import imread
from ssrs_nb.data import WindowDataset, _decode_vaihingen, list_tiles, renumber_sgo
from ssrs_nb.reference import decode_vaihingen_official as naive_decode
from ssrs_nb.reference import gt_sgo_sgb_maps as write_maps
from ssrs_nb.reference import renumber_sgo_naive as naive_renumber
from ssrs_nb.synthetic import make_synthetic_vaihingen


def best_of(f, repeat=5, number=1):
    "Best wall time (s) of `number` calls of `f` over `repeat` runs (a shared machine: the minimum is the signal)."
    f()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number): f()
        ts.append((time.perf_counter() - t0) / number)
    return min(ts)


def sampler_rate(ds, n):
    "Samples/s of `ds[i]` in this process (what one DataLoader worker delivers)."
    ds[0]
    return n / best_of(lambda: [ds[i] for i in range(n)], repeat=3)


def unetformer_step_rate(batch=10, size=256, steps=3):
    "Samples/s consumed by one UNetFormer-R18 SGD training step (forward main+aux, CE, backward, step), or None."
    try:
        from ssrs_nb.unetformer import create_model
    except ImportError:
        return None
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=6).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x, y = torch.rand(batch, 3, size, size), torch.randint(0, 6, (batch, size, size))
    def step():
        main, aux = model(x)
        loss = (torch.nn.functional.cross_entropy(main, y, ignore_index=255)
                + 0.4 * torch.nn.functional.cross_entropy(aux, y, ignore_index=255))
        opt.zero_grad(); loss.backward(); opt.step()
    return batch / best_of(step, repeat=steps)


def main(n_samples: int = 300, tile=(1000, 1200)):
    rows = []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        ids = make_synthetic_vaihingen(d / "vai", n_tiles=4, size=tile, seed=0)
        tiles = list_tiles("vaihingen", d / "vai", "train", ids=ids["train"], eroded=False)
        (d / "sgo").mkdir(); write_maps(tiles, d / "sgo")

        rgb = imread(tiles[0].label_path)
        assert np.array_equal(_decode_vaihingen(rgb, "x"), naive_decode(rgb))
        tv, tn = best_of(lambda: _decode_vaihingen(rgb, "x")), best_of(lambda: naive_decode(rgb))
        rows.append((f"Vaihingen colour label → ids ({tile[0]}×{tile[1]})", "ms", tv * 1e3, tn * 1e3, tn / tv))

        sgo = imread(d / "sgo" / f"{tiles[0].stem}_sgo.png")
        wins = [sgo[y:y + 256, x:x + 256] for y, x in np.random.default_rng(0).integers(0, min(tile) - 256, (20, 2))]
        n_obj = np.mean([len(np.unique(w)) for w in wins])
        assert all(np.array_equal(renumber_sgo(w), naive_renumber(w)) for w in wins)
        tv = best_of(lambda: [renumber_sgo(w) for w in wins]) / len(wins)
        tn = best_of(lambda: [naive_renumber(w) for w in wins]) / len(wins)
        rows.append((f"SGO renumber, 256² window (~{n_obj:.0f} objects)", "ms", tv * 1e3, tn * 1e3, tn / tv))

        rng = np.random.default_rng(1)                                     # SAM-like density: 16×16 px segments
        dense = [np.kron(rng.permutation(5000)[:256].reshape(16, 16) + 1, np.ones((16, 16), np.int64)).astype(np.uint16)
                 for _ in range(20)]
        assert all(np.array_equal(renumber_sgo(w), naive_renumber(w)) for w in dense)
        tv = best_of(lambda: [renumber_sgo(w) for w in dense]) / len(dense)
        tn = best_of(lambda: [naive_renumber(w) for w in dense]) / len(dense)
        rows.append(("SGO renumber, 256² window (256 objects)", "ms", tv * 1e3, tn * 1e3, tn / tv))

        ds = WindowDataset(tiles, sgo_dir=d / "sgo", window=256, length=n_samples, seed=0, progress=False)
        rate = sampler_rate(ds, n_samples)
        rows.append(("WindowDataset item (image, label, SGO, SGB, augmented)", "samples/s", rate, None, None))
        step = unetformer_step_rate()
        if step is None:
            rows.append(("UNetFormer-R18 train step, batch 10, 256² (ssrs_nb.unetformer missing)", "samples/s", None, None, None))
        else:
            rows.append(("UNetFormer-R18 train step, batch 10, 256²", "samples/s", step, None, None))
            rows.append(("sampler (1 process) / training step it feeds", "ratio", rate / step, None, None))

    fmt = lambda v: "" if v is None else f"{v:,.2f}"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU only" if not torch.cuda.is_available()
          else f"torch {torch.__version__}, GPU {torch.cuda.get_device_name()} (step timed on CPU)")
    print(f"{'what':<64} {'unit':>9} {'vectorised':>11} {'naive':>10} {'ratio':>8}")
    for what, unit, v, n, r in rows:
        print(f"{what:<64} {unit:>9} {fmt(v):>11} {fmt(n):>10} {'' if r is None else f'{r:.1f}×':>8}")
    return rows


if __name__ == "__main__":
    main()
