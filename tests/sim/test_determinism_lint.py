"""The deterministic-core rule as a lint: core code reaches no clock, randomness or thread.

protocol, storage and coordinator (and the broker's decision code) take `now` as an argument
and draw random ids from `odradek.determinism`, the seam the simulator swaps. This test walks
their syntax trees and fails on any import of `time`, `random`, `secrets` or `threading` (except
`threading.Lock`/`RLock`, which storage uses to guard state shared with the fdatasync executor,
and the broker's sync embedding, which starts a thread on purpose), and any call of
`uuid.uuid1`/`uuid4`, `os.urandom` or `datetime.now`.

A second rule: a set iterates in hash order (string hashing changes per process, object hashes
with addresses), so core code never loops over an expression that is syntactically a set — a
set literal or comprehension, `set(...)`/`frozenset(...)`, or `|`, `&`, `-`, `^` of one —
except where order cannot matter: building another set, or inside `sorted`, `any`, `all`,
`sum`, `min`, `max`, `len`. (Names holding sets are not seen; those loops sort by hand.)
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable
from pathlib import Path

import odradek

SOURCE = Path(odradek.__file__).parent
CORE_PACKAGES = ("protocol", "storage", "coordinator", "broker")
# The set-iteration rule covers the cluster's decision code too.
SET_ORDER_PACKAGES = (*CORE_PACKAGES, "controller", "replication")
ORDER_FREE_CALLS = {"sorted", "any", "all", "sum", "min", "max", "len", "set", "frozenset"}

FORBIDDEN_MODULES = {"time", "random", "secrets", "threading"}
FORBIDDEN_CALLS = {
    ("uuid", "uuid1"),
    ("uuid", "uuid4"),
    ("os", "urandom"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("time", "time"),
    ("time", "monotonic"),
}
ALLOWED_THREADING = {"Lock", "RLock"}
# module (relative to odradek/) -> forbidden imports it may still use, and why.
EXCEPTIONS = {
    # `Broker.__enter__`: the sync embedding runs the broker's loop on a thread of its own.
    "broker/server.py": {"threading"},
}


def _problems_in_packages(
    packages: Iterable[str], check: Callable[[str, str], list[str]]
) -> list[str]:
    """`check(source, relative path)` over every module of `packages`, in path order."""
    files = [path for package in packages for path in (SOURCE / package).rglob("*.py")]
    assert len(files) > 50
    return [
        problem
        for path in sorted(files)
        for problem in check(path.read_text(), path.relative_to(SOURCE).as_posix())
    ]


def _violations_in(source: str, relative: str) -> list[str]:
    allowed = EXCEPTIONS.get(relative, set())
    tree = ast.parse(source, filename=relative)
    found = []
    threading_aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                if root == "threading" and "threading" not in allowed:
                    threading_aliases.add(alias.asname or alias.name)
                elif root in FORBIDDEN_MODULES and root not in allowed:
                    found.append(f"{relative}:{node.lineno} imports {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            if root in FORBIDDEN_MODULES and root not in allowed:
                names = {alias.name for alias in node.names}
                if root != "threading" or not names <= ALLOWED_THREADING:
                    found.append(f"{relative}:{node.lineno} imports from {node.module}")
            if node.module == "uuid" and {"uuid1", "uuid4"} & {a.name for a in node.names}:
                found.append(f"{relative}:{node.lineno} imports a uuid generator")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            pair = (node.value.id, node.attr)
            if pair in FORBIDDEN_CALLS and pair[0] not in allowed:
                found.append(f"{relative}:{node.lineno} uses {pair[0]}.{pair[1]}")
            if node.value.id in threading_aliases and node.attr not in ALLOWED_THREADING:
                found.append(f"{relative}:{node.lineno} uses threading.{node.attr}")
    return found


def _set_like(node: ast.expr) -> bool:
    if isinstance(node, ast.Set | ast.SetComp):
        return True
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return node.func.id in ("set", "frozenset")
    if isinstance(node, ast.BinOp) and isinstance(
        node.op, ast.BitOr | ast.BitAnd | ast.Sub | ast.BitXor
    ):
        return _set_like(node.left) or _set_like(node.right)
    return False


def _set_iterations_in(source: str, relative: str) -> list[str]:
    """Loops and comprehensions over a set expression whose order could matter."""
    tree = ast.parse(source, filename=relative)
    order_free: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.SetComp):
            order_free.add(id(node))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ORDER_FREE_CALLS
        ):
            order_free.update(id(argument) for argument in node.args)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.For | ast.AsyncFor) and _set_like(node.iter):
            found.append(f"{relative}:{node.lineno} loops over a set: {ast.unparse(node.iter)}")
        elif (
            isinstance(node, ast.ListComp | ast.GeneratorExp | ast.DictComp)
            and id(node) not in order_free
        ):
            for generator in node.generators:
                if _set_like(generator.iter):
                    found.append(
                        f"{relative}:{node.lineno} iterates a set: {ast.unparse(generator.iter)}"
                    )
    return found


def test_core_layers_iterate_no_set_where_order_matters() -> None:
    problems = _problems_in_packages(SET_ORDER_PACKAGES, _set_iterations_in)
    assert problems == [], "\n".join(problems)


def test_the_set_rule_sees_loops_over_sets_and_lets_order_free_uses_pass() -> None:
    flagged = {
        "for x in set(names):\n    pass\n": "loops over a set",
        "for x in a | {b}:\n    pass\n": "loops over a set",
        "y = [x for x in frozenset(names)]\n": "iterates a set",
        "y = {x: 1 for x in {a, b}}\n": "iterates a set",
    }
    for source, expected in flagged.items():
        problems = _set_iterations_in(source, "broker/sample.py")
        assert any(expected in problem for problem in problems), (source, problems)
    for source in (
        "y = sorted(x for x in set(names))\n",
        "y = {x for x in set(a) | set(b)}\n",
        "y = sum(1 << x for x in set(operations))\n",
        "for x in sorted(set(names)):\n    pass\n",
    ):
        assert _set_iterations_in(source, "broker/sample.py") == [], source


def test_core_layers_reach_no_clock_randomness_or_thread() -> None:
    problems = _problems_in_packages(CORE_PACKAGES, _violations_in)
    assert problems == [], "\n".join(problems)


def test_the_lint_catches_what_it_forbids() -> None:
    # The lint itself must see each forbidden pattern (it is no use if it passes everything).
    samples = {
        "import time\n": "imports time",
        "import random\n": "imports random",
        "import uuid\nx = uuid.uuid4()\n": "uses uuid.uuid4",
        "import threading\nthreading.Thread(target=print)\n": "uses threading.Thread",
        "from threading import Thread\n": "imports from threading",
        "from uuid import uuid4\n": "imports a uuid generator",
    }
    for source, expected in samples.items():
        problems = _violations_in(source, "storage/sample.py")
        assert any(expected in problem for problem in problems), (source, problems)
    assert _violations_in("import threading\nlock = threading.Lock()\n", "storage/x.py") == []
