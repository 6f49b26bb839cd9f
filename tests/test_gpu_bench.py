"benchmarks/gpu.py --smoke: every row of the GPU-speed table is present, measured ones are positive, GPU-only ones say so."
import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# the rows of the GPU-speed table, spelled out here (not imported from the script) so a dropped row fails the test
STEP_ROWS = [f"step/{b}/{p}/{l}/{k}" for b in ("resnet18", "swin") for p in ("fp32", "bf16")
             for l in ("seg", "seg+obj+bdy") for k in ("eager", "fast")]
OTHER_ROWS = ["losses/eager", "losses/fast", "losses/share_of_step",
              "window/bare_forward", "window/sliding", "window/sliding_whole", "window/labels", "window/labels_vs_probs",
              "window/sliding_vs_bare",
              "window/banded_vs_whole", "window/peak_mem_scene", "window/peak_mem_2x_scene",
              "loader/samples_per_s", "loader/vs_step",
              "sgo/superpixel_per_image", "sgo/superpixel_speedup", "sgo/sam_per_image", "sgo/sam_encoder",
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
    for k in measured:
        assert isinstance(rows[k]["value"], float) and math.isfinite(rows[k]["value"]) and rows[k]["value"] > 0, rows[k]
    # the R18 rows are all measured in the smoke run; the Swin ones are skipped there (and say so)
    for k in STEP_ROWS:
        if "resnet18" in k: assert k in measured, rows[k]
        else: assert rows[k]["status"].startswith("skipped"), rows[k]
    for k in ("losses/eager", "losses/fast", "window/sliding", "window/bare_forward", "loader/samples_per_s",
              "sgo/superpixel_per_image", "sgo/superpixel_speedup", "sgo/sam_per_image", "estimate/run"):
        assert k in measured, rows[k]
    assert "maps byte-identical: True" in rows["sgo/superpixel_speedup"]["note"]
    assert rows["estimate/grid"]["status"] == "not measured"          # needs the Swin step
    # the printed table names every row and the device
    for k in rows: assert k in r.stdout
    assert d["device"] in r.stdout
    # --show renders the GPU-speed table from the JSON
    shown = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--show", str(out)], capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0 and d["device"] in shown.stdout, shown.stderr
    line = next(x for x in shown.stdout.splitlines() if x.startswith("| … as a share of the R18 fast step"))
    assert f"{rows['losses/share_of_step']['value']:.4g} %" in line and "≤ 5 %" in line
    assert "| sliding window: peak GPU memory, one scene | independent of scene size | not measured |" in shown.stdout


def _load_bench():
    import importlib.util
    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "benchmarks" / "gpu.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


def test_a_failing_row_is_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    "A row that raises (a compile failure, out of memory) reads 'error' with the message; the other rows are measured."
    mod = _load_bench()
    real = mod.TrainStep
    def boom(*a, compile="auto", **k):       # the compiled step fails to build; the eager one (compile='off') works
        if compile != "off": raise RuntimeError("inductor failed (test)")
        return real(*a, compile=compile, **k)
    monkeypatch.setattr(mod, "TrainStep", boom)
    out = tmp_path / "b.json"
    mod.main(["--smoke", "--device", "cpu", "--out", str(out), "--rows", r"resnet18/bf16/seg\+obj\+bdy|losses"])
    rows = {x["key"]: x for x in json.loads(out.read_text())["rows"]}
    fast, eager = rows["step/resnet18/bf16/seg+obj+bdy/fast"], rows["step/resnet18/bf16/seg+obj+bdy/eager"]
    assert fast["status"] == "error" and fast["value"] is None and "RuntimeError: inductor failed (test)" in fast["note"]
    assert eager["status"] == "measured" and eager["value"] > 0
    assert rows["losses/fast"]["status"] == "measured"
    assert rows["losses/share_of_step"]["status"] == "not measured"          # its step row failed
    assert rows["window/sliding"]["status"] == "skipped (--rows)"


def test_time_budget(tmp_path):
    "--budget-s 0: every row reads 'not measured (time budget)' and the JSON is still written, with every row."
    out = tmp_path / "b.json"
    _load_bench().main(["--smoke", "--device", "cpu", "--out", str(out), "--budget-s", "0"])
    rows = json.loads(out.read_text())["rows"]
    assert sorted(x["key"] for x in rows) == sorted(STEP_ROWS + OTHER_ROWS)
    timed_out = [x["key"] for x in rows if x["status"] == "not measured (time budget)"]
    assert "step/resnet18/bf16/seg+obj+bdy/fast" in timed_out and "window/sliding" in timed_out and "estimate/run" in timed_out
    assert not [x for x in rows if x["status"] == "measured"]


def test_merge_recorded_calls(tmp_path):
    "Two calls of one lease merge into one run: measured rows kept as recorded, derived rows recomputed from them."
    raw = sorted((ROOT / "benchmarks" / "results" / "raw").glob("nvidia-h200-call*.json"))
    assert len(raw) == 2
    out = tmp_path / "merged.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--merge", *map(str, raw), "--out", str(out)],
                       capture_output=True, text=True, timeout=120, env={**__import__("os").environ, "CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    merged = {x["key"]: x for x in json.loads(out.read_text())["rows"]}
    measured = {}
    for p in raw:
        for x in json.loads(p.read_text())["rows"]:
            if x["status"] == "measured": measured.setdefault(x["key"], x["value"])
    for k, v in measured.items():
        if k not in ("losses/share_of_step", "loader/vs_step"): assert merged[k]["value"] == v, k
    step, lf = measured["step/resnet18/bf16/seg+obj+bdy/fast"], measured["losses/fast"]
    assert math.isclose(merged["losses/share_of_step"]["value"], 100 * lf / step)
    assert math.isclose(merged["loader/vs_step"]["value"], measured["loader/samples_per_s"] * step / 10)
    # the recorded merge in benchmarks/results is this merge
    rec = {x["key"]: x["value"] for x in json.loads((ROOT / "benchmarks" / "results" / "nvidia-h200.json").read_text())["rows"]}
    assert rec == {k: x["value"] for k, x in merged.items()}
