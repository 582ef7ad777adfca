"""``nfos check NF.py``: reject NF code that would break the transactional runtime.

An NF file must be a plain sequential program.  The runtime runs its handlers
as transactions on several worker processes, so state may live only in nfos
structures, records and packet-set state: anything kept in module globals is
per process and is not rolled back when a transaction aborts, and threads,
locks, sleeps or child processes inside a handler break the runtime.

This module finds such code statically (with :mod:`ast`) and reports each
problem with ``path:line:col`` (1-based line and column).
"""

from __future__ import annotations

import ast
import tokenize
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

__all__ = ["Finding", "check_file", "check_source"]


@dataclass(frozen=True)
class Finding:
    """One problem: 1-based ``line`` and ``col`` in ``path``."""

    path: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.message}"


# --------------------------------------------------------------------------- rule tables

FORBIDDEN_MODULES = frozenset(
    {
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
    }
)

# Concurrency primitives, rejected as ``anything.Lock`` or as a name from-imported from anywhere.
PRIMITIVES = frozenset(
    {"Lock", "RLock", "Semaphore", "BoundedSemaphore", "Condition", "Event", "Barrier"}
)

MUTATING_METHODS = frozenset(
    {
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
        "extendleft",
        "rotate",
        "sort",
        "reverse",
        "subtract",
        "move_to_end",
        "difference_update",
        "intersection_update",
        "symmetric_difference_update",
        "__setitem__",
        "__delitem__",
    }
)

# Constructors whose result is a mutable container.
_MUTABLE_BUILTINS = frozenset({"set", "dict", "list", "bytearray"})
_MUTABLE_COLLECTIONS = frozenset({"defaultdict", "deque", "Counter", "OrderedDict", "ChainMap"})
_MUTABLE_MODULES = frozenset({"collections", "array"})

# The framework's own names (e.g. a hypothetical ``nfos.Event``) are never primitives.
_TRUSTED_MODULES = frozenset({"nfos"})

_SHARED_STATE_HINT = "keep state in an nfos structure or packet-set state"


def _msg_import(mod: str) -> str:
    return (
        f"NF code must not use {mod}: the runtime runs handlers in transactions on several "
        "processes; use nfos data structures for shared state"
    )


def _msg_primitive(what: str) -> str:
    return (
        f"blocking/concurrency primitive {what} is not allowed in NF code: handlers run as "
        "transactions on several processes and must not block, lock or spawn; "
        "use nfos data structures for shared state"
    )


def _msg_global(name: str) -> str:
    return (
        f"handler writes module global '{name}'; module globals are per process and not "
        f"rolled back; {_SHARED_STATE_HINT}"
    )


def _msg_nonlocal(name: str) -> str:
    return (
        f"handler writes enclosing variable '{name}' (nonlocal); closure variables are per "
        f"process and not rolled back; {_SHARED_STATE_HINT}"
    )


def _msg_mutate(name: str, how: str) -> str:
    return (
        f"handler mutates module-level '{name}' ({how}); module-level objects are per process "
        f"and not rolled back; {_SHARED_STATE_HINT}"
    )


def _msg_globals_call() -> str:
    return (
        "handler calls globals(); module globals are per process and not rolled back; "
        f"{_SHARED_STATE_HINT}"
    )


def _msg_dynamic(what: str) -> str:
    return (
        f"NF code must not use {what}: nfos check cannot see what it runs or imports "
        "(threads, locks, processes); import modules by name"
    )


def _msg_except(what: str) -> str:
    return f"{what} would swallow the runtime's transaction abort; catch Exception instead"


# --------------------------------------------------------------------------- helpers

_FUNCTION_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
_SCOPE_NODES = (*_FUNCTION_NODES, ast.ClassDef)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _module_scope_nodes(tree: ast.Module) -> Iterator[ast.AST]:
    """Every node executed in module scope (not inside a def, lambda or class body)."""
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, _SCOPE_NODES):
            continue
        todo.extend(ast.iter_child_nodes(node))


def _arg_names(args: ast.arguments) -> set[str]:
    all_args = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    if args.vararg:
        all_args.append(args.vararg)
    if args.kwarg:
        all_args.append(args.kwarg)
    return {a.arg for a in all_args}


@dataclass
class _Scope:
    locals: set[str] = field(default_factory=set)
    globals: set[str] = field(default_factory=set)
    nonlocals: set[str] = field(default_factory=set)


def _function_scope(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> _Scope:
    """The names a function binds locally, and those it declares global/nonlocal."""
    scope = _Scope(locals=_arg_names(node.args))
    body: list[ast.AST] = [node.body] if isinstance(node, ast.Lambda) else list(node.body)
    todo = body
    while todo:
        n = todo.pop()
        if isinstance(n, ast.Global):
            scope.globals.update(n.names)
        elif isinstance(n, ast.Nonlocal):
            scope.nonlocals.update(n.names)
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store | ast.Del):
            scope.locals.add(n.id)
        elif isinstance(n, ast.Import | ast.ImportFrom):
            for a in n.names:
                if a.name != "*":
                    scope.locals.add(a.asname or a.name.split(".")[0])
        elif isinstance(n, ast.ExceptHandler) and n.name:
            scope.locals.add(n.name)
        elif isinstance(n, ast.MatchAs | ast.MatchStar) and n.name:
            scope.locals.add(n.name)
        elif isinstance(n, ast.MatchMapping) and n.rest:
            scope.locals.add(n.rest)
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            scope.locals.add(n.name)
            # Decorators, defaults and bases run in this scope; the body does not.
            todo.extend(n.decorator_list)
            if isinstance(n, ast.ClassDef):
                todo.extend(n.bases)
                todo.extend(k.value for k in n.keywords)
            else:
                todo.extend(d for d in (*n.args.defaults, *n.args.kw_defaults) if d is not None)
            continue
        if isinstance(n, ast.Lambda):
            todo.extend(d for d in (*n.args.defaults, *n.args.kw_defaults) if d is not None)
            continue
        if isinstance(n, _COMPREHENSIONS):
            continue  # comprehension variables live in their own scope
        todo.extend(ast.iter_child_nodes(n))
    scope.locals -= scope.globals
    return scope


def _root_name(node: ast.AST) -> ast.Name | None:
    """The name at the base of ``X[k].attr``, ``X.get(k)[i]`` and the like.

    ``X.setdefault(k, []).append(v)`` stops at ``setdefault`` (reported on its own).
    """
    while True:
        if isinstance(node, ast.Attribute | ast.Subscript | ast.Starred):
            node = node.value
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
        ):
            node = node.func.value
        else:
            return node if isinstance(node, ast.Name) else None


def _flat_targets(target: ast.AST) -> Iterator[ast.AST]:
    if isinstance(target, ast.Tuple | ast.List):
        for elt in target.elts:
            yield from _flat_targets(elt)
    elif isinstance(target, ast.Starred):
        yield from _flat_targets(target.value)
    else:
        yield target


def _is_base_exception(node: ast.AST | None) -> bool:
    if isinstance(node, ast.Name):
        return node.id == "BaseException"
    if isinstance(node, ast.Attribute):
        return node.attr == "BaseException"
    if isinstance(node, ast.Tuple):
        return any(_is_base_exception(e) for e in node.elts)
    return False


def _reraises(handler: ast.ExceptHandler) -> bool:
    """True if the handler body re-raises the caught exception at its top level."""
    for stmt in handler.body:
        if isinstance(stmt, ast.Raise):
            if stmt.exc is None:
                return True
            if handler.name and isinstance(stmt.exc, ast.Name) and stmt.exc.id == handler.name:
                return True
    return False


# --------------------------------------------------------------------------- the checker


class _Checker(ast.NodeVisitor):
    def __init__(self, path: str, tree: ast.Module) -> None:
        self.path = path
        self.findings: list[Finding] = []
        self.scopes: list[_Scope] = []
        # local name -> module it names, from ``import os`` / ``import time as t``
        self.module_alias: dict[str, str] = {}
        # local name -> (module, name), from ``from collections import deque as dq``
        self.from_alias: dict[str, tuple[str, str]] = {}
        self._collect_imports(tree)
        self.mutable_globals = self._collect_mutable_globals(tree)
        self.module_objects = self._collect_module_objects(tree)

    # ---- pre-pass

    def _collect_imports(self, tree: ast.Module) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname:
                        self.module_alias[a.asname] = a.name
                    else:
                        top = a.name.split(".")[0]
                        self.module_alias[top] = top
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for a in node.names:
                    if a.name != "*":
                        self.from_alias[a.asname or a.name] = (node.module, a.name)

    def _is_mutable_value(self, value: ast.AST) -> bool:
        if isinstance(
            value, ast.Dict | ast.List | ast.Set | ast.ListComp | ast.DictComp | ast.SetComp
        ):
            return True
        if not isinstance(value, ast.Call):
            return False
        func = value.func
        if isinstance(func, ast.Name):
            if func.id in _MUTABLE_BUILTINS or func.id in _MUTABLE_COLLECTIONS:
                return True
            origin = self.from_alias.get(func.id)
            return origin is not None and origin[0].split(".")[0] in _MUTABLE_MODULES
        if isinstance(func, ast.Attribute):
            if func.attr in _MUTABLE_COLLECTIONS:
                return True
            if isinstance(func.value, ast.Name):
                mod = self.module_alias.get(func.value.id, func.value.id)
                return mod.split(".")[0] in _MUTABLE_MODULES
        return False

    def _collect_mutable_globals(self, tree: ast.Module) -> set[str]:
        names: set[str] = set()

        def bind(target: ast.AST, value: ast.AST | None) -> None:
            if value is None:
                return
            if isinstance(target, ast.Name):
                if self._is_mutable_value(value):
                    names.add(target.id)
            elif (
                isinstance(target, ast.Tuple | ast.List)
                and isinstance(value, ast.Tuple | ast.List)
                and len(target.elts) == len(value.elts)
            ):
                for t, v in zip(target.elts, value.elts, strict=True):
                    bind(t, v)

        for node in _module_scope_nodes(tree):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    bind(target, node.value)
            elif isinstance(node, ast.AnnAssign):
                bind(node.target, node.value)
            elif isinstance(node, ast.NamedExpr):
                bind(node.target, node.value)
        return names

    def _is_nfos_value(self, value: ast.AST) -> bool:
        """``nfos.Map(...)``, ``nfos.NF(...)``, ``NF(...)`` from-imported from nfos, or a name/
        attribute chain rooted at the nfos module: objects whose writes are transactional."""
        node = value.func if isinstance(value, ast.Call) else value
        while isinstance(node, ast.Attribute | ast.Subscript | ast.Call):
            node = node.func if isinstance(node, ast.Call) else node.value
        if not isinstance(node, ast.Name):
            return False
        module = self.module_alias.get(node.id) or self.from_alias.get(node.id, ("",))[0]
        return module.split(".")[0] in _TRUSTED_MODULES

    def _collect_module_objects(self, tree: ast.Module) -> set[str]:
        """Names bound in module scope to objects a handler could change through an attribute
        or an item (instances, classes, functions, modules): everything but nfos objects."""
        names: set[str] = set()
        for node in _module_scope_nodes(tree):
            if isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
                value = node.value
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if value is None or self._is_nfos_value(value):
                    continue
                for target in targets:
                    names.update(t.id for t in _flat_targets(target) if isinstance(t, ast.Name))
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                if not (isinstance(node, ast.ClassDef) and any(self._is_nfos_value(b) for b in node.bases)):
                    names.add(node.name)
            elif isinstance(node, ast.Import):
                names.update(a.asname or a.name.split(".")[0] for a in node.names
                             if a.name.split(".")[0] not in _TRUSTED_MODULES)
        return names

    # ---- reporting

    def report(self, node: ast.AST, message: str) -> None:
        line = getattr(node, "lineno", 1) or 1
        col = (getattr(node, "col_offset", 0) or 0) + 1
        self.findings.append(Finding(self.path, line, col, message))

    @property
    def in_function(self) -> bool:
        return bool(self.scopes)

    def _refers_to_module(self, name: str) -> bool:
        for scope in reversed(self.scopes):
            if name in scope.globals:
                return True
            if name in scope.locals or name in scope.nonlocals:
                return False
        return True

    def _mutable_module_root(self, node: ast.AST, through_attribute: bool = False) -> str | None:
        """The module-level name at the root of ``node`` if changing ``node`` changes a
        module-level object: a mutable container, or (``through_attribute``: an attribute
        or item is assigned) any non-nfos object."""
        root = _root_name(node)
        if root is None:
            return None
        if root.id not in self.mutable_globals and not (through_attribute and root.id in self.module_objects):
            return None
        return root.id if self._refers_to_module(root.id) else None

    # ---- scopes

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        if not isinstance(node, ast.Lambda):
            for d in node.decorator_list:
                self.visit(d)
            if node.returns:
                self.visit(node.returns)
        args = node.args
        for default in (*args.defaults, *args.kw_defaults):
            if default is not None:
                self.visit(default)
        for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
            if a is not None and a.annotation is not None:
                self.visit(a.annotation)
        self.scopes.append(_function_scope(node))
        try:
            if isinstance(node, ast.Lambda):
                self.visit(node.body)
            else:
                for stmt in node.body:
                    self.visit(stmt)
        finally:
            self.scopes.pop()

    visit_FunctionDef = _visit_function
    visit_AsyncFunctionDef = _visit_function
    visit_Lambda = _visit_function

    # ---- imports

    def _check_module(self, node: ast.AST, module: str) -> None:
        if module.split(".")[0] in FORBIDDEN_MODULES:
            self.report(node, _msg_import(module))

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            self._check_module(a, a.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            self._check_module(node, node.module)

    # ---- primitives

    def _banned_attribute(self, node: ast.Attribute) -> str | None:
        mod = None
        if isinstance(node.value, ast.Name):
            mod = self.module_alias.get(node.value.id)
            if mod is not None and mod.split(".")[0] in _TRUSTED_MODULES:
                return None
        if node.attr in PRIMITIVES:
            return node.attr
        return _banned_function(mod, node.attr) if mod is not None else None

    def visit_Attribute(self, node: ast.Attribute) -> None:
        what = self._banned_attribute(node)
        if what is not None:
            self.report(node, _msg_primitive(what))
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load) and node.id in self.from_alias:
            module, name = self.from_alias[node.id]
            if module.split(".")[0] in _TRUSTED_MODULES:
                return
            what = name if name in PRIMITIVES else _banned_function(module, name)
            if what is not None:
                self.report(node, _msg_primitive(what))

    # ---- module state

    def visit_Global(self, node: ast.Global) -> None:
        if self.in_function:
            for name in node.names:
                self.report(node, _msg_global(name))

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        for name in node.names:
            self.report(node, _msg_nonlocal(name))

    def _check_targets(self, targets: Sequence[ast.AST], how: str) -> None:
        if not self.in_function:
            return
        for target in targets:
            for t in _flat_targets(target):
                if isinstance(t, ast.Subscript | ast.Attribute):
                    name = self._mutable_module_root(t, through_attribute=True)
                    if name is not None:
                        self.report(t, _msg_mutate(name, how))

    def visit_Assign(self, node: ast.Assign) -> None:
        self._check_targets(node.targets, "assignment")
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._check_targets([node.target], "augmented assignment")
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self._check_targets([node.target], "assignment")
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        self._check_targets(node.targets, "del")
        self.generic_visit(node)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self._check_targets([node.target], "for-loop target")
        self.generic_visit(node)

    visit_AsyncFor = visit_For

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if self.in_function:
            if isinstance(func, ast.Attribute) and func.attr in MUTATING_METHODS:
                name = self._mutable_module_root(func.value)
                if name is not None:
                    self.report(node, _msg_mutate(name, f"{func.attr}() call"))
            elif (
                isinstance(func, ast.Name)
                and func.id == "globals"
                and self._refers_to_module("globals")
            ):
                self.report(node, _msg_globals_call())
            elif isinstance(func, ast.Name) and func.id in ("setattr", "delattr") and node.args:
                name = self._mutable_module_root(node.args[0], through_attribute=True)
                if name is not None:
                    self.report(node, _msg_mutate(name, f"{func.id}() call"))
        # __import__("threading") / importlib.import_module("threading"), however it is named
        if self._is_dynamic_import(func):
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                self._check_module(node, arg.value)
            else:
                self.report(node, _msg_dynamic("an import whose module name is computed"))
        elif isinstance(func, ast.Name) and func.id in ("exec", "eval") and self._refers_to_module(func.id):
            self.report(node, _msg_dynamic(f"{func.id}()"))
        self.generic_visit(node)

    def _is_dynamic_import(self, func: ast.AST) -> bool:
        if isinstance(func, ast.Name):
            if func.id == "__import__":
                return True
            origin = self.from_alias.get(func.id)
            return origin is not None and origin[1] in ("import_module", "__import__")
        return isinstance(func, ast.Attribute) and func.attr in ("import_module", "__import__")

    # ---- exceptions

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if self.in_function and not _reraises(node):
            if node.type is None:
                self.report(node, _msg_except("bare except"))
            elif _is_base_exception(node.type):
                self.report(node, _msg_except("except BaseException"))
        self.generic_visit(node)


def _banned_function(module: str, name: str) -> str | None:
    """``os.system`` style names that block or spawn, or None."""
    if module == "os" and (
        name in ("fork", "forkpty", "system", "popen") or name.startswith(("spawn", "posix_spawn"))
    ):
        return f"os.{name}"
    if module == "time" and name == "sleep":
        return "time.sleep"
    return None


# --------------------------------------------------------------------------- entry points


def _syntax_finding(path: str, err: SyntaxError | ValueError) -> Finding:
    if isinstance(err, SyntaxError):
        return Finding(path, err.lineno or 1, err.offset or 1, f"syntax error: {err.msg}")
    return Finding(path, 1, 1, f"syntax error: {err}")


def check_source(source: str, path: str = "<nf>") -> list[Finding]:
    """Check NF source code; findings sorted by (line, col).  A syntax error is one finding."""
    try:
        tree = ast.parse(source, filename=path)
    except (SyntaxError, ValueError) as err:
        return [_syntax_finding(path, err)]
    checker = _Checker(path, tree)
    checker.visit(tree)
    unique = set(checker.findings)
    return sorted(unique, key=lambda f: (f.line, f.col, f.message))


def check_file(path: str) -> list[Finding]:
    """Check an NF file (its encoding declaration honoured); a syntax error is one finding."""
    try:
        with tokenize.open(path) as f:
            source = f.read()
    except SyntaxError as err:  # bad encoding declaration
        return [_syntax_finding(str(path), err)]
    except UnicodeDecodeError as err:
        return [Finding(str(path), 1, 1, f"syntax error: cannot decode file: {err}")]
    return check_source(source, str(path))
