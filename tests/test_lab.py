"""`make lab` saves notebooks clean: a notebook saved through JupyterLab's contents API (what autosave and Ctrl-S do)
keeps the bytes `nbdev_clean` gives it, so exploring in JupyterLab never makes `make test`'s sync check fail."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(sys.executable).parent.parent


def _lab(cwd: Path):
    "Start `make lab` in `cwd` with this venv (not reinstalled); returns (process, contents API base URL, token)."
    if not (VENV / ".installed").exists(): pytest.skip(f"{VENV} was not made by `make install`")
    p = subprocess.Popen(["make", "-s", "-o", f"{VENV}/.installed", "lab", f"VENV={VENV}"], cwd=cwd, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    assert p.stdout is not None
    line = p.stdout.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)/lab/tree/\S+\?token=(\w+)", line)
    assert m, f"make lab printed {line!r}, not its URL"
    return p, f"http://127.0.0.1:{m[1]}/api/contents/", m[2]


def _call(url: str, token: str, method: str = "GET", body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r: return json.load(r)


def test_lab_saves_notebooks_clean(tmp_path):
    for f in ("Makefile", "settings.ini", "nbs/03_losses.ipynb"):
        (tmp_path / f).parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / f, tmp_path / f)
    nb_file = tmp_path / "nbs/03_losses.ipynb"
    committed = nb_file.read_bytes()
    p, api, token = _lab(tmp_path)
    try:
        for _ in range(120):                                   # the server answers a few seconds after printing its URL
            try: model = _call(api + "nbs/03_losses.ipynb", token); break
            except OSError: time.sleep(0.5)
        else: pytest.fail("JupyterLab did not answer within 60 s")
        nb = model["content"]                                  # what JupyterLab adds when a notebook is opened and run
        nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
        nb["metadata"]["language_info"] = {"name": "python", "version": "3.11.2"}
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        for i, c in enumerate(code):
            c["execution_count"] = i + 1
            c["metadata"]["execution"] = {"iopub.status.busy": "2026-12-05T16:00:00.000Z"}
        _call(api + "nbs/03_losses.ipynb", token, "PUT", {"type": "notebook", "format": "json", "content": nb})
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=30)
    saved = nb_file.read_bytes()
    assert b"language_info" not in saved and b"iopub.status.busy" not in saved and b"3.11.2" not in saved
    assert saved == committed, "the saved notebook differs from what nbdev_clean writes"
