#!/usr/bin/env bash
# One command that proves dsprof's CUDA paths on real hardware: runs tests/gpu (pytest marker
# `gpu`) and prints one table: GPU path, what was checked, PASS/FAIL/SKIPPED, measured figure.
#
#   bash benchmarks/gpu_acceptance.sh            # any CUDA machine with the project installed
#   OUT=/some/dir bash benchmarks/gpu_acceptance.sh   # report + packed run directories there
#
# Installs nothing from the network. Python packages the project needs and the machine lacks
# are installed from wheels carried in .whl/ (docs/gpu.md says how to fetch them) into a
# temporary folder put on PYTHONPATH. Without CUDA every row is SKIPPED with the reason and the
# exit status is 0; with CUDA it is 1 when a check failed; 2 when it cannot start.
set -u
cd "$(dirname "$0")/.." || exit 2
PY="${PYTHON:-python3}"
REQUIRED="torch click rich pyarrow duckdb orjson msgspec numpy psutil pytest"

missing() {  # the modules of $@ that do not import, space-separated
    "$PY" - "$@" <<'PYEOF'
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))
PYEOF
}

install_wheels() {  # pip-install the given wheel files into a fresh folder on PYTHONPATH
    local site="${TMPDIR:-/tmp}/dsprof-gpu-site"
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$site" "$@" >/dev/null 2>&1; then
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "gpu_acceptance: the wheels in .whl/ do not install with $PY; using what is installed"
    fi
}

command -v "$PY" >/dev/null 2>&1 || { echo "gpu_acceptance: no Python at '$PY' (set PYTHON)"; exit 2; }
shopt -s nullglob
wheels=(.whl/*.whl)
lacking=$(missing $REQUIRED)
if [ -n "$lacking" ] && [ ${#wheels[@]} -gt 0 ]; then
    install_wheels "${wheels[@]}"
    lacking=$(missing $REQUIRED)
elif [ -z "$lacking" ]; then
    cupti_wheels=(.whl/cupti_python-*.whl)
    if [ ${#cupti_wheels[@]} -gt 0 ] && [ -n "$(missing cupti)" ] \
            && "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
        install_wheels "${cupti_wheels[@]}"
    fi
fi
if [ -n "$lacking" ]; then
    echo "gpu_acceptance: missing Python packages: $lacking (carry their wheels in .whl/ as docs/gpu.md says, or pip install -e '.[gpu,test]')"
    exit 2
fi
exec "$PY" benchmarks/gpu_acceptance.py "$@"
