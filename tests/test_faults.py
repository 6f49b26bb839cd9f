"""Fault injection: long jobs never lose, mix or silently corrupt results.

Each test injects one fault the way it happens to a user (SIGKILL of a real subprocess, a second process on the same
folder, a truncated or zeroed file, a full disk through RLIMIT_FSIZE) and checks what the user sees (an error naming
the file, the value and the fix) and that nothing already made is lost.
"""
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssrs_nb.core import atomic_torch_save, imread, imwrite_png, load_checkpoint, remove_stale_temps
from ssrs_nb.maps import SETTINGS_KEY, generate_dataset, png_damage, read_sgo_sgb, sgo_sgb_paths
from ssrs_nb.sam import SuperpixelGenerator

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals, flock and rlimits")


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def _start(code: str) -> subprocess.Popen:
    "A Python subprocess running `code` (stdout piped, one line per event)."
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)


def _wait_for(cond, proc, timeout=60.0):
    t0 = time.monotonic()
    while not cond():
        if proc.poll() is not None: raise AssertionError(f"subprocess ended early: {proc.stderr.read()[-2000:]}")
        if time.monotonic() - t0 > timeout: raise AssertionError("timed out waiting for the subprocess")
        time.sleep(0.05)


def _kill(proc):
    proc.send_signal(signal.SIGKILL); proc.wait(); proc.stdout.close(); proc.stderr.close()


def _images(tmp_path, n=6, size=(48, 64)):
    rng = np.random.default_rng(1); out = []
    for k in range(n):
        p = tmp_path / "img" / f"tile{k}.png"
        imwrite_png(p, rng.integers(0, 255, (size[0] // 8, size[1] // 8, 3)).repeat(8, 0).repeat(8, 1).astype(np.uint8))
        out.append(p)
    return out


_SLOW_RUN = """
    import sys, time
    from pathlib import Path
    from ssrs_nb.sam import SuperpixelGenerator
    from ssrs_nb.maps import generate_dataset
    class Slow(SuperpixelGenerator):           # the same ssrs_settings as SuperpixelGenerator, one image a {delay} s
        def generate(self, img):
            time.sleep({delay}); return super().generate(img)
    ims = sorted(Path({img!r}).glob("*.png"))
    generate_dataset(ims, {out!r}, Slow(scale={scale}), crop=None, min_area=0, shard={shard}, num_shards={n},
                     progress=False)
    print("finished", flush=True)
"""


def _slow_run(img, out, scale=100, delay=0.4, shard=0, n=1):
    return _start(_SLOW_RUN.format(img=str(img), out=str(out), scale=scale, delay=delay, shard=shard, n=n))


def _record(p):
    with Image.open(p) as im: return json.loads(im.text[SETTINGS_KEY])   # read by PIL, not by our own parser


# ---------------------------------------------------------------- item 2: SGO/SGB generation
def test_killed_run_then_other_settings_refused(tmp_path):
    "kill -9 after the first map; a re-run with scale 300 instead of 100 must refuse, listing the difference."
    ims = _images(tmp_path); out = tmp_path / "maps"
    proc = _slow_run(tmp_path / "img", out, scale=100)
    _wait_for(lambda: (out / "tile0_sgo.png").exists(), proc)
    _kill(proc)
    man = json.loads((out / "manifest.json").read_text())            # written before the first map
    assert man["settings"]["generator"]["scale"] == 100 and man["status"] == "running"
    assert man["generator_class"].endswith("Slow") and "checkpoint_sha256" in man
    made = sorted(p.name for p in out.glob("*_sgo.png")); assert 1 <= len(made) < 6
    before = {p.name: p.read_bytes() for p in out.glob("*.png")}
    # the killed run's lock is taken over (and reported); the other settings are refused, listing the difference
    took_over = rf"\.generate\.lock: took over the lock of a run that is no longer running \(pid {proc.pid}"
    with pytest.warns(UserWarning, match=took_over), \
         pytest.raises(ValueError, match=r"(?s)manifest\.json: .* other settings.*generator\.scale: 100 → 300"):
        generate_dataset(ims, out, SuperpixelGenerator(scale=300), crop=None, min_area=0, progress=False)
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == before   # nothing touched
    assert json.loads((out / "manifest.json").read_text()) == man
    # the manifest gone too (e.g. deleted by hand): every map still says which settings made it
    (out / "manifest.json").unlink()
    with pytest.raises(ValueError, match=r"(?s)tile0_sgo\.png: made with other settings.*generator\.scale: 100 → 300"):
        generate_dataset(ims, out, SuperpixelGenerator(scale=300), crop=None, min_area=0, progress=False)
    assert not (out / "manifest.json").exists()                      # the refused run wrote nothing
    # same settings: the killed run's maps are kept, the rest are made
    m = generate_dataset(ims, out, SuperpixelGenerator(scale=100), crop=None, min_area=0, progress=False)
    assert (m["skipped"], m["generated"], m["status"]) == (len(made), 6 - len(made), "complete")
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]   # no lock, no temporary file left
    assert all(before[k] == (out / k).read_bytes() for k in before)
    # overwrite=True regenerates every map with the new settings
    m = generate_dataset(ims, out, SuperpixelGenerator(scale=300), crop=None, min_area=0, overwrite=True, progress=False)
    assert m["generated"] == 6
    assert {_record(p)["generator"]["scale"] for p in out.glob("*.png")} == {300}
    assert json.loads((out / "manifest.json").read_text())["settings"]["generator"]["scale"] == 300


def test_every_map_records_its_settings(tmp_path):
    ims = _images(tmp_path, n=2); out = tmp_path / "maps"
    spg = SuperpixelGenerator(scale=50)
    m = generate_dataset(ims, out, spg, crop=None, min_area=0, progress=False)
    for p in out.glob("*.png"):
        assert _record(p) == m["settings"] == {"generator": {"generator": "superpixel", **vars(spg)}, "crop": None,
                                               "overlap": 64, "max_objects": 50, "min_area": 0, "merge_seams": True}
    np.testing.assert_array_equal(imread(out / "tile0_sgb.png"), read_sgo_sgb(out, "tile0")[1])   # OpenCV still reads it

    class Other:   # the generator protocol: generate(image) -> masks, ssrs_settings() -> dict (here a method)
        def generate(self, img): return spg.generate(img)
        def ssrs_settings(self): return {"generator": "sam2", "checkpoint": "x.pt", "checkpoint_sha256": "ab" * 32}
    with pytest.raises(ValueError, match=r"(?s)other settings.*generator\.checkpoint: '\(absent\)' → 'x\.pt'"):
        generate_dataset(ims, out, Other(), crop=None, min_area=0, progress=False)
    m = generate_dataset(ims, tmp_path / "m2", Other(), crop=None, min_area=0, progress=False)
    assert m["checkpoint_sha256"] == "ab" * 32 and m["generator_class"].endswith("Other")
    assert _record(tmp_path / "m2" / "tile1_sgo.png")["generator"]["generator"] == "sam2"


def test_concurrent_unsharded_run_refused_shards_run_together(tmp_path):
    ims = _images(tmp_path); out = tmp_path / "maps"
    proc = _slow_run(tmp_path / "img", out, delay=1.0)
    try:
        _wait_for(lambda: (out / "manifest.json").exists(), proc)
        with pytest.raises(RuntimeError, match=rf"\.generate\.lock: another generate_dataset run is writing to .*pid {proc.pid}"):
            generate_dataset(ims, out, SuperpixelGenerator(scale=100), crop=None, min_area=0, progress=False)
        with pytest.raises(RuntimeError, match="another generate_dataset run"):      # a shard may not join it either
            generate_dataset(ims, out, SuperpixelGenerator(scale=100), crop=None, min_area=0, shard=1, num_shards=2,
                             progress=False)
    finally: _kill(proc)
    # shards of one split run at the same time; a shard with other settings is refused
    sh = tmp_path / "sharded"
    proc = _slow_run(tmp_path / "img", sh, delay=1.0, shard=0, n=2)
    try:
        _wait_for(lambda: (sh / "manifest_0-of-2.json").exists(), proc)
        m1 = generate_dataset(ims, sh, SuperpixelGenerator(scale=100), crop=None, min_area=0, shard=1, num_shards=2,
                              progress=False)
        assert (m1["generated"], proc.poll()) == (3, None)                          # done while shard 0 still runs
        with pytest.raises(RuntimeError, match=r"\.generate_0-of-2\.lock: another"):   # shard 0 twice
            generate_dataset(ims, sh, SuperpixelGenerator(scale=100), crop=None, min_area=0, num_shards=2, progress=False)
        (sh / "manifest_1-of-2.json").unlink(); [p.unlink() for p in sh.glob("tile[135]_*.png")]
        with pytest.raises(ValueError, match=r"manifest_0-of-2\.json: .*other settings(?s:.*)generator\.scale: 100 → 300"):
            generate_dataset(ims, sh, SuperpixelGenerator(scale=300), crop=None, min_area=0, shard=1, num_shards=2,
                             progress=False)
    finally: _kill(proc)


@pytest.mark.parametrize("damage", ["truncated", "zeroed"])
def test_damaged_map_regenerated_not_counted(tmp_path, damage):
    ims = _images(tmp_path, n=3); out = tmp_path / "maps"; spg = SuperpixelGenerator(scale=50)
    generate_dataset(ims, out, spg, crop=None, min_area=0, progress=False)
    p = sgo_sgb_paths(out, "tile1")[0]; good = p.read_bytes()
    bad = good[:100] if damage == "truncated" else good[:100] + bytes(len(good) - 100)   # header intact
    p.write_bytes(bad)
    assert png_damage(p) is not None
    with pytest.raises(ValueError, match=r"tile1_sgo\.png: damaged map"): read_sgo_sgb(out, "tile1")
    with pytest.warns(UserWarning, match=r"tile1_sgo\.png: (truncated|corrupt).*generated again"):
        m = generate_dataset(ims, out, spg, crop=None, min_area=0, progress=False)
    assert (m["generated"], m["skipped"]) == (1, 2) and p.read_bytes() == good


# ---------------------------------------------------------------- item 5: checkpoints
@pytest.mark.parametrize("damage,expect", [
    ("empty", r"empty\.pth: the file is empty \(0 bytes\).*earlier checkpoint"),
    ("truncated", r"truncated\.pth: a PyTorch checkpoint that is truncated or corrupt"),
    ("zeroed", r"zeroed\.pth: .*(truncated or corrupt|not a PyTorch checkpoint)"),
    ("text", r"text\.pth: not a PyTorch checkpoint .*torch\.save"),
])
def test_unreadable_checkpoint_is_a_clear_error(tmp_path, damage, expect):
    atomic_torch_save({"w": torch.arange(1000.0)}, tmp_path / "good.pth"); good = (tmp_path / "good.pth").read_bytes()
    data = {"empty": b"", "truncated": good[:len(good) // 2], "zeroed": bytes(len(good)), "text": b"hello"}[damage]
    (tmp_path / f"{damage}.pth").write_bytes(data)
    with pytest.raises(ValueError, match=expect):
        load_checkpoint(tmp_path / f"{damage}.pth")


_DISK_FULL = """
    import json, resource, signal, sys, torch
    from pathlib import Path
    from ssrs_nb.core import atomic_torch_save, atomic_write_bytes
    d = Path(sys.argv[1])
    atomic_torch_save({"w": torch.ones(1000)}, d / "last.pth")         # a good checkpoint first (~5 KB)
    atomic_write_bytes(d / "table.md", b"good")
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)                      # EFBIG instead of a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))      # a 'disk' that takes 200 kB per file
    out = {}
    for name, fn in [("torch", lambda: atomic_torch_save({"w": torch.ones(250_000)}, d / "last.pth")),
                     ("bytes", lambda: atomic_write_bytes(d / "table.md", b"x" * 300_000))]:
        try: fn(); out[name] = "saved"
        except Exception as e: out[name] = f"{type(e).__name__}: {e}"
    print(json.dumps(out))
"""


def test_disk_full_names_path_and_sizes_and_keeps_good_file(tmp_path):
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(_DISK_FULL), str(tmp_path)], capture_output=True,
                       text=True, env=_env(), cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["torch"].startswith(f"OSError: [Errno 27] {tmp_path / 'last.pth'}: could not be saved, "
                                   f"File too large after writing"), out
    assert "of the 1,000,000 bytes needed" in out["torch"] and "bytes free on" in out["torch"]
    assert "previous last.pth (if any) is unchanged" in out["torch"]
    assert f"{tmp_path / 'table.md'}: could not be saved" in out["bytes"] and "of the 300,000 bytes needed" in out["bytes"]
    torch.testing.assert_close(load_checkpoint(tmp_path / "last.pth")["w"], torch.ones(1000))   # the good file stays
    assert (tmp_path / "table.md").read_bytes() == b"good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pth", "table.md"]               # no partial temp


def test_disk_full_on_a_small_tmpfs(tmp_path):
    "A real full disk (ENOSPC): a 512 kB tmpfs, where this process may mount one (root in a container); else skipped."
    mnt = tmp_path / "small"; mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        atomic_torch_save({"w": torch.ones(1000)}, mnt / "last.pth")
        with pytest.raises(OSError, match=rf"\[Errno 28\] {mnt / 'last.pth'}: could not be saved, No space left on device "
                                          r"after writing [\d,]+ bytes of the 1,000,000 bytes needed; [\d,]+ bytes free on"):
            atomic_torch_save({"w": torch.ones(250_000)}, mnt / "last.pth")
        torch.testing.assert_close(load_checkpoint(mnt / "last.pth")["w"], torch.ones(1000))
        assert [p.name for p in mnt.iterdir()] == ["last.pth"]
    finally: subprocess.run(["umount", str(mnt)], check=True)


_KILLED_SAVE = """
    import sys, time
    from pathlib import Path
    from ssrs_nb.core import atomic_write
    with atomic_write(Path(sys.argv[1]) / "last.pth") as f:
        f.write(b"x" * 100_000); f.flush()
        print("writing", flush=True); time.sleep(120)
"""


def test_killed_save_leaves_a_temp_that_is_removed(tmp_path):
    atomic_torch_save({"w": torch.ones(3)}, tmp_path / "last.pth")
    proc = _start(_KILLED_SAVE.replace("sys.argv[1]", repr(str(tmp_path))))
    assert proc.stdout.readline().strip() == "writing"
    temps = list(tmp_path.glob(".last.pth.*.tmp")); assert len(temps) == 1
    assert remove_stale_temps(tmp_path) == []                  # the writer is alive: its temp is not touched
    _kill(proc)
    assert temps[0].exists() and temps[0].stat().st_size == 100_000
    assert remove_stale_temps(tmp_path) == temps
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pth"]
    torch.testing.assert_close(load_checkpoint(tmp_path / "last.pth")["w"], torch.ones(3))


# ---------------------------------------------------------------- item 7: maps and weights that cannot be right
def _maps(tmp_path, sgb):
    out = tmp_path / "maps"
    imwrite_png(out / "t_sgo.png", np.ones(sgb.shape, np.uint16)); imwrite_png(out / "t_sgb.png", sgb)
    return out


def _lines(h=64, w=64):
    b = np.zeros((h, w), np.uint8); b[31:33] = 255; b[:, 15:17] = 255   # 2-px lines, as find_boundaries(mode='thick')
    return b


def test_sgb_values_refused_inverted_warned(tmp_path):
    aa = _lines(); aa[30] = 128; aa[33] = 60                        # antialiased edges
    with pytest.raises(ValueError,
                       match=r"t_sgb\.png: an SGB must hold only 0 and 255 \(or 0 and 1\), found 4 values \[0, 60, 128, 255\]"):
        read_sgo_sgb(_maps(tmp_path, aa), "t")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_sgo_sgb(_maps(tmp_path, _lines()), "t"); read_sgo_sgb(_maps(tmp_path, _lines() // 255), "t")
    with pytest.warns(UserWarning, match=r"t_sgb\.png: 9\d% of the pixels are boundary.*looks inverted"):
        read_sgo_sgb(_maps(tmp_path, 255 - _lines()), "t")


def test_window_dataset_refuses_bad_sgb(tmp_path):
    from ssrs_nb.data import WindowDataset, list_tiles
    from ssrs_nb.synthetic import make_synthetic_vaihingen
    split = make_synthetic_vaihingen(tmp_path / "v", n_tiles=2, size=96, seed=0)
    tiles = list_tiles("vaihingen", tmp_path / "v", "train", ids=split["train"])[:1]
    shape = imread(tiles[0].image_path).shape[:2]
    sgb = np.zeros(shape, np.uint8); sgb[10:12] = 255; sgb[40, 5] = 7
    imwrite_png(tmp_path / "m" / f"{tiles[0].stem}_sgo.png", np.ones(shape, np.uint16))
    imwrite_png(tmp_path / "m" / f"{tiles[0].stem}_sgb.png", sgb)
    with pytest.raises(ValueError, match=rf"{tiles[0].stem}_sgb\.png: an SGB must hold only 0 and 255"):
        WindowDataset(tiles, sgo_dir=tmp_path / "m", window=64, length=4, progress=False)


def test_resnet34_weights_into_resnet18_refused(tmp_path, capsys):
    import timm

    from ssrs_nb.unetformer import create_model, load_weights
    atomic_torch_save(timm.create_model("resnet34", pretrained=False).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(ValueError,
                       match=r"r34\.pth: 96 of its 218 tensors have no place in this 'resnet18' UNetFormer.*strict=False"):
        create_model("resnet18", 6, pretrained=tmp_path / "r34.pth")
    assert "r34.pth: loaded" in capsys.readouterr().out              # the report is printed before the error
    m = create_model("resnet18", 6, pretrained=tmp_path / "r34.pth", strict=False)
    assert m.load_report["missing"] == [] and len(m.load_report["unexpected"]) == 98   # 96 + the classifier
    with pytest.raises(ValueError, match="strict load failed"):
        load_weights(m, tmp_path / "r34.pth", strict=True)


@pytest.mark.parametrize("layout", ["plain", "lightning"])
def test_geoseg_format_weights_still_load(tmp_path, layout, capsys):
    "GeoSeg UNetFormer weights: a plain state dict, or a Lightning .ckpt with 'net.' prefixes and training state."
    from ssrs_nb.unetformer import create_model
    torch.manual_seed(0); ref = create_model("resnet18", 6).eval()
    sd = ref.state_dict()
    obj = sd if layout == "plain" else {"epoch": 3, "global_step": 100, "state_dict": {f"net.{k}": v for k, v in sd.items()},
                                        "optimizer_states": [], "lr_schedulers": [], "pytorch-lightning_version": "1.5.9"}
    p = tmp_path / ("w.pth" if layout == "plain" else "w.ckpt"); atomic_torch_save(obj, p)
    torch.manual_seed(1); m = create_model("resnet18", 6, pretrained=p).eval()
    assert (m.load_report["missing"], m.load_report["unexpected"]) == ([], [])
    assert f"{p}: loaded {len(sd)} of its {len(sd)} tensors into the model" in capsys.readouterr().out
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad(): assert torch.equal(m(x), ref(x))


# ---------------------------------------------------------------- items 1 and 5: training runs
@pytest.fixture(scope="module")
def vdata(tmp_path_factory):
    from ssrs_nb.synthetic import make_synthetic_vaihingen
    d = tmp_path_factory.mktemp("vdata"); make_synthetic_vaihingen(d, ids=[1, 3, 5], size=96)
    return d


def _cfg(vdata, out, **kw):
    from ssrs_nb.training import TrainConfig
    base = dict(data_root=str(vdata), out_dir=str(out), train_ids=[1, 3], test_ids=[5], epochs=1, iters_per_epoch=2,
                batch_size=2, window=64, eval_stride=32, milestones=[], progress=False, device="cpu", amp="off",
                num_workers=0, ckpt_every=1, log_every=1, use_obj=False, use_bdy=False)
    return TrainConfig(**{**base, **kw})


def _net(C):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, C, 3, padding=1))


def test_fresh_run_never_deletes_finished_results(vdata, tmp_path):
    from ssrs_nb.training import train
    out = tmp_path / "run"
    train(_cfg(vdata, out), model_fn=_net)
    for f in ("last.pth", "previous.pth"): (out / "checkpoints" / f).unlink(missing_ok=True)   # big checkpoints deleted
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert {"metrics.json", "model_final.pth"} <= set(before)
    for resume in (False, True):
        with pytest.raises(FileExistsError,
                           match=r"a run already exists .*\(metrics\.json, .*model_final\.pth\).*overwrite=True"):
            train(_cfg(vdata, out, resume=resume), model_fn=_net)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    train(_cfg(vdata, out, overwrite=True), model_fn=_net)                   # overwrite=True is the way to start afresh


def test_unreadable_last_checkpoint_falls_back_to_previous(vdata, tmp_path, capsys):
    from ssrs_nb.training import train
    out = tmp_path / "run"
    train(_cfg(vdata, out, keep_checkpoints=True), model_fn=_net)                 # the spare checkpoint kept
    last, prev = out / "checkpoints" / "last.pth", out / "checkpoints" / "previous.pth"
    step_prev = load_checkpoint(prev)["step"]
    assert 1 <= step_prev <= load_checkpoint(last)["step"] == 2
    last.write_bytes(last.read_bytes()[:1000])                                # damaged after it was written
    orphan = out / "checkpoints" / f".last.pth.{2**22 + 1}.abcd_123.tmp"      # a save killed in an earlier run
    orphan.write_bytes(b"x" * 1000)
    with pytest.warns(UserWarning, match=rf"(?s)last\.pth: a PyTorch checkpoint that is truncated or corrupt.*Resuming "
                                         rf"from the checkpoint before it, .*previous\.pth \(iteration {step_prev}\)"):
        m = train(_cfg(vdata, out, epochs=2, resume=True), model_fn=_net)
    assert f"removed {orphan}" in capsys.readouterr().out and not orphan.exists()
    assert [h["epoch"] for h in m["history"]] == [1, 2] and m["status"] == "finished"


def test_read_only_out_dir_fails_before_data_and_model(tmp_path):
    from ssrs_nb.training import train
    ro = tmp_path / "ro"; ro.mkdir()
    if os.geteuid() == 0:   # root writes through permission bits: a read-only tmpfs, where one can be mounted
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True).returncode:
            pytest.skip("cannot make a read-only folder here")
    else: ro.chmod(0o555)
    built = []
    try:
        with pytest.raises(PermissionError, match=rf"{ro / 'run'}: out_dir is not writable"):
            train(_cfg(tmp_path / "no_data_here", ro / "run"), model_fn=lambda C: built.append(C))
        assert built == []                                                    # neither data nor model was touched
    finally:
        if os.geteuid() == 0: subprocess.run(["umount", str(ro)], check=True)
        else: ro.chmod(0o755)


# ---- run locks, checkpoints without training state, damaged and oversized images, worker lifetime
_SLOW_TRAIN = """
    import time, torch, warnings
    from ssrs_nb.training import TrainConfig, train
    class Slow(torch.nn.Module):                 # a tiny network, one forward a {delay} s: the run lasts long enough
        def __init__(self, C):
            super().__init__(); torch.manual_seed(0); self.c = torch.nn.Conv2d(3, C, 3, padding=1)
        def forward(self, x):
            time.sleep({delay}); return self.c(x)
    cfg = TrainConfig(**{cfg!r})
    warnings.simplefilter("always")
    m = train(cfg, model_fn=Slow)
    print("finished", m["status"], flush=True)
"""


def _train_proc(vdata, out, delay=0.3, **kw):
    from dataclasses import asdict
    return _start(_SLOW_TRAIN.format(delay=delay, cfg=asdict(_cfg(vdata, out, **kw))))


def _wait_lock(lock, proc):
    _wait_for(lambda: lock.is_file() and lock.stat().st_size > 0, proc)


def test_second_training_run_on_one_folder_refused(vdata, tmp_path):
    from ssrs_nb.training import train
    out = tmp_path / "run"; lock = out / ".train.lock"
    a = _train_proc(vdata, out, iters_per_epoch=40)
    try:
        _wait_lock(lock, a)
        for kw in ({}, {"overwrite": True}, {"resume": True}):   # fresh, overwrite or resume while A runs: refused
            with pytest.raises(RuntimeError, match=rf"\.train\.lock: another training run is using {out} "
                                                   rf"\(pid {a.pid} on .*\); this run stops"):
                train(_cfg(vdata, out, iters_per_epoch=40, **kw), model_fn=_net)
        _wait_for(lambda: (out / "checkpoints" / "last.pth").is_file(), a)
    finally: _kill(a)                                                       # A is killed: its lock is stale now
    assert lock.is_file()
    with pytest.warns(UserWarning, match=rf"\.train\.lock: took over the lock of a run that is no longer running "
                                         rf"\(pid {a.pid} on .*resume=True continues"):
        m = train(_cfg(vdata, out, iters_per_epoch=40, resume=True), model_fn=lambda C: _SlowFree(C))
    assert m["status"] == "finished" and not lock.exists()
    assert not list((out / "checkpoints").glob(".*.tmp"))


class _SlowFree(torch.nn.Module):
    "The subprocess's network without the sleep (same parameters, so its checkpoint resumes)."
    def __init__(self, C):
        super().__init__(); torch.manual_seed(0); self.c = torch.nn.Conv2d(3, C, 3, padding=1)

    def forward(self, x): return self.c(x)


def test_two_subprocess_runs_started_together_one_refused(vdata, tmp_path):
    out = tmp_path / "run"
    procs = [_train_proc(vdata, out, delay=0.3, iters_per_epoch=10, overwrite=True) for _ in range(2)]   # ~3 s each
    res = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes[0] == 0 and codes[1] != 0, res
    err = next(e for p, (o, e) in zip(procs, res) if p.returncode)
    assert "another training run is using" in err and "pid " in err
    assert not list((out / "checkpoints").glob(".*.tmp"))


def test_keep_previous_when_previous_is_already_last(tmp_path):
    from ssrs_nb.training import _keep_previous
    ck = tmp_path / "checkpoints"; ck.mkdir()
    last, prev = ck / "last.pth", ck / "previous.pth"
    torch.save({"step": 1}, last); os.link(last, prev)      # killed between linking previous.pth and saving last.pth
    _keep_previous(last)
    assert sorted(p.name for p in ck.iterdir()) == ["last.pth", "previous.pth"]    # no .hardlink.tmp left (94 MB)
    assert load_checkpoint(prev) == {"step": 1}


def test_model_weights_as_last_checkpoint(vdata, tmp_path):
    from ssrs_nb.training import train
    out = tmp_path / "run"
    train(_cfg(vdata, out, keep_checkpoints=True), model_fn=_net)                 # the spare checkpoint kept
    last, prev = out / "checkpoints" / "last.pth", out / "checkpoints" / "previous.pth"
    last.write_bytes((out / "model_final.pth").read_bytes())                # a valid torch file, no training state
    step_prev = load_checkpoint(prev)["step"]
    with pytest.warns(UserWarning, match=rf"(?s)last\.pth: a PyTorch file but not a training checkpoint \(a "
                                         rf"OrderedDict with 4 entries, lacking 'model', 'optimizer'.*Resuming from the "
                                         rf"checkpoint before it, .*previous\.pth \(iteration {step_prev}\)"):
        m = train(_cfg(vdata, out, epochs=2, resume=True, keep_checkpoints=True), model_fn=_net)
    assert m["status"] == "finished"
    last.write_bytes((out / "model_final.pth").read_bytes()); prev.unlink()  # and with no previous.pth to fall back to
    with pytest.raises(ValueError, match=r"last\.pth: a PyTorch file but not a training checkpoint"):
        train(_cfg(vdata, out, epochs=3, resume=True), model_fn=_net)


def test_resume_with_another_model_names_the_file(vdata, tmp_path):
    from ssrs_nb.training import train
    out = tmp_path / "run"
    train(_cfg(vdata, out), model_fn=_net)
    wide = lambda C: torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                                         torch.nn.Conv2d(16, C, 3, padding=1))
    with pytest.raises(ValueError, match=r"last\.pth: its weights do not fit this run's model \(.*size mismatch"):
        train(_cfg(vdata, out, epochs=2, resume=True), model_fn=wide)


def test_checkpoints_is_a_file(vdata, tmp_path):
    from ssrs_nb.training import train
    out = tmp_path / "run"; out.mkdir(); (out / "checkpoints").write_text("not a folder")
    with pytest.raises(NotADirectoryError, match=r"run/checkpoints: is a file, but the run needs a folder there"):
        train(_cfg(vdata, out), model_fn=_net)


@pytest.mark.parametrize("kw, expect", [
    (dict(eval_stride=128), "eval_stride=128: expected an int in 1..window=64"),
    (dict(lr=0.0), "lr=0.0: expected a number > 0"), (dict(gamma=-1.0), "gamma=-1.0: expected a number > 0"),
    (dict(lambda_obj=-1.0), "lambda_obj=-1.0: expected a weight >= 0"),
    (dict(lambda_bdy=-0.1), "lambda_bdy=-0.1: expected a weight >= 0")])
def test_bad_settings_refused_before_training(vdata, tmp_path, kw, expect):
    from ssrs_nb.training import train
    built = []
    with pytest.raises(ValueError, match=re.escape(expect)):
        train(_cfg(vdata, tmp_path / "run", **kw), model_fn=lambda C: built.append(C))
    assert built == [] and not (tmp_path / "run").exists()


def _jpeg_bytes():
    import cv2
    rng = np.random.default_rng(0)
    ok, buf = cv2.imencode(".jpg", rng.integers(0, 255, (48, 64, 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1))
    return buf.tobytes()


@pytest.mark.parametrize("damage", ["cut in half", "garbage mid-file"])
def test_damaged_jpeg_refused_and_no_maps_written(tmp_path, damage):
    b = _jpeg_bytes(); m = len(b) // 2
    img = tmp_path / "img"; img.mkdir()
    if damage == "cut in half": b = b[:m]
    else: b = b[:m] + np.random.default_rng(1).integers(0, 255, 2000, dtype=np.uint8).tobytes() + b[m + 2000:]
    (img / "bad.jpg").write_bytes(b)
    with pytest.raises(ValueError, match=r"bad\.jpg: damaged JPEG \(libjpeg: .*\); the decoded pixels would be wrong"):
        generate_dataset([img / "bad.jpg"], tmp_path / "sgo", SuperpixelGenerator(scale=100), crop=None, min_area=0,
                         progress=False)
    assert not any(p.suffix == ".png" for p in (tmp_path / "sgo").rglob("*"))


def test_radiance_hdr_bomb_refused_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.hdr"   # a Radiance header declaring 16500² px, as a 17 MB file would; no data follows
    bomb.write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 16500 +X 16500\n" + bytes(4096))
    p = _start(f"""
        import resource
        from ssrs_nb.core import imread
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))     # decoding 16500² floats needs more than this
        try: imread({str(bomb)!r})
        except ValueError as e: print("refused:", e, flush=True)
    """)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0 and "refused:" in out, err[-2000:]
    assert f"{bomb}: not an image format whose size can be checked before decoding" in out


_PAYLOADS = {   # each would run code if instantiated; hydra's own blocklist lets the first two through
    "numpy.savetxt": lambda f: {"_target_": "numpy.savetxt", "fname": str(f), "X": [1.0]},
    "torch.load": lambda f: {"_target_": "torch.load", "f": str(f), "weights_only": False},
    "through a sam2 module": lambda f: {"_target_": "sam2.modeling.sam2_utils.np.savetxt", "fname": str(f), "X": [1.0]}}


@pytest.mark.skipif(importlib.util.find_spec("sam2") is None, reason="sam2 not installed")
@pytest.mark.parametrize("payload", list(_PAYLOADS))
def test_sam2_config_cannot_run_code(tmp_path, payload):
    import yaml

    from ssrs_nb.generators import build_generator, save_micro_checkpoint
    ck = save_micro_checkpoint("sam2", tmp_path / "micro_sam2.pt")
    pwned = tmp_path / "pwned.txt"; bad = _PAYLOADS[payload](pwned)
    top, nested = tmp_path / "top.yaml", tmp_path / "nested.yaml"   # the payload as the model, or deep inside a valid one
    top.write_text(yaml.safe_dump({"model": bad}))
    nested.write_text(yaml.safe_dump({"model": {"_target_": "sam2.modeling.sam2_base.SAM2Base",
                                                "image_encoder": {"x": [bad]}}}))
    for cfg, key in ((top, "model._target_"), (nested, "model.image_encoder.x.0._target_")):
        with pytest.raises(ValueError, match=rf"{re.escape(str(cfg))}: {re.escape(key)} = '.*' is not a SAM 2 model class"):
            build_generator("sam2", checkpoint=ck, config=str(cfg), device="cpu")
        assert not pwned.exists()


def _children(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _alive(pid):
    try: os.kill(pid, 0)
    except ProcessLookupError: return False
    try: return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"   # a zombie has ended
    except OSError: return False


_POOL_RUN = """
    import time
    from pathlib import Path
    from ssrs_nb.sam import SuperpixelGenerator
    from ssrs_nb.maps import generate_dataset
    from tests.test_faults import SlowGen
    if __name__ == "__main__":
        ims = sorted(Path({img!r}).glob("*.png"))
        generate_dataset(ims, {out!r}, SlowGen(scale=100), crop=None, min_area=0, workers=2, progress=False)
        print("finished", flush=True)
"""


class SlowGen(SuperpixelGenerator):
    "SuperpixelGenerator at 2 s an image (importable by spawned workers)."
    def generate(self, img):
        time.sleep(2.0); return super().generate(img)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and ps --ppid")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_pool_workers_die_with_their_parent(tmp_path, sig):
    ims = _images(tmp_path, n=8)
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(_POOL_RUN.format(img=str(ims[0].parent), out=str(tmp_path / "sgo"))))
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=_env(), cwd=ROOT)
    _wait_for(lambda: len(_children(p.pid)) >= 3, p, timeout=120)             # two workers and a resource tracker
    time.sleep(3.0)                                                            # the workers are generating
    kids = _children(p.pid)
    p.send_signal(sig); p.wait(); p.stdout.close(); p.stderr.close()
    t0 = time.monotonic()
    while any(_alive(k) for k in kids) and time.monotonic() - t0 < 15: time.sleep(0.2)
    left = [k for k in kids if _alive(k)]
    for k in left: os.kill(k, signal.SIGKILL)
    assert left == [], f"{len(left)} of {len(kids)} child processes outlived their parent by 15 s"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and ps --ppid")
def test_ctrl_c_stops_the_pool_within_seconds(tmp_path):
    ims = _images(tmp_path, n=16)                                               # 16 s of work for two workers
    # (a terminal's Ctrl-C reaches the workers too, which then fail; Jupyter's interrupt reaches only the parent)
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(_POOL_RUN.format(img=str(ims[0].parent), out=str(tmp_path / "sgo"))))
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=_env(), cwd=ROOT, start_new_session=True)
    _wait_for(lambda: len(_children(p.pid)) >= 3, p, timeout=120)
    time.sleep(3.0)
    t0 = time.monotonic(); p.send_signal(signal.SIGINT)   # Jupyter's interrupt: SIGINT to the parent only
    try: p.wait(timeout=60)
    except subprocess.TimeoutExpired: _kill(p); raise
    took = time.monotonic() - t0
    err = p.stderr.read(); p.stdout.close(); p.stderr.close()
    assert "KeyboardInterrupt" in err and took < 6.0, (took, err[-1500:])
    done = len(list((tmp_path / "sgo").glob("*_sgo.png")))
    assert done < 16                                                           # the queued images were dropped


def test_finished_maps_on_a_read_only_mount_are_checked_without_a_lock(tmp_path):
    "A complete SGO folder mounted read-only (root in a container; else skipped): re-checked, nothing written; a gap is an error."
    ims = []
    for i in range(3):
        ims.append(tmp_path / "img" / f"t{i}.png"); ims[-1].parent.mkdir(exist_ok=True)
        imwrite_png(ims[-1], (np.random.default_rng(i).random((48, 48, 3)) * 255).astype(np.uint8))
    src, mnt = tmp_path / "maps", tmp_path / "ro"; mnt.mkdir()
    gen = lambda: SuperpixelGenerator(scale=100)
    made = generate_dataset(ims, src, gen(), crop=None, min_area=0, progress=False)
    if os.geteuid() != 0 or subprocess.run(["mount", "--bind", str(src), str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot bind-mount here")
    try:
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(mnt)], capture_output=True).returncode:
            pytest.skip("cannot remount read-only here")
        before = {p.name: p.read_bytes() for p in mnt.iterdir()}
        m = generate_dataset(ims, mnt, gen(), crop=None, min_area=0, progress=False)
        assert (m["status"], m["generated"], m["skipped"], m["read_only"]) == ("complete", 0, 3, True)
        assert m["images"] == made["images"]
        with pytest.raises(PermissionError, match=r"ro: cannot be written \(read-only\), and 1 of 4 images"):
            generate_dataset(ims + [ims[0].with_name("t_new.png")], mnt, gen(), crop=None, min_area=0, progress=False)
        assert {p.name: p.read_bytes() for p in mnt.iterdir()} == before           # nothing written, no lock file
    finally: subprocess.run(["umount", str(mnt)], check=True)
