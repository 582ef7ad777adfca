#!/usr/bin/env bash
# The whole evaluation (nfos bench: throughput vs workers 1, 2, 4, 8, 12, 15 with the plain and
# multiprocessing peers, batching, price of transactions, memory, latency note) for every example
# NF on a bare many-core Linux box.  Installs the package (no network needed: setuptools, numpy,
# rich and click must be there; matplotlib and psutil are optional), then runs the harness of this
# checkout (bench/harness) and writes one JSON per measurement, PNG figures (if matplotlib is
# there: else `nfos bench --plot $OUT` later) and the log under $OUT.  Without psutil the memory
# measurement is left out (it says so).
# Budget: under 8 minutes on 16 cores (about 3 minutes measured; the run is cut at 420 s).
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
MEASURE=${MEASURE:-all}
if [ "$MEASURE" = all ] && ! python3 -c "import psutil" 2>/dev/null; then
    echo "psutil is not installed: measuring everything but memory"
    MEASURE=throughput,batching,stm_overhead,latency,peers
fi
start=$(date +%s)
timeout "${LIMIT:-420}" python3 -m nfos bench --nf "${NFS:-all}" --workers "${WORKERS:-1,2,4,8,12,15}" \
    --packets "${PACKETS:-600000}" --repeat "${REPEAT:-1}" --measure "$MEASURE" --out "$OUT" 2>&1 \
    | tee "$OUT/bench.log"
echo "bench took $(( $(date +%s) - start )) s" | tee -a "$OUT/bench.log"
