#!/usr/bin/env bash
# Scaling and latency on a many-core box (issue 11): one prepared script, results under $OUT.
#
#   1. throughput vs workers 1, 2, 4, 8, 15 for the conflict-free NFs (dummy ro, policer,
#      firewall) on the CAIDA-like trace with flows of even sizes (--flow-tail 2: its largest
#      flow is 1% of the packets): every point gives each worker >= 2 s of work (the trace
#      replayed in laps), workers pinned one per CPU, 3 interleaved repeats (min/median/max in
#      the JSON), RSS++ rebalancing every 5 ms of trace time; per point the parallel efficiency,
#      the CPU time per packet and where the workers' time went (CPU share, page faults,
#      preemptions, imbalance, sets migrated);
#   2. the same for the firewall on the default heavy-tailed trace (one flow is 14% of its
#      packets: the worker that has it bounds every point above 7 workers), 1 repeat;
#   3. paced-mode latency of the firewall, the NAT and Maglev at 1 worker (the generator on
#      one CPU, the worker on another), p50/p99/p99.9 and CDFs at 50% and 90% load.
#
# Installs nothing (the C core is built in place): setuptools, numpy, rich and click must be there
# (matplotlib optional: without it the JSON is written and `nfos bench --plot DIR` draws later).
# Output: $OUT/scaling/{throughput.json,throughput.png}, $OUT/heavy/{throughput.json,throughput.png},
# $OUT/latency/{latency.json,latency.png}, $OUT/bench.log (7 files, 2 folders deep; the build log
# goes to $OUT/bench.log too).
# Budget: under 8 minutes on 16 CPUs (each stage is cut at its share: SCALING_LIMIT 280 s,
# HEAVY_LIMIT 60 s, LATENCY_LIMIT 100 s, plus the build).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/scaling}
mkdir -p "$OUT/scaling" "$OUT/heavy" "$OUT/latency"
export PYTHONUNBUFFERED=1
# the C core built in place, this checkout's src first on the path: nothing is installed
if ! python3 setup.py -q build_ext --inplace >"$OUT/bench.log" 2>&1; then
    echo "building the C core failed (see bench.log)"
    exit 1
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
{
    python3 -c "import nfos, os; print('nfos', nfos.__version__, 'on', os.cpu_count(), 'CPUs')"
    uptime
    command -v lscpu >/dev/null && lscpu | grep -E "Model name|^CPU\(s\)|NUMA node\(s\)|Thread"
} 2>&1 | tee -a "$OUT/bench.log"
start=$(date +%s)
timeout "${SCALING_LIMIT:-280}" python3 -m nfos bench --nf "${NFS:-dummy_ro,policer,firewall}" \
    --workers "${WORKERS:-1,2,4,8,15}" --packets "${PACKETS:-300000}" --repeat "${REPEAT:-3}" --seconds "${SECONDS_PER_WORKER:-2}" \
    --rebalance "${REBALANCE:-5ms}" --flow-tail 2 --measure throughput --out "$OUT/scaling" 2>&1 | tee -a "$OUT/bench.log"
echo "scaling took $(( $(date +%s) - start )) s" | tee -a "$OUT/bench.log"
start=$(date +%s)
timeout "${HEAVY_LIMIT:-60}" python3 -m nfos bench --nf firewall --workers "${WORKERS:-1,2,4,8,15}" \
    --packets "${PACKETS:-300000}" --repeat 1 --seconds "${SECONDS_PER_WORKER:-2}" --rebalance "${REBALANCE:-5ms}" \
    --measure throughput --out "$OUT/heavy" 2>&1 | tee -a "$OUT/bench.log"
echo "heavy-tailed took $(( $(date +%s) - start )) s" | tee -a "$OUT/bench.log"
start=$(date +%s)
timeout "${LATENCY_LIMIT:-100}" python3 -m nfos bench --nf "${LATENCY_NFS:-firewall,nat,maglev}" --workers 1 \
    --packets 100000 --repeat 1 --seconds 0.5 --measure latency --out "$OUT/latency" 2>&1 | tee -a "$OUT/bench.log"
echo "latency took $(( $(date +%s) - start )) s" | tee -a "$OUT/bench.log"
uptime | tee -a "$OUT/bench.log"
