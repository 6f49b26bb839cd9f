import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REALDATA = ROOT.parent / "shared" / "realdata"
os.environ.setdefault("MPLBACKEND", "Agg")

@pytest.fixture(scope="session")
def realdata():
    "The real sample crops in ../shared/realdata; tests that use them skip where the folder is absent."
    if not REALDATA.is_dir(): pytest.skip(f"{REALDATA} not present")
    return REALDATA
