"""The STM tested in C (tests/c/test_stm.c), without Python: base.c, arena.c and stm.c linked
alone, built with the compiler that builds the extension, run plain and under ASan + UBSan."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sysconfig

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
CORE = os.path.join(HERE, "..", "..", "src", "nfos", "_core")
SOURCES = ["base.c", "arena.c", "stm.c"]
SANITIZE = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined", "-g"]


def compiler() -> list[str]:
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    if not shutil.which(cc[0]):
        pytest.skip(f"no C compiler: {cc[0]} (sysconfig CC) is not installed")
    return cc


def includes(path: str, seen: set[str] | None = None) -> set[str]:
    """Every header `path` includes, transitively (quoted ones followed in the core)."""
    seen = set() if seen is None else seen
    with open(path) as f:
        for name in re.findall(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', f.read(), re.M):
            if name in seen:
                continue
            seen.add(name)
            local = os.path.join(CORE, name)
            if os.path.exists(local):
                includes(local, seen)
    return seen


def test_the_stm_is_python_free():
    for src in SOURCES:
        found = includes(os.path.join(CORE, src))
        assert "Python.h" not in found, f"{src} includes Python.h (through {sorted(found)})"


def build_and_run(tmp_path, flags: list[str], iterations: int) -> str:
    exe = tmp_path / "test_stm"
    cmd = [*compiler(), "-std=c11", "-Wall", "-Werror=implicit-function-declaration", *flags, "-I", CORE,
           os.path.join(HERE, "test_stm.c"), *(os.path.join(CORE, s) for s in SOURCES), "-o", str(exe)]
    built = subprocess.run(cmd, capture_output=True, text=True)
    assert built.returncode == 0, f"{shlex.join(cmd)}\n{built.stderr}"
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    run = subprocess.run([str(exe), str(iterations)], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, f"test_stm failed (status {run.returncode}):\n{run.stdout}\n{run.stderr}"
    assert "test_stm: all ok" in run.stdout, run.stdout
    assert not run.stderr.strip(), run.stderr   # sanitizer reports go to stderr
    return run.stdout


def test_stm_in_c(tmp_path):
    out = build_and_run(tmp_path, ["-O2"], 20000)
    assert "no torn state" in out


def test_stm_in_c_under_asan_and_ubsan(tmp_path):
    out = build_and_run(tmp_path, ["-O1", *SANITIZE], 10000)
    assert "no torn state" in out
