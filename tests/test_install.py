"""The set-up's environment (JupyterLab, ipympl) and a clean install of the package (`pip install .`, no extras).

A real `pip install .` into an empty environment downloads and unpacks torch with its CUDA libraries (about 5 GB,
several minutes), too slow for `make test`. `test_clean_install` proves the same thing in about a minute
without the network: it builds the wheel from a copy of the sources, installs it with `--no-deps` into a new
virtual environment (no system site-packages), then makes visible there exactly the distributions that the
wheel's `Requires-Dist` pulls in (resolved transitively, markers evaluated, over the versions installed in .venv)
and nothing else; every module must import and every console script must answer `--help` in that environment.
`test_requirements_match_imports` checks the other direction: every third-party `import` in the package is
declared, and every declared requirement is imported (or listed in `NOT_IMPORTED` with its reason).
`SSRS_FULL_INSTALL=1` adds the real thing: `pip install .` from the package index into an empty environment.
"""
import ast
import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# declared runtime requirements that the package does not import, each with the reason it is needed
NOT_IMPORTED = {
    "torchvision": "timm's dependency; declared with a lower bound that matches torch>=2.4 so pip keeps the pair compatible",
    "ipykernel": "the `python3` kernel that papermill starts for `paper.run_grid` (nbs/10_train.ipynb)",
    "imagecodecs": "tifffile's LZW decoder (core.imread): the official Vaihingen tiles and the generated ones are LZW TIFFs",
}

def _run(cmd, timeout=300, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} exited with {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r.stdout

def test_jupyter_lab_runs():
    "The set-up installs JupyterLab: `jupyter lab --version` works in the environment `make install` made."
    out = _run([BIN / "jupyter", "lab", "--version"], timeout=120).strip()
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", out), out
    assert int(out.split(".")[0]) >= 4, f"JupyterLab {out}: the notebooks and ipympl need JupyterLab 4"

def test_widget_backend():
    "`%matplotlib widget` (the SGO viewer's hover read-out) resolves to ipympl's backend."
    code = ("import matplotlib; matplotlib.use('widget'); import matplotlib.pyplot as plt; "
            "print(type(plt.figure().canvas).__module__)")
    out = _run([sys.executable, "-c", code], timeout=120, env={k: v for k, v in os.environ.items() if k != "MPLBACKEND"})
    assert out.strip().startswith("ipympl."), out

# ---------------------------------------------------------------------------------------------------------------
def _build_wheel(tmp: Path) -> Path:
    "Build the wheel from a copy of the files a source checkout has (not the working tree's build/ or egg-info)."
    src = tmp / "src"; src.mkdir()
    for f in ("setup.py", "settings.ini", "pyproject.toml", "README.md", "MANIFEST.in", "LICENSE"):
        if (ROOT / f).exists(): shutil.copy(ROOT / f, src / f)
    shutil.copytree(ROOT / "ssrs_nb", src / "ssrs_nb", ignore=shutil.ignore_patterns("__pycache__"))
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-cache-dir", "--no-deps", "--no-build-isolation",
          "-w", tmp / "dist", src])
    (whl,) = (tmp / "dist").glob("ssrs_nb-*.whl")
    return whl

def _metadata(venv_py, cwd) -> dict:
    """The installed package's requirements, console scripts and files, read in `venv_py`'s environment (run in
    `cwd`, away from the checkout, whose ssrs_nb.egg-info would answer instead)."""
    code = ("import importlib.metadata as m, json; d = m.distribution('ssrs-nb'); "
            "print(json.dumps(dict(requires=d.requires or [], scripts=[e.name for e in d.entry_points "
            "if e.group == 'console_scripts'], files=[str(f) for f in d.files])))")
    return json.loads(_run([venv_py, "-c", code], cwd=cwd))

def _closure(requires) -> dict:
    "Name -> distribution (in this environment) for the requirements and everything they require, markers applied."
    env0, found, todo = default_environment(), {}, [(r, "") for r in requires]
    while todo:
        req, extra = todo.pop()
        req = Requirement(req)
        if req.marker is not None and not req.marker.evaluate({**env0, "extra": extra}): continue
        name = canonicalize_name(req.name)
        try: dist = md.distribution(req.name)
        except md.PackageNotFoundError: pytest.fail(f"{req} is required but not installed in {sys.prefix}")
        assert req.specifier.contains(dist.version, prereleases=True), \
            f"{req} is required but {sys.prefix} has {req.name} {dist.version}"
        for ex in [""] + sorted(req.extras):
            key = (name, ex)
            if key in found: continue
            found[key] = dist
            todo += [(r, ex) for r in (dist.requires or [])]
    return {n: d for (n, _), d in found.items()}

def _expose(dists: dict, site: Path):
    "Symlink each distribution's top-level files (package dirs, modules, .dist-info, .pth) into `site`."
    for d in dists.values():
        base = Path(d.locate_file(""))
        for top in {Path(f).parts[0] for f in (d.files or []) if not str(f).startswith("..")}:
            if not (site / top).exists() and (base / top).exists(): (site / top).symlink_to(base / top)

def test_clean_install(tmp_path):
    t0 = time.time()
    whl = _build_wheel(tmp_path)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    vpy = venv / "bin" / "python"
    site = Path(_run([vpy, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    # an empty environment: nothing of .venv is importable (the test would otherwise prove nothing)
    _run([vpy, "-c", "import importlib.util as u; assert u.find_spec('numpy') is None and u.find_spec('fastcore') is None"])
    _run([sys.executable, "-m", "pip", "--python", vpy, "install", "-q", "--no-deps", "--no-index", whl])
    meta = _metadata(vpy, tmp_path)
    _expose(_closure([r for r in meta["requires"] if "extra ==" not in r]), site)
    # no development package leaks in through the closure
    dev_only = {"nbdev", "fastcore", "execnb", "pytest", "jupyterlab", "ipympl"} - {canonicalize_name(Requirement(r).name)
                                                                                 for r in meta["requires"]}
    leaked = [n for n in dev_only if (site / n).exists() or (site / n.replace("-", "_")).exists()]
    assert not leaked, f"{leaked} reach a plain `pip install .` only through another requirement"
    modules = sorted({Path(f).stem for f in meta["files"] if re.fullmatch(r"ssrs_nb/[a-z]\w*\.py", f)})
    assert {"core", "training", "viz"} <= set(modules), modules
    code = ("import importlib, sys, ssrs_nb; [importlib.import_module('ssrs_nb.' + m) for m in sys.argv[1:]]; "
            "print(ssrs_nb.__file__)")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    where = _run([vpy, "-c", code, *modules], env=env, cwd=tmp_path).strip()
    assert Path(where).is_relative_to(site), f"ssrs_nb was imported from {where}, not from the new environment"
    assert meta["scripts"], "the package declares no console script"
    for script in meta["scripts"]:   # ssrs-train, ssrs-predict, ...
        out = _run([venv / "bin" / script, "--help"], env=env, cwd=tmp_path)
        assert "usage" in out.lower(), f"{script} --help:\n{out}"
    print(f"clean install (wheel, --no-deps, declared closure, imports, {len(meta['scripts'])} scripts): "
          f"{time.time() - t0:.0f} s")

# ---------------------------------------------------------------------------------------------------------------
def _imported_names(node) -> list:
    return ([a.name.split(".")[0] for a in node.names] if isinstance(node, ast.Import) else
            [node.module.split(".")[0]] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])

def _imports(pkg: Path, top_level_only=False) -> dict:
    "Top-level module -> files importing it, over every `import` in the package (functions included unless `top_level_only`)."
    out = {}
    for f in sorted(pkg.glob("*.py")):
        tree = ast.parse(f.read_text(), str(f))
        for node in (tree.body if top_level_only else ast.walk(tree)):
            for n in _imported_names(node): out.setdefault(n, set()).add(f.name)
    return out

def _declared(key="requirements") -> list:
    "The requirements of settings.ini's `key` line; `key='extra_'`: those of every optional extra (extra_NAME lines)."
    import configparser
    import shlex
    cfg = configparser.ConfigParser(delimiters=["="]); cfg.read(ROOT / "settings.ini")
    lines = [v for k, v in cfg["DEFAULT"].items() if (k.startswith(key) if key == "extra_" else k == key)]
    return [Requirement(r) for v in lines for r in shlex.split(v)]

def test_requirements_match_imports():
    imported = {m: fs for m, fs in _imports(ROOT / "ssrs_nb").items()
                if m not in sys.stdlib_module_names and m != "ssrs_nb" and m != "__future__"}
    declared = {canonicalize_name(r.name): r for r in _declared()}
    optional = {canonicalize_name(r.name) for r in _declared("extra_")}   # imported lazily, by the generators
    # development tools (nbdev's show_doc renderer in core) may be imported inside a function, never when ssrs_nb loads
    dev = {canonicalize_name(r.name) for r in _declared("dev_requirements")}
    top = _imports(ROOT / "ssrs_nb", top_level_only=True)
    providers = md.packages_distributions()
    problems, used = [], set()
    for mod, files in sorted(imported.items()):
        dists = {canonicalize_name(d) for d in providers.get(mod, [])} or {canonicalize_name(mod)}   # not installed
        if dists & optional: continue
        if dists & dev and not dists & set(declared):
            if mod in top: problems.append(f"{sorted(top[mod])} import the development tool {mod!r} when loaded: import "
                                           f"it inside the function that needs it (a plain install lacks it)")
            continue
        if not dists & set(declared):
            problems.append(f"{sorted(files)} import {mod!r} (from {sorted(dists)}), which is not in settings.ini requirements")
        used |= dists & set(declared)
    for name in sorted(set(declared) - used):
        if name not in NOT_IMPORTED:
            problems.append(f"settings.ini requires {name!r} but ssrs_nb never imports it: drop it (or add it to "
                            f"NOT_IMPORTED in tests/test_install.py with the reason it is needed)")
    for name in NOT_IMPORTED:
        if name not in declared: problems.append(f"NOT_IMPORTED lists {name!r}, which settings.ini does not require")
    # torch: a lower bound in the package metadata (the exact build is the Makefile's/CI's business)
    for name in ("torch", "torchvision"):
        spec = str(declared[name].specifier)
        if "==" in spec or ">=" not in spec:
            problems.append(f"settings.ini requires {declared[name]}: use a lower bound (`{name}>=…`); the exact "
                            f"version belongs in the Makefile's TORCH")
    assert not problems, "\n".join(problems)

@pytest.mark.skipif(os.environ.get("SSRS_FULL_INSTALL") != "1", reason="set SSRS_FULL_INSTALL=1 (downloads ~5 GB)")
def test_full_pip_install(tmp_path):
    "`pip install .` (no extras) from the package index into an empty environment; imports and console scripts."
    t0 = time.time()
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv])
    vpy = venv / "bin" / "python"
    _run([vpy, "-m", "pip", "install", "-q", ROOT], timeout=3600)
    meta = _metadata(vpy, tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    _run([vpy, "-c", "import ssrs_nb.training, ssrs_nb.viz, ssrs_nb.sam, ssrs_nb.paper"], env=env, cwd=tmp_path)
    for script in meta["scripts"]:
        assert "usage" in _run([venv / "bin" / script, "--help"], env=env, cwd=tmp_path).lower()
    print(f"full pip install: {time.time() - t0:.0f} s")
