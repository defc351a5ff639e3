#!/usr/bin/env bash
# The test job behind `make test` (and CI): every check in one place.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 MPLBACKEND=Agg PYTHONWARNINGS=ignore::DeprecationWarning
start=$(date +%s)

echo "==> 1/4 library and notebooks agree (nbdev_export must change nothing)"
before=$(git status --porcelain -- latent_comm)
nbdev_export
after=$(git status --porcelain -- latent_comm)
if [ "$before" != "$after" ] || ! git diff --quiet -- latent_comm; then
  echo "FAILED: nbdev_export changed latent_comm/; the notebooks and the library disagree:"
  git status --short -- latent_comm
  exit 1
fi

echo "==> 2/4 notebook tests (nbdev_test)"
nbdev_test --n_workers 2 --timing

echo "==> 3/4 docs site (and README.md, generated from nbs/index.ipynb)"
python docs/build.py
if ! git diff --quiet -- README.md; then
  echo "FAILED: README.md is out of date with nbs/index.ipynb; run python docs/build.py and commit it"
  git diff --stat -- README.md; exit 1
fi

echo "==> 4/4 pytest (unit, property and browser tests)"
python -m pytest tests -q -p no:cacheprovider
echo "make test: all checks passed in $(( $(date +%s) - start )) s"
