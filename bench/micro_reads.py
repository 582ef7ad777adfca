"""ns per structure read at 1 worker vs a dict lookup in the same process (issue 11, point 4).

    python bench/micro_reads.py [--rounds 3000] [--repeat 7] [--mode stm|direct] [--src TREE/src] [--out FILE.json]

Loads ``bench/nfs/reads.py`` (a Map u64 -> u64, a Map u64 -> record, Vectors of u64 and of
records, a DistributedObj, a Counter) with one worker slot, becomes that slot (no fork) and
runs transactions of 32 reads each, as a worker's batch would (each key once per transaction,
keys drawn at random from the 4096 present ones; a miss reads an absent key).  The cost of a
read is (time of a transaction of 32 reads - time of one with an empty loop body) / 32, so the
transaction's begin/commit is not in it; the dict figure is (loop of 32 ``d.get(k)`` - empty
loop) / 32 on a dict of the same keys.  Configurations are interleaved (every one once per
repeat) and the median, min and max over repeats are reported.  ``--src`` runs another source
tree's nfos (its C core built in place), e.g. the commit before a change, with this checkout's
benchmark NF.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src")
if "--src" in sys.argv:   # before nfos is imported
    SRC = os.path.abspath(sys.argv[sys.argv.index("--src") + 1])
sys.path.insert(0, ROOT)
sys.path.insert(0, SRC)
from bench.harness.configs import machine  # noqa: E402
from nfos import _core  # noqa: E402
from nfos.runtime.session import Session  # noqa: E402

BATCH = 32


def bodies(st, d, rec_d):
    """name -> (statement on k, namespace): the loop body of each configuration."""
    ns = {"ms": st.m_scalar, "mr": st.m_rec, "vs": st.v_scalar, "vr": st.v_rec, "do": st.dobj,
          "dc": st.dobj_cached, "ct": st.counter, "d": d, "rd": rec_d}
    return {
        "empty": "pass",
        "dict.get hit": "d.get(k)",
        "dict.get miss": "d.get(k + 1000000)",
        "dict[k][1] (a list value's field)": "rd[k][1]",
        "Map.get hit (u64 -> u64)": "ms.get(k)",
        "Map.get miss": "ms.get(k + 1000000)",
        "Map.get hit (u64 -> record) .a": "mr.get(k).a",
        "Map.get hit (u64 -> record) .a .b .c": "r = mr.get(k); r.a; r.b; r.c",
        "k in Map": "k in ms",
        "Vector[i] (u64)": "vs[k]",
        "Vector[i].a (record)": "vr[k].a",
        "DistributedObj.read().a (staleness 0: merge)": "do.read().a",
        "DistributedObj.read().a (cached)": "dc.read().a",
        "Counter.value() (staleness 0)": "ct.value()",
    }, ns


def compile_body(stmt: str, ns: dict, in_tx: bool, mode: int):
    src = ("def run(rounds, keysets, begin, commit):\n"
           "    t0 = perf()\n"
           "    for keys in keysets[:rounds]:\n"
           + (f"        begin({mode}, 0)\n" if in_tx else "")
           + f"        for k in keys:\n"
           f"            {stmt}\n"
           + ("        commit()\n" if in_tx else "")
           + "    return perf() - t0\n")
    g = dict(ns, perf=time.perf_counter_ns)
    exec(compile(src, f"<{stmt}>", "exec"), g)
    return g["run"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3000, help="transactions per timed run")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--mode", choices=("stm", "direct"), default="stm")
    ap.add_argument("--src", default=SRC, help="the nfos source tree to measure [default: this checkout's]")
    ap.add_argument("--out")
    args = ap.parse_args()
    s = Session(os.path.join(ROOT, "bench", "nfs", "reads.py"), workers=1, collect_output=False)
    s.init()
    st = s.nf.state
    n = s.nf.params.n
    _core.set_slot(0)   # a worker's slot, in this process
    mode = _core.TX_STM if args.mode == "stm" else _core.TX_DIRECT
    rng = random.Random(1)
    keysets = [rng.sample(range(n), BATCH) for _ in range(args.rounds)]
    d = {k: k + 1 for k in range(n)}
    rec_d = {k: [k, 2 * k, 7] for k in range(n)}
    # nfos bodies run inside transactions, dict bodies (and one empty loop) outside
    table, ns = bodies(st, d, rec_d)
    fns = {}
    for name, stmt in table.items():
        if name == "empty":
            fns["empty (no transaction)"] = compile_body(stmt, ns, False, mode)
            fns["empty (in a transaction)"] = compile_body(stmt, ns, True, mode)
        else:
            fns[name] = compile_body(stmt, ns, not name.startswith("dict"), mode)
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():   # warm-up
        f(min(200, args.rounds), keysets, _core.tx_begin, _core.tx_commit)
    for _ in range(args.repeat):
        for name, f in fns.items():
            samples[name].append(f(args.rounds, keysets, _core.tx_begin, _core.tx_commit) / (args.rounds * BATCH))
    base_plain, base_tx = samples["empty (no transaction)"], samples["empty (in a transaction)"]
    rows = []
    for name, xs in samples.items():
        if name.startswith("empty"):
            continue
        base = base_plain if name.startswith("dict") else base_tx
        net = [x - b for x, b in zip(xs, base, strict=True)]
        rows.append({"op": name, "ns_median": statistics.median(net), "ns_min": min(net), "ns_max": max(net),
                     "raw_ns_median": statistics.median(xs)})
    tx_ns = [(t - b) * BATCH for t, b in zip(base_tx, base_plain, strict=True)]
    dict_hit = next(r["ns_median"] for r in rows if r["op"] == "dict.get hit")
    for r in rows:
        r["x_dict_get"] = r["ns_median"] / dict_hit
        print(f"{r['op']:48s} {r['ns_median']:7.1f} ns  [{r['ns_min']:.1f} .. {r['ns_max']:.1f}]  "
              f"x{r['x_dict_get']:.2f} dict.get", flush=True)
    print(f"{'transaction begin+commit (32 reads)':48s} {statistics.median(tx_ns):7.1f} ns")
    s.close()
    if args.out:
        doc = {"command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:]),
               "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S"), "mode": args.mode,
               "batch": BATCH, "src": os.path.relpath(SRC, ROOT), "rounds": args.rounds, "repeat": args.repeat, "reads": rows,
               "tx_begin_commit_ns_median": statistics.median(tx_ns)}
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
