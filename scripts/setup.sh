#!/usr/bin/env bash
# Creates .venv (pinned CPU torch) and installs fastpicard into it, once: run.sh and test.sh share
# the install, and a later call only rebuilds when the C++ sources or the build configuration
# changed. Prints each step with the seconds elapsed.
#   FASTPICARD_INSTALL=editable (default): `pip install -e`. The source folder is the package and
#     uses the compiled extension, so `.venv/bin/python -m fastpicard.train` works from the
#     checkout; Python edits are live.
#   FASTPICARD_INSTALL=wheel: a regular install, as pip users get it (CI tests this one).
#   FASTPICARD_EXTRAS=a,b: optional dependency groups of pyproject.toml to install (default: test).
#   FASTPICARD_TORCH_INDEX=URL: where pip gets torch (e.g. https://download.pytorch.org/whl/cpu
#     on a machine whose pip has no local CPU wheel: plain PyPI serves the multi-GB CUDA build).
# The extension is built with --no-build-isolation against the torch in .venv: an isolated
# build would fetch its own torch, and an unpinned torch resolves to a multi-GB CUDA wheel.
# Needs a C++17 compiler with OpenMP and Python's venv module and headers.
set -euo pipefail
cd "$(dirname "$0")/.."
# seconds since run.sh/test.sh started (their FASTPICARD_T0), so the printed times add up
SECONDS=$(($(date +%s) - ${FASTPICARD_T0:-$(date +%s)}))
say() { printf '[%4ds] %s\n' $SECONDS "$*"; }
PY=${PYTHON:-python3}
MODE=${FASTPICARD_INSTALL:-editable}
EXTRAS=${FASTPICARD_EXTRAS:-test}
case $MODE in
  editable | wheel) ;;
  *) echo "FASTPICARD_INSTALL must be editable or wheel, got '$MODE'" >&2; exit 2 ;;
esac
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $("$PY" --version)"
  "$PY" -m venv .venv
fi
. .venv/bin/activate
installed() {  # the installed version of a distribution, or fail
  python -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1" 2>/dev/null
}

case $(installed torch) in
  2.13.0 | 2.13.0+*) ;;
  *) say "installing torch 2.13.0 (CPU) and its dependencies (a download of a few hundred MB)"
     pip install -q torch==2.13.0 \
       ${FASTPICARD_TORCH_INDEX:+--index-url "$FASTPICARD_TORCH_INDEX"} ;;
esac

# the build's identity: mode, interpreter, torch, and every file the C++ build reads
stamp=$( { echo "$MODE"; python -VV; installed torch
  for p in csrc CMakeLists.txt pyproject.toml setup.py meson.build; do
    if [ -e "$p" ]; then find "$p" -type f -print0 | sort -z | xargs -0 sha256sum; fi; done; } |
  sha256sum | cut -c1-16)
stamp_file=.venv/fastpicard-build.stamp
# run outside the source tree, which would shadow a regular install
check() {
  (cd "${TMPDIR:-/tmp}" && python -c "import sys, fastpicard
if not fastpicard.extension_available(): sys.exit('fastpicard: ' + fastpicard._ext.load_error)")
}
progress() {  # scikit-build-core's "*** step" and ninja's "[k/n] Building ..." lines
  while IFS= read -r line; do
    if [[ $line =~ ^[[:space:]]*(\*\*\* .*|\[[0-9]+/[0-9]+\].*) ]]; then
      say "  ${BASH_REMATCH[1]}"
    fi
  done
}

if [ "$MODE" = editable ] && [ "$(cat "$stamp_file" 2>/dev/null)" = "$stamp" ] &&
   check 2> /dev/null; then
  say "fastpicard is installed (editable) and its C++ extension is up to date"
else
  installed scikit_build_core > /dev/null && installed pybind11 > /dev/null ||
    { say "installing the build tools"; pip install -q "scikit-build-core>=0.10" "pybind11>=2.12"; }
  # without build isolation nothing fetches cmake/ninja: take them from PyPI when missing
  command -v cmake > /dev/null || pip install -q "cmake>=3.18,<4"
  command -v ninja > /dev/null || pip install -q ninja
  rm -f "$stamp_file"
  log=.venv/fastpicard-build.log
  say "building the C++ extension and installing fastpicard ($MODE install; about 3 min on 2 idle" \
      "cores, longer on a busy machine; full log: $log)"
  flag=; [ "$MODE" = editable ] && flag=-e
  if ! pip install -v --no-build-isolation $flag . 2>&1 | tee "$log" | progress; then
    echo "--- the build failed; the end of $log:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  check
  echo "$stamp" > "$stamp_file"
  say "fastpicard installed"
fi

# optional dependency groups, read from the installed metadata (no rebuild for another group)
reqs=$(python - "$EXTRAS" <<'EOF'
import importlib.metadata as md, re, sys
wanted = {e.strip() for e in sys.argv[1].split(",") if e.strip()}
for req in md.requires("fastpicard") or []:
    spec, _, marker = req.partition(";")
    extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", marker)
    if extra and extra.group(1) in wanted:
        name = re.match(r"[A-Za-z0-9._-]+", spec.strip()).group(0)
        try:
            md.version(name)
        except md.PackageNotFoundError:
            print(spec.strip())
EOF
)
if [ -n "$reqs" ]; then
  say "installing the optional dependencies [$EXTRAS]: $(echo $reqs | tr '\n' ' ')"
  # torch stays pinned: an unpinned resolve of a dependency could replace it with a CUDA build
  echo "$reqs" | xargs pip install -q torch==2.13.0
fi
say "setup done"
