"""``nfos check``: static rejection of NF code that breaks the transactional runtime."""

import textwrap

import pytest

from nfos.check import Finding, check_file, check_source

LEGIT_NF = '''\
"""A stateful firewall."""
import nfos
nf = nfos.NF("firewall", devices=["lan", "wan"], params={"expiry": nfos.seconds(60)})
PORTS = {80: "http", 443: "https"}
class Session(nfos.Record):
    internal_dev: nfos.u8
    lan_flags: nfos.u8
@nf.init
def setup(p):
    nf.packet_sets(nfos.on("lan", ipv4=("src", "dst")), nfos.on("wan", ipv4=("dst", "src")), state=Session, expiry=p.expiry)
    nf.state.counters = nfos.DistributedObj(Session, max_staleness=p.expiry)
@nf.packet
def on_packet(pkt, s):
    if pkt.tcp is not None:
        s.lan_flags |= pkt.tcp.flags
    name = PORTS.get(pkt.l4.dport)
    try:
        pkt.ip.ttl -= 1
    except Exception:
        pass
    pkt.send("wan")
'''

IMPORT_MSG = (
    "NF code must not use {}: the runtime runs handlers in transactions on several processes"
)
PRIMITIVE_MSG = "blocking/concurrency primitive {}"
MUTATE_MSG = "handler mutates module-level '{}'"


def check(src):
    return check_source(textwrap.dedent(src), "nf.py")


def assert_clean(src):
    findings = check(src)
    assert findings == [], "\n".join(map(str, findings))


def where(findings):
    return [(f.line, f.col) for f in findings]


def test_legit_nf_is_clean():
    assert check_source(LEGIT_NF) == []


def test_finding_str():
    f = Finding("nf.py", 3, 5, "boom")
    assert str(f) == "nf.py:3:5: boom"


# --------------------------------------------------------------------------- imports


@pytest.mark.parametrize(
    "mod",
    [
        "threading",
        "_thread",
        "multiprocessing",
        "concurrent",
        "asyncio",
        "subprocess",
        "signal",
        "socket",
        "queue",
        "sched",
    ],
)
def test_forbidden_imports(mod):
    (f,) = check(f"import {mod}\n")
    assert (f.line, f.col) == (1, 8)
    assert IMPORT_MSG.format(mod) in f.message
    assert "use nfos data structures for shared state" in f.message


def test_forbidden_import_forms():
    findings = check(
        """\
        import os, threading as th
        from concurrent.futures import ThreadPoolExecutor
        from multiprocessing.pool import Pool
        def f():
            import queue
        __import__("subprocess")
        """
    )
    assert where(findings) == [(1, 12), (2, 1), (3, 1), (5, 12), (6, 1)]
    mods = ["threading", "concurrent.futures", "multiprocessing.pool", "queue", "subprocess"]
    for f, mod in zip(findings, mods, strict=True):
        assert IMPORT_MSG.format(mod) in f.message


def test_allowed_imports():
    assert_clean(
        """\
        import os
        import time
        import collections
        from dataclasses import dataclass
        from . import threading
        import socketserver_like
        """
    )


# --------------------------------------------------------------------------- primitives


def test_lock_family_anywhere():
    findings = check(
        """\
        import mylib
        from mylib import Event as Ev
        LOCK = mylib.Lock()
        def f():
            mylib.RLock()
            mylib.Semaphore(2)
            mylib.BoundedSemaphore(2)
            mylib.Condition()
            mylib.Barrier(3)
            Ev()
        """
    )
    assert where(findings) == [(3, 8), (5, 5), (6, 5), (7, 5), (8, 5), (9, 5), (10, 5)]
    names = ["Lock", "RLock", "Semaphore", "BoundedSemaphore", "Condition", "Barrier", "Event"]
    for f, name in zip(findings, names, strict=True):
        assert f.message.startswith(PRIMITIVE_MSG.format(name) + " is not allowed in NF code")


def test_os_and_time():
    findings = check(
        """\
        import os
        import time as t
        from time import sleep as nap
        from os import system
        def f():
            os.fork()
            os.system("ls")
            os.popen("ls")
            os.spawnv(0, "x", [])
            t.sleep(1)
            nap(0.1)
            system("ls")
        """
    )
    assert where(findings) == [(6, 5), (7, 5), (8, 5), (9, 5), (10, 5), (11, 5), (12, 5)]
    names = [
        "os.fork",
        "os.system",
        "os.popen",
        "os.spawnv",
        "time.sleep",
        "time.sleep",
        "os.system",
    ]
    for f, name in zip(findings, names, strict=True):
        assert PRIMITIVE_MSG.format(name) in f.message


def test_harmless_os_time_and_names():
    assert_clean(
        """\
        import os
        import time
        import nfos
        class Event(nfos.Record):
            kind: nfos.u8
        def f(pkt, s):
            now = time.monotonic_ns()
            path = os.path.join("a", "b")
            e = Event()
            s.lock_count = 1
            nfos.Event
        """
    )


# --------------------------------------------------------------------------- globals


def test_global_and_nonlocal():
    findings = check(
        """\
        COUNT = 0
        def f(pkt):
            global COUNT
            COUNT += 1
        def g():
            total = 0
            def inner():
                nonlocal total
                total += 1
        """
    )
    assert where(findings) == [(3, 5), (8, 9)]
    assert findings[0].message == (
        "handler writes module global 'COUNT'; module globals are per process and not rolled back; "
        "keep state in an nfos structure or packet-set state"
    )
    assert "handler writes enclosing variable 'total' (nonlocal)" in findings[1].message


def test_global_statement_at_module_level_and_reads_are_fine():
    assert_clean(
        """\
        global X
        X = 5
        def f():
            return X + 1
        """
    )


def test_globals_call():
    (f,) = check(
        """\
        def f():
            globals()["X"] = 1
        """
    )
    assert (f.line, f.col) == (2, 5)
    assert "handler calls globals()" in f.message


# --------------------------------------------------------------------------- module-level containers


def test_mutating_module_level_containers():
    findings = check(
        """\
        import collections
        from collections import defaultdict
        TABLE = {}
        SEEN, ORDER = set(), []
        Q = collections.deque()
        BY = defaultdict(list)
        BUF = bytearray(4)
        SQ = [i * i for i in range(4)]
        def h(pkt, k):
            TABLE[k] = 1
            TABLE[k] += 1
            del TABLE[k]
            TABLE["a"].b = 2
            SEEN.add(k)
            ORDER.append(k)
            Q.popleft()
            BY[k].append(1)
            BUF[0] = 1
            SQ.sort()
            TABLE.setdefault(k, []).append(1)
            TABLE.get(k).append(1)
        """
    )
    assert where(findings) == [
        (10, 5),
        (11, 5),
        (12, 9),
        (13, 5),
        (14, 5),
        (15, 5),
        (16, 5),
        (17, 5),
        (18, 5),
        (19, 5),
        (20, 5),
        (21, 5),
    ]
    expected = [
        ("TABLE", "assignment"),
        ("TABLE", "augmented assignment"),
        ("TABLE", "del"),
        ("TABLE", "assignment"),
        ("SEEN", "add() call"),
        ("ORDER", "append() call"),
        ("Q", "popleft() call"),
        ("BY", "append() call"),
        ("BUF", "assignment"),
        ("SQ", "sort() call"),
        ("TABLE", "setdefault() call"),
        ("TABLE", "append() call"),
    ]
    for f, (name, how) in zip(findings, expected, strict=True):
        assert f.message.startswith(
            f"{MUTATE_MSG.format(name)} ({how}); module-level objects are per process"
        )


@pytest.mark.parametrize(
    "method",
    [
        "append",
        "extend",
        "insert",
        "pop",
        "remove",
        "clear",
        "update",
        "setdefault",
        "add",
        "discard",
        "popitem",
        "appendleft",
        "popleft",
        "sort",
        "reverse",
    ],
)
def test_each_mutating_method(method):
    (f,) = check(f"X = []\ndef h():\n    X.{method}()\n")
    assert (f.line, f.col) == (3, 5)
    assert f"{MUTATE_MSG.format('X')} ({method}() call)" in f.message


def test_mutation_in_lambda_and_method():
    findings = check(
        """\
        CACHE = dict()
        clear = lambda: CACHE.clear()
        class Helper:
            def put(self, k):
                CACHE[k] = 1
        """
    )
    assert where(findings) == [(2, 17), (5, 9)]


def test_constant_tables_and_other_bindings_are_fine():
    assert_clean(
        """\
        import nfos
        nf = nfos.NF("x")
        PORTS = {80: "http"}
        NAMES = ["a", "b"]
        PORTS[8080] = "alt"
        NAMES.append("c")
        class State(nfos.Record):
            flags: nfos.u8
        @nf.init
        def setup(p):
            nf.state.counters = nfos.DistributedObj(State)
            nf.table = {}
        def h(pkt, s, PORTS_ARG=PORTS):
            s.flags = 1
            pkt.ip.ttl -= 1
            x = PORTS.get(pkt.l4.dport, "?")
            y = NAMES[0]
            names = list(NAMES)
            names.append("d")
            local = {}
            local[1] = 2
            for p in PORTS:
                pass
        def shadow(PORTS, NAMES):
            PORTS[1] = 2
            NAMES.append(3)
        def rebound():
            PORTS = {}
            PORTS[1] = 2
        """
    )


# --------------------------------------------------------------------------- except


def test_bare_except_and_base_exception():
    findings = check(
        """\
        import builtins
        def h(pkt):
            try:
                pkt.send("x")
            except:
                pass
            try:
                pkt.send("x")
            except BaseException:
                pass
            try:
                pkt.send("x")
            except (ValueError, builtins.BaseException) as e:
                print(e)
        """
    )
    assert where(findings) == [(5, 5), (9, 5), (13, 5)]
    assert findings[0].message == (
        "bare except would swallow the runtime's transaction abort; catch Exception instead"
    )
    assert findings[1].message.startswith("except BaseException would swallow")
    assert findings[2].message.startswith("except BaseException would swallow")


def test_allowed_excepts():
    assert_clean(
        """\
        try:
            import fast
        except:
            fast = None
        def h(pkt):
            try:
                pkt.send("x")
            except Exception:
                pass
            try:
                pkt.send("x")
            except BaseException:
                pkt.drop()
                raise
            try:
                pkt.send("x")
            except BaseException as e:
                raise e
            try:
                pkt.send("x")
            finally:
                pkt.drop()
        """
    )


# --------------------------------------------------------------------------- ordering and files


def test_findings_sorted_by_line_and_col():
    findings = check(
        """\
        X = []
        def h():
            X.append(1); X.clear()
        import socket
        """
    )
    assert where(findings) == [(3, 5), (3, 18), (4, 8)]


def test_check_file(tmp_path):
    good = tmp_path / "good.py"
    good.write_text(LEGIT_NF)
    assert check_file(str(good)) == []
    bad = tmp_path / "bad.py"
    bad.write_text("import nfos\n\ndef h(pkt):\n    global N\n")
    (f,) = check_file(str(bad))
    assert str(f).startswith(f"{bad}:4:5: handler writes module global 'N'")


def test_syntax_error_is_one_finding(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("import nfos\n\ndef h(pkt:\n    pass\n")
    (f,) = check_file(str(bad))
    assert f.path == str(bad)
    assert f.line == 3
    assert f.message.startswith("syntax error: ")
    (g,) = check_source("x = (\n", "s.py")
    assert g.line == 1 and g.message.startswith("syntax error: ")
