"""The C core's layering (src/nfos/_core/layers.txt), checked on the sources.

A file includes only headers of its own unit or of units listed before it;
no .c file declares an `extern`; every source file is in the table; base,
arena and the STM reach no Python.h; and the build makes a call to anything
its headers do not declare an error.
"""

from __future__ import annotations

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORE = os.path.join(ROOT, "src", "nfos", "_core")
INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*([<"])([^>"]+)[>"]', re.M)


def plugins() -> list[str]:
    """NAME.c of every STRUCTURE(NAME) line of structures.def."""
    with open(os.path.join(CORE, "structures.def")) as f:
        return [f"{name}.c" for name in re.findall(r"^STRUCTURE\((\w+)\)", f.read(), re.M)]


def layer_table() -> list[tuple[int, str, list[str]]]:
    rows = []
    with open(os.path.join(CORE, "layers.txt")) as f:
        for line in f:
            line = line.split("#", 1)[0].split()
            if line:
                files = [g for f_ in line[2:] for g in (plugins() if f_ == "@structures.def" else [f_])]
                rows.append((int(line[0]), line[1], files))
    return rows


TABLE = layer_table()
RANK = {name: i for i, (_layer, _unit, files) in enumerate(TABLE) for name in files}
UNIT = {name: unit for _layer, unit, files in TABLE for name in files}


def code(path: str) -> str:
    """The file without its comments and string literals."""
    with open(os.path.join(CORE, path)) as f:
        text = f.read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    return re.sub(r'"(?:\\.|[^"\\\n])*"', '""', text)


def includes(path: str) -> list[tuple[str, str]]:
    with open(os.path.join(CORE, path)) as f:
        return INCLUDE.findall(f.read())


def test_the_table_lists_every_source_once_and_layers_only_grow():
    listed = [name for _l, _u, files in TABLE for name in files]
    assert len(listed) == len(set(listed)), "a file is listed twice in layers.txt"
    on_disk = {f for f in os.listdir(CORE) if f.endswith((".c", ".h", ".def"))}
    assert on_disk - set(listed) == set(), f"sources missing from layers.txt: {sorted(on_disk - set(listed))}"
    assert set(listed) - on_disk == set(), f"layers.txt lists missing files: {sorted(set(listed) - on_disk)}"
    layers = [layer for layer, _u, _f in TABLE]
    assert layers == sorted(layers) and layers[0] == 0, f"layer numbers must not decrease: {layers}"


@pytest.mark.parametrize("path", sorted(RANK))
def test_includes_go_down_the_layers_only(path):
    for kind, name in includes(path):
        if kind == "<":
            continue
        assert name in RANK, f"{path} includes {name}, which layers.txt does not list"
        assert RANK[name] <= RANK[path], (
            f"{path} (unit {UNIT[path]}) includes {name} of the later unit {UNIT[name]}: "
            f"a lower layer may not depend on a higher one")


@pytest.mark.parametrize("path", sorted(p for p in RANK if p.endswith(".c")))
def test_no_extern_in_c_files(path):
    found = [line.strip() for line in code(path).splitlines() if re.search(r"\bextern\b", line)]
    assert not found, f"{path} declares externs (declare them in a header): {found}"


def reached(path: str, seen: set[str] | None = None) -> set[str]:
    seen = set() if seen is None else seen
    for _kind, name in includes(path):
        if name not in seen:
            seen.add(name)
            if os.path.exists(os.path.join(CORE, name)):
                reached(name, seen)
    return seen


@pytest.mark.parametrize("path", ["base.c", "base.h", "arena.c", "arena.h", "stm.c", "stm.h"])
def test_the_lower_layers_are_python_free(path):
    assert "Python.h" not in reached(path), f"{path} reaches Python.h: {sorted(reached(path))}"
    assert not re.search(r"\bPy[A-Z_]\w*", code(path)), f"{path} uses the Python C API"


def test_python_enters_at_the_process_layer_first():
    # Python.h must come before any system header in every file that uses it
    with open(os.path.join(CORE, "process.h")) as f:
        first = INCLUDE.search(f.read())
    assert first and first.group(2) == "Python.h", "process.h includes Python.h first"
    for path in RANK:
        if path.endswith(".c") and RANK[path] >= RANK["process.h"]:
            first = includes(path)[0]
            assert first[0] == '"', f"{path}: include its own header first (it brings Python.h first)"


def test_an_undeclared_call_does_not_build():
    with open(os.path.join(ROOT, "setup.py")) as f:
        assert "-Werror=implicit-function-declaration" in f.read()


def test_global_state_is_one_struct():
    """Besides `proc` (process.c) and constant tables, no .c file defines a non-static variable
    at file scope: what several files share is one struct, anything else is private."""
    offenders = []
    for path in RANK:
        if not path.endswith(".c"):
            continue
        depth = 0
        for line in code(path).splitlines():
            if depth == 0 and re.match(r"^[A-Za-z_][\w \t\*]*\b\w+\s*(\[[^\]]*\])*\s*(=[^;]*)?;", line) \
                    and not re.match(r"^(static|typedef|struct|enum|union|const)\b", line) \
                    and not re.search(r"\*\s*const\b", line) and "(" not in line:
                offenders.append(f"{path}: {line.strip()}")
            depth += line.count("{") - line.count("}")
    allowed = {"process.c: Process proc = {.arena_gen = 1};"}
    assert set(offenders) <= allowed, f"global variables outside process.c's proc: {sorted(set(offenders) - allowed)}"
