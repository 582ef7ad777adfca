#!/usr/bin/env bash
# Throughput vs workers (1, 2, 4, 8, 12, 15) for every example NF on a bare many-core Linux box.
# Installs the package (no network needed: setuptools, numpy, rich and click must be there),
# then writes scaling.json, scaling.png and the log under $OUT.  Budget: under 8 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/scaling}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ! python3 -m pip install -q --no-build-isolation --no-deps -e . >"$OUT/install.log" 2>&1; then
    echo "pip install failed (see install.log): building the C core in place instead"
    python3 setup.py -q build_ext --inplace >>"$OUT/install.log" 2>&1
    export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c "import nfos, os; print('nfos', nfos.__version__, 'on', os.cpu_count(), 'CPUs')"
timeout 450 python3 bench/bench_scaling.py --workers "${WORKERS:-1,2,4,8,12,15}" \
    --packets "${PACKETS:-600000}" --out "$OUT/scaling.json" 2>&1 | tee "$OUT/scaling.log"
