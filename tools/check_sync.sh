#!/usr/bin/env bash
# CI check: nbs/ is the source of truth. nbdev_export must leave ssrs_nb/ unchanged, nbdev_clean must leave nbs/
# unchanged, README.md must match nbs/index.ipynb, and the 10_train parameters cell must match TrainConfig. Compares the tree before and after, so it also works in a
# working copy with uncommitted changes.
set -euo pipefail
BIN=${BIN:-.venv/bin}
snap() { { git status --porcelain --untracked-files=all -- "$@"; git diff -- "$@"; } | sha1sum; }
status=0
before=$(snap ssrs_nb); "$BIN/nbdev_export"; after=$(snap ssrs_nb)
if [ "$before" != "$after" ]; then
  echo "FAIL: nbdev_export changed ssrs_nb/ - the package is out of sync with nbs/. Run nbdev_export and commit."; git status --short -- ssrs_nb; status=1
fi
before=$(snap nbs); "$BIN/nbdev_clean"; after=$(snap nbs)
if [ "$before" != "$after" ]; then
  echo "FAIL: nbdev_clean changed nbs/ - run nbdev_clean and commit the cleaned notebooks."; git status --short -- nbs; status=1
fi
"$BIN/python" tools/readme.py --check || status=1
"$BIN/python" tools/params_cell.py --check || status=1
[ $status = 0 ] && echo "sync check: ssrs_nb/, nbs/ and README.md are in sync"
exit $status
