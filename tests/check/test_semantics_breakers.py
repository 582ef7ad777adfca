"""``nfos check`` rejects the constructs that make N workers differ from the sequential run.

Regressions (issue "Same results as a sequential run", point 6): an NF that counted packets in
an attribute of a module-level object (``S.n += 1``) forwarded 100 packets with 0 workers and
200 with 2, and one that imported ``threading`` through ``importlib`` passed the check.
"""

import subprocess
import sys
import textwrap

import pytest

from nfos.check import check_file, check_source

COUNTING_NF = '''\
import types
import nfos
nf = nfos.NF("first100", devices=["lan", "wan"])
S = types.SimpleNamespace(n=0)
@nf.orphan
def forward_the_first_100(pkt):
    S.n += 1
    if S.n <= 100:
        pkt.send("wan")
'''

MUTATE = "handler mutates module-level '{}' ({}); module-level objects are per process"
DYNAMIC = "NF code must not use {}: nfos check cannot see what it runs or imports"


def check(src):
    return [(f.line, f.message) for f in check_source(textwrap.dedent(src), "nf.py")]


def test_counting_in_a_module_level_object_is_rejected_with_its_line(tmp_path):
    nf = tmp_path / "first100.py"
    nf.write_text(COUNTING_NF)
    (f,) = check_file(str(nf))
    assert (f.line, f.col) == (7, 5) and f.message.startswith(MUTATE.format("S", "augmented assignment"))
    trace = tmp_path / "t.pcapng"
    subprocess.run([sys.executable, "-m", "nfos", "gen", "caida", "--packets", "10", "--out", str(trace)],
                   check=True, capture_output=True)
    r = subprocess.run([sys.executable, "-m", "nfos", "run", str(nf), "--in", str(trace), "--workers", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and f"first100.py:7:5: {MUTATE.format('S', 'augmented assignment')}" in r.stderr


@pytest.mark.parametrize("binding,write,name,how", [
    ("S = types.SimpleNamespace(n=0)", "S.n += 1", "S", "augmented assignment"),
    ("class Counter:\n    n = 0", "Counter.n += 1", "Counter", "augmented assignment"),
    ("class C:\n    pass\nS = C()", "S.n = 1", "S", "assignment"),
    ("S = C()", "S.table['k'] = 1", "S", "assignment"),
    ("def helper():\n    pass", "helper.calls = 1", "helper", "assignment"),
    ("import math", "math.tau = 1", "math", "assignment"),
    ("S = C()", "setattr(S, 'n', 1)", "S", "setattr() call"),
    ("S = C()", "del S.n", "S", "del"),
])
def test_writes_through_attributes_of_module_level_objects(binding, write, name, how):
    src = f"import types\n{binding}\ndef h(pkt):\n    {write}\n"
    (found,) = check(src)
    assert found[0] == src.count("\n") and found[1].startswith(MUTATE.format(name, how))


def test_nfos_objects_and_locals_are_still_writable():
    assert check("""\
        import nfos
        from nfos import Vector
        nf = nfos.NF("x")
        TOTALS = nfos.Vector(nfos.u64, 4)
        LAST = Vector(nfos.u64, 1)
        class S(nfos.Record):
            n: nfos.u64
        @nf.packet
        def h(pkt, s):
            s.n += 1
            pkt.ip.ttl -= 1
            TOTALS[0] += 1
            LAST[0] = pkt.time
            nf.state.table[pkt.l4.sport] = 1
            setattr(s, "n", 2)
            obj = types_free = object()
        """) == []


@pytest.mark.parametrize("src,what", [
    ("from importlib import import_module\nimport_module('threading')\n", "threading"),
    ("from importlib import import_module as im\ndef h():\n    im('multiprocessing')\n", "multiprocessing"),
    ("import importlib as il\nil.import_module('threading')\n", "threading"),
    ("import builtins\nbuiltins.__import__('socket')\n", "socket"),
])
def test_importing_forbidden_modules_dynamically(src, what):
    assert [m for _, m in check(src)] == [
        f"NF code must not use {what}: the runtime runs handlers in transactions on several processes; "
        "use nfos data structures for shared state"]


@pytest.mark.parametrize("src,what", [
    ("import importlib\nimportlib.import_module('thr' + 'eading')\n", "an import whose module name is computed"),
    ("name = 'threading'\n__import__(name)\n", "an import whose module name is computed"),
    ("from importlib import import_module\ndef h(m):\n    import_module(m)\n",
     "an import whose module name is computed"),
    ("exec('import threading')\n", "exec()"),
    ("def h():\n    eval('1')\n", "eval()"),
])
def test_code_the_checker_cannot_see_is_rejected(src, what):
    (msg,) = [m for _, m in check(src)]
    assert msg.startswith(DYNAMIC.format(what))
