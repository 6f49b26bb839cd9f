"""Write the `parameters` cell of nbs/10_train.ipynb from `ssrs_nb.training.TrainConfig` (one source for the run's
parameters): every dataclass field, same name, its default and its comment. `make export` runs it; the sync check
runs it with `--check`, which fails if the cell differs from what the dataclass gives.

    python tools/params_cell.py            # rewrite the cell
    python tools/params_cell.py --check    # exit 1 if it is out of date
"""
import json
import sys
from dataclasses import fields
from pathlib import Path

from ssrs_nb.training import DEMO_OVERRIDES, RunOptions, config_fields

NB = Path(__file__).resolve().parent.parent / "nbs" / "10_train.ipynb"
# the notebook's own defaults where they differ from the dataclass's, with the reason
NOTEBOOK = {"data_root": (None, "the dataset in its official layout; None: generate look-alike tiles here (demo)"),
            "sgo_root": (None, "SGO/SGB maps folder; None on generated data: superpixel maps made here"),
            "out_dir": ("_out/10_train", "run folder: metrics.json, curves.png, checkpoints/, model_*.pth"),
            "progress": (False, "tqdm bars (one line per epoch is printed anyway)")}
EXTRA = {"n_tiles": (5, "demo only: generated tiles (about 3/4 train, the rest test)"),
         "tile_size": (160, "demo only: generated tile size (px)")}
HEADER = ("# Generated from ssrs_nb.training.TrainConfig by tools/params_cell.py: edit the dataclass, not this cell.\n"
          "# A parameter noted 'None: X (paper) / Y (demo)' takes X with data_root and Y on generated data.")


def _py(v) -> str:
    "Python source of a default: strings in double quotes, everything else as repr."
    return json.dumps(v) if isinstance(v, str) else repr(v)


def _line(name, value, note):
    code = f"{name} = {_py(value)}"
    return f"{code:<31}# {note}" if note else code


def cell_source() -> str:
    lines = [HEADER, "# --- the recipe: what is trained (resuming compares it with the checkpoint's)"]
    first_option = fields(RunOptions)[0].name
    for name, (default, note) in config_fields().items():
        if name == first_option: lines.append("# --- run options: how this run executes (free to change on resume)")
        if name in DEMO_OVERRIDES:
            paper = "as in the paper" if default is None else f"{_py(default)} (paper)"
            value, note = None, f"None: {paper} / {_py(DEMO_OVERRIDES[name])} (demo)" + (f"; {note}" if note else "")
        else:
            value, note = NOTEBOOK.get(name, (default, note))
        lines.append(_line(name, value, note))
    lines += [_line(k, v, n) for k, (v, n) in EXTRA.items()]
    return "\n".join(lines)


def main(check: bool = False) -> int:
    nb = json.loads(NB.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    want = cell_source().splitlines(keepends=True)
    if cell["source"] == want: return 0
    if check:
        print(f"FAIL: {NB}: the parameters cell differs from ssrs_nb.training.TrainConfig; run `make export` "
              f"(tools/params_cell.py) and commit.")
        return 1
    cell["source"] = want
    NB.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    print(f"{NB}: parameters cell written from TrainConfig")
    return 0


if __name__ == "__main__":
    sys.exit(main(check="--check" in sys.argv[1:]))
