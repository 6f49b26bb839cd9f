"benchmarks/gpu.py --smoke: every row of issue 12's table is present, measured ones are positive, GPU-only ones say so."
import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# the rows of issue 12's table, spelled out here (not imported from the script) so a dropped row fails the test
STEP_ROWS = [f"step/{b}/{p}/{l}/{k}" for b in ("resnet18", "swin") for p in ("fp32", "bf16")
             for l in ("seg", "seg+obj+bdy") for k in ("eager", "fast")]
OTHER_ROWS = ["losses/eager", "losses/fast", "losses/share_of_step",
              "window/bare_forward", "window/sliding", "window/sliding_whole", "window/sliding_vs_bare",
              "window/banded_vs_whole", "window/peak_mem_scene", "window/peak_mem_2x_scene",
              "loader/samples_per_s", "loader/vs_step",
              "sgo/superpixel_per_image", "sgo/sam_per_image", "sgo/sam_encoder",
              "estimate/run", "estimate/grid"]
GPU_ONLY = ["window/peak_mem_scene", "window/peak_mem_2x_scene"]


def test_smoke(tmp_path):
    out = tmp_path / "tmp.json"
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--smoke", "--device", "cpu", "--out", str(out)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**__import__("os").environ, **env})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    d = json.loads(out.read_text())
    rows = {x["key"]: x for x in d["rows"]}
    assert sorted(rows) == sorted(STEP_ROWS + OTHER_ROWS), set(rows) ^ set(STEP_ROWS + OTHER_ROWS)
    assert d["device_type"] == "cpu" and d["device"].startswith("CPU") and d["smoke"] is True
    for k in GPU_ONLY:
        assert rows[k]["status"] == "not measured" and rows[k]["value"] is None, rows[k]
    measured = [k for k, x in rows.items() if x["status"] in ("measured", "estimate")]
    for k in measured: assert isinstance(rows[k]["value"], float) and math.isfinite(rows[k]["value"]) and rows[k]["value"] > 0, rows[k]
    # the R18 rows are all measured in the smoke run; the Swin ones are skipped there (and say so)
    for k in STEP_ROWS:
        if "resnet18" in k: assert k in measured, rows[k]
        else: assert rows[k]["status"].startswith("skipped"), rows[k]
    for k in ("losses/eager", "losses/fast", "window/sliding", "window/bare_forward", "loader/samples_per_s",
              "sgo/superpixel_per_image", "sgo/sam_per_image", "estimate/run"):
        assert k in measured, rows[k]
    assert rows["estimate/grid"]["status"] == "not measured"          # needs the Swin step
    # the printed table names every row and the device
    for k in rows: assert k in r.stdout
    assert d["device"] in r.stdout
