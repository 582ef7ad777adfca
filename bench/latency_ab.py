"""Latency before/after (issue 11, point 3): one figure with the CDFs of two `nfos bench
--measure latency` results, e.g. the main branch's and this one's, NF by NF.

    python bench/latency_ab.py --before DIR_A --after DIR_B --out FILE.png [--load 50]

Each DIR holds a latency.json (``nfos bench --nf firewall,nat,maglev --workers 1 --measure
latency --out DIR``, run from each tree).  ``--load`` picks the paced run at that share of
the highest lossless rate (50 or 90).  The figure's title names the machine of the JSON.
"""

from __future__ import annotations

import argparse
import json
import os


def points(path: str, key: str) -> dict[str, dict]:
    with open(os.path.join(path, "latency.json")) as f:
        doc = json.load(f)
    out = {}
    for name, row in doc["nfs"].items():
        for p in row["points"]:
            if p.get("status") == "measured" and p.get(key):
                out[name] = p[key] | {"max_rate_pps": p["max_rate_pps"]}
    return out | {"_machine": doc["machine"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--load", type=int, default=50, choices=(50, 90))
    args = ap.parse_args()
    key = f"at_{args.load}pct"
    a, b = points(args.before, key), points(args.after, key)
    names = [n for n in b if not n.startswith("_") and n in a]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for label, side, style in (("before", a, "--"), ("after", b, "-")):
            r = side[name]
            xs = [max(c[0], 1) / 1000 for c in r["cdf_ns"]]
            ys = [c[1] for c in r["cdf_ns"]]
            lat = r["latency_us"]
            ax.step(xs, ys, style, where="post",
                    label=f"{label}: {r['rate_pps'] / 1e6:.2f} Mpps; p50/p99/p99.9 "
                          f"{lat['p50']:.1f}/{lat['p99']:.1f}/{lat['p99.9']:.1f} us")
        for x in (10, 50, 500):
            ax.axvline(x, color="gray", linewidth=0.6, linestyle=":")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{name}, 1 worker, {args.load}% of the highest lossless rate", fontsize=9)
        ax.set_xlabel("RX queue to commit (us); dotted: 10, 50, 500 us")
        ax.set_ylabel("CDF")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, loc="lower right")
    m = b["_machine"]
    fig.suptitle(f"latency before/after: {m['cpus']} vCPUs ({m['cpu_model']}), Linux {m['kernel']}, "
                 f"Python {m['python']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
