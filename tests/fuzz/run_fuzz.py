"""Run the fuzz targets (tests/fuzz/fuzz_*.py) and report, per target: inputs, inputs/s,
crashes, sanitizer reports, peak RSS.

    python tests/fuzz/run_fuzz.py --runs 1000000 --asan        # the issue-13 job (docs/reliability.md)
    python tests/fuzz/run_fuzz.py --runs 20000                 # quick, the checkout's own build

--asan builds the C core with AddressSanitizer + UndefinedBehaviorSanitizer into build/asan
(build_asan.sh) and runs the targets on it, with the ASan runtime preloaded, Python's
allocator switched to malloc (so ASan sees Python objects' memory too), leaks not reported
(the interpreter keeps memory until exit), and any UBSan finding fatal.  Memory is bounded
with libFuzzer's -rss_limit_mb (and -malloc_limit_mb); a run that exceeds it is a crash.
Crash inputs are written to --artifacts (default build/fuzz-artifacts).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TARGETS = ("frames", "setters", "captures")
SANITIZER = re.compile(r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|SUMMARY: UndefinedBehavior")


def build_asan(out: str) -> None:
    subprocess.run(["sh", os.path.join(HERE, "build_asan.sh"), out], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", os.path.join(out, "cov_shim.so"),
                    os.path.join(HERE, "cov_shim.c"), "-ldl"], check=True)


def run_target(name: str, runs: int, rss_mb: int, pythonpath: str, asan: bool, artifacts: str,
               log_dir: str | None) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([pythonpath, HERE]), PYTHONDONTWRITEBYTECODE="1")
    if asan:
        libs = [subprocess.run(["gcc", f"-print-file-name={lib}"], capture_output=True, text=True).stdout.strip()
                for lib in ("libasan.so", "libstdc++.so")]
        # cov_shim.so first: the coverage hooks reach atheris's libFuzzer, not the ASan runtime's weak
        # no-ops (cov_shim.c); then the ASan runtime (so ASan's link-order check is off); libstdc++
        # too, so ASan finds the real __cxa_throw (libFuzzer throws on its way out)
        env.update(LD_PRELOAD=" ".join([os.path.join(pythonpath, "cov_shim.so"), *libs]), PYTHONMALLOC="malloc",
                   ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:abort_on_error=1:verify_asan_link_order=0",
                   UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
    os.makedirs(artifacts, exist_ok=True)
    corpus = tempfile.mkdtemp(prefix=f"nfos-fuzz-{name}-")
    if name == "captures":
        for f in os.listdir(os.path.join(HERE, "seeds")):
            shutil.copy(os.path.join(HERE, "seeds", f), corpus)
    args = [sys.executable, os.path.join(HERE, f"fuzz_{name}.py"), f"-atheris_runs={runs + 1}",
            f"-rss_limit_mb={rss_mb}", f"-malloc_limit_mb={rss_mb}", "-max_len=1024", "-len_control=100",
            "-print_final_stats=1", f"-artifact_prefix={artifacts}/{name}-", corpus]
    t0 = time.monotonic()
    with tempfile.TemporaryFile("w+") as log:
        p = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - t0
        log.seek(0)
        text = log.read()
    shutil.rmtree(corpus, ignore_errors=True)
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
        with open(os.path.join(log_dir, f"{name}.log"), "w") as f:
            f.write(text)
    done = re.findall(r"Done (\d+) (?:in|runs in) (\d+) second", text)
    inputs = int(done[-1][0]) if done else 0
    cov = re.findall(r"cov: (\d+)", text)
    return {
        "target": name, "inputs": inputs, "seconds": round(wall, 1),
        "inputs_per_s": round(inputs / wall) if wall else 0,
        "crashes": int(p.returncode != 0 or "Uncaught Python exception" in text or "==ERROR" in text),
        "sanitizer_reports": len(SANITIZER.findall(text)),
        "peak_rss_mb": round(usage.ru_maxrss / 1024), "python_coverage": int(cov[-1]) if cov else None,
        "exit_code": p.returncode, "asan_ubsan": asan,
        "tail": "" if p.returncode == 0 else text[-3000:],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20000, help="inputs per target")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--asan", action="store_true", help="build and run under AddressSanitizer + UBSan")
    ap.add_argument("--asan-dir", default=os.path.join(ROOT, "build", "asan"))
    ap.add_argument("--rss-limit-mb", type=int, default=2048)
    ap.add_argument("--artifacts", default=os.path.join(ROOT, "build", "fuzz-artifacts"))
    ap.add_argument("--logs", default=None, help="keep each target's libFuzzer log here")
    ap.add_argument("--json", default=None, help="write the results here")
    a = ap.parse_args()
    if a.asan:
        build_asan(a.asan_dir)
    path = a.asan_dir if a.asan else os.path.join(ROOT, "src")
    results = []
    for name in a.targets.split(","):
        r = run_target(name, a.runs, a.rss_limit_mb, path, a.asan, a.artifacts, a.logs)
        results.append(r)
        print(f"{name:9} {r['inputs']:>9,} inputs {r['seconds']:>8.1f} s {r['inputs_per_s']:>7,}/s "
              f"crashes {r['crashes']} sanitizer reports {r['sanitizer_reports']} peak RSS {r['peak_rss_mb']} MB"
              f"{' (ASan+UBSan)' if a.asan else ''}", flush=True)
        if r["tail"]:
            print(r["tail"], file=sys.stderr)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0 if all(r["crashes"] == 0 and r["sanitizer_reports"] == 0 and r["inputs"] >= a.runs
                    for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
