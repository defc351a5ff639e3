#!/usr/bin/env bash
# The test job behind `make test` (and CI): every check in one place.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 MPLBACKEND=Agg PYTHONWARNINGS=ignore::DeprecationWarning
start=$(date +%s)

echo "==> 1/4 library and notebooks agree (nbdev_export must change nothing)"
# Compare the generated files' contents before and after the export: uncommitted changes that already match the
# notebooks are fine, only a difference that nbdev_export makes is a disagreement.
lib_state() { find latent_comm -name '*.py' -not -path '*/__pycache__/*' | LC_ALL=C sort | xargs sha256sum; }
before=$(lib_state)
nbdev_export
after=$(lib_state)
if [ "$before" != "$after" ]; then
  echo "FAILED: nbdev_export changed latent_comm/; the notebooks and the library disagree:"
  diff <(echo "$before") <(echo "$after") || true
  exit 1
fi

echo "==> 2/4 notebook tests (nbdev_test)"
# Two notebooks run at once, so each gets half of the cores for torch/BLAS: two torch processes with 2 threads each
# on 2 cores ran 3.6x slower than with 1 thread each (benchmarks/bench_threads.py), which made CI time out.
threads=$(( $(nproc) / 2 )); [ "$threads" -ge 1 ] || threads=1
OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads nbdev_test --n_workers 2 --timing

echo "==> 3/4 docs site (and README.md, generated from nbs/index.ipynb)"
python docs/build.py
if ! git diff --quiet -- README.md; then
  echo "FAILED: README.md is out of date with nbs/index.ipynb; run python docs/build.py and commit it"
  git diff --stat -- README.md; exit 1
fi

echo "==> 4/4 pytest (unit, property and browser tests)"
python -m pytest tests -q -p no:cacheprovider
echo "make test: all checks passed in $(( $(date +%s) - start )) s"
