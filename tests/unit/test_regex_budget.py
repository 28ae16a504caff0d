"""Every regular expression in ``models/`` stays linear on hostile 100 KB input (issue 8).

The patterns are discovered, not listed: every ``re.Pattern`` reachable from a module of the
``models`` package (module globals, class attributes, and lists/tuples/dicts of them), and the
source is checked so that no pattern can hide from the discovery (an inline ``re.search(...)``
or a ``re.compile`` inside a function). Each pattern then meets inputs built from its own parse
tree: its literal fragments repeated, a sample match with each unbounded repeat stretched to
100 KB and then broken by a stray character (the shape of the old RFC 822 bug), whitespace,
digit and letter runs, and nested-looking prefixes such as ``<!---->`` repeated (the shape of
the old HTML-detection bug). ``search``, ``match`` and ``fullmatch`` each get the budget.

The timing runs in a child process: a catastrophic pattern holds the GIL and cannot be
interrupted from a thread, so the parent kills the child at a deadline and names the input
it was on. Linear patterns take 0.1 to 70 ms on these inputs; quadratic ones take seconds
(RFC 822 at 16 KB of spaces: 1.75 s), exponential ones never finish.
"""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import models

SIZE = 100_000
BUDGET_SECONDS = 0.5  # per call; the linear patterns here need at most ~70 ms (unloaded), quadratic ones minutes
CHILD_DEADLINE_SECONDS = 120.0
REPO = Path(__file__).resolve().parents[2]

# The two patterns issue 8 measured (copied from the code before the fix), to prove the harness flags them.
OLD_HTML = (rb"(?:\xef\xbb\xbf)?\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html)[\s>]",
            re.IGNORECASE | re.DOTALL)
OLD_RFC822 = (r"(?:[A-Za-z]+,?\s*)?(\d{1,2})[\s-]+([A-Za-z]{3,9})\.?[\s-]+(\d{2,4})"
              r"(?:\s+(\d{1,2}):(\d{2})(?::(\d{2}))?(?:\.\d+)?)?"
              r"\s*(?:([+-])(\d{2}):?(\d{2})|([A-Za-z]{1,5}))?\s*\Z", 0)


# --------------------------------------------------------------------------- discovery


def model_modules() -> list[Any]:
    return [importlib.import_module(info.name) for info in pkgutil.walk_packages(models.__path__, "models.")]


def _patterns_in(value: Any, depth: int = 0) -> Iterator[re.Pattern[Any]]:
    if isinstance(value, re.Pattern):
        yield value
    elif depth < 2 and isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _patterns_in(item, depth + 1)
    elif depth < 2 and isinstance(value, dict):
        for item in value.values():
            yield from _patterns_in(item, depth + 1)


def discover() -> dict[str, re.Pattern[Any]]:
    """``module.name`` → pattern for every compiled pattern the models package holds."""
    found: dict[str, re.Pattern[Any]] = {}
    seen: set[int] = set()
    for module in model_modules():
        owners: list[tuple[str, dict[str, Any]]] = [(module.__name__, vars(module))]
        owners += [(f"{module.__name__}.{name}", vars(value)) for name, value in vars(module).items()
                   if isinstance(value, type) and value.__module__ == module.__name__]
        for prefix, namespace in owners:
            for name, value in namespace.items():
                for index, pattern in enumerate(_patterns_in(value)):
                    if id(pattern) not in seen:
                        seen.add(id(pattern))
                        found[f"{prefix}.{name}" + (f"[{index}]" if not isinstance(value, re.Pattern) else "")] = pattern
    return found


def regex_calls_in_source(path: Path) -> tuple[int, list[str]]:
    """(number of ``re.compile`` calls at module or class level, other ``re.*`` pattern calls with their lines)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = 0
    hidden: list[str] = []
    functions = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)]
    in_function = {id(inner) for fn in functions for inner in ast.walk(fn)}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "re"):
            continue
        if node.func.attr == "compile" and id(node) not in in_function:
            top_level += 1
        elif node.func.attr in ("compile", "match", "search", "fullmatch", "sub", "subn", "split", "findall", "finditer"):
            hidden.append(f"{path.name}:{node.lineno} re.{node.func.attr}")
    return top_level, hidden


# --------------------------------------------------------------------------- adversarial inputs

_MAXREPEAT = re._constants.MAXREPEAT  # type: ignore[attr-defined]


def _class_char(items: list[tuple[Any, Any]]) -> str:
    """One character an ``[...]`` class (or category) accepts."""
    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            return chr(arg)
        if name == "RANGE":
            return chr(arg[0])
        if name == "CATEGORY":
            cat = str(arg)
            return {"CATEGORY_SPACE": " ", "CATEGORY_DIGIT": "1", "CATEGORY_WORD": "a"}.get(cat, "x")
    return "x"


def _sample(tree: Any, stretch: int | None, counter: list[int], pieces: list[str]) -> str:
    """A string shaped like a match of ``tree``; the ``stretch``-th unbounded repeat is repeated SIZE times."""
    out: list[str] = []
    for op, arg in tree:
        name = str(op)
        if name == "LITERAL":
            out.append(chr(arg))
        elif name == "NOT_LITERAL":
            out.append("x" if arg != ord("x") else "y")
        elif name == "ANY":
            out.append("x")
        elif name == "IN":
            out.append(_class_char(arg))
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, high, sub = arg
            index = counter[0] if high == _MAXREPEAT else -1
            if high == _MAXREPEAT:
                counter[0] += 1
            body = _sample(sub, stretch, counter, pieces)
            times = max(low, 1)
            if index == stretch and index >= 0:
                times = max(1, SIZE // max(1, len(body)))
            out.append(body * times)
        elif name == "SUBPATTERN":
            out.append(_sample(arg[-1], stretch, counter, pieces))
        elif name == "BRANCH":
            branches = arg[1]
            out.append(_sample(branches[0], stretch, counter, pieces))
            for other in branches[1:]:
                pieces.append(_sample(other, None, [0], []))
        elif name == "ATOMIC_GROUP":
            out.append(_sample(arg, stretch, counter, pieces))
        # AT (anchors), ASSERT, ASSERT_NOT, GROUPREF...: nothing to add
    text = "".join(out)
    pieces.append(text)
    return text


def _literal_fragments(tree: Any) -> Iterator[str]:
    run: list[str] = []
    for op, arg in tree:
        name = str(op)
        if name == "LITERAL":
            run.append(chr(arg))
            continue
        if run:
            yield "".join(run)
            run = []
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            yield from _literal_fragments(arg[2])
        elif name == "SUBPATTERN":
            yield from _literal_fragments(arg[-1])
        elif name == "BRANCH":
            for branch in arg[1]:
                yield from _literal_fragments(branch)
    if run:
        yield "".join(run)


def adversarial_inputs(pattern: re.Pattern[Any]) -> list[tuple[str, str]]:
    """(label, text) pairs of about SIZE characters each, built from the pattern's own parse tree."""
    import re._parser as sre_parse  # noqa: PLC0415 - the stdlib parser of pattern syntax

    source = pattern.pattern.decode("latin-1") if isinstance(pattern.pattern, bytes) else pattern.pattern
    tree = sre_parse.parse(source, pattern.flags & ~re.UNICODE if isinstance(pattern.pattern, bytes) else pattern.flags)
    inputs: list[tuple[str, str]] = []

    def fill(unit: str) -> str:
        return unit * max(1, SIZE // max(1, len(unit)))

    pieces: list[str] = []
    counter = [0]
    base = _sample(tree, None, counter, pieces)
    inputs.append(("sample repeated", fill(base)))
    inputs.append(("sample repeated, broken", fill(base) + "\x00!"))
    for stretch in range(counter[0]):  # each unbounded repeat in turn, stretched, then broken
        stretched = _sample(tree, stretch, [0], [])
        inputs.append((f"repeat #{stretch} stretched", stretched))
        inputs.append((f"repeat #{stretch} stretched, broken", stretched + "\x00!"))
        inputs.append((f"repeat #{stretch} stretched, broken twice", stretched[: len(stretched) // 2] + "\x00" + stretched))
    fragments = sorted({f for f in _literal_fragments(tree) if f} | {p for p in pieces if p and len(p) < 200})
    for fragment in fragments:
        inputs.append((f"fragment {fragment[:20]!r} repeated", fill(fragment) + "\x00!"))
        inputs.append((f"fragment {fragment[:20]!r} + space repeated", fill(fragment + " ") + "\x00!"))
    for first, second in zip(fragments, fragments[1:], strict=False):
        inputs.append((f"fragments {first[:10]!r}{second[:10]!r} repeated", fill(first + second) + "\x00!"))
    generic = {
        "spaces": " ", "tabs and newlines": "\t\n", "spaces and dashes": " -", "digits": "1", "letters": "a",
        "upper letters": "A", "empty comments": "<!---->", "comment openers": "<!--", "nested-looking tags": "<a><!--",
        "ampersand hashes": "&#", "ampersand letters": "&a", "prolog openers": "<?xml ", "digits and spaces": "1 ",
        "letters comma space": "a, ",
    }
    for label, unit in generic.items():
        inputs.append((label, fill(unit) + "\x00!"))
        inputs.append((f"{base[:20]!r} then {label}", base[: len(base) // 2] + fill(unit) + "\x00!"))
    return inputs


# --------------------------------------------------------------------------- the measurement (runs in a child)


def measure(source: str | bytes, flags: int) -> None:
    """Print one JSON line per (input, method) before and after the call: the parent can name a hang."""
    pattern = re.compile(source, flags)
    for label, text in adversarial_inputs(pattern):
        subject: str | bytes = text.encode("latin-1", "replace") if isinstance(source, bytes) else text
        for method in ("search", "match", "fullmatch"):
            print(json.dumps({"start": label, "method": method, "chars": len(subject)}), flush=True)
            started = time.perf_counter()
            getattr(pattern, method)(subject)
            print(json.dumps({"done": label, "method": method, "seconds": time.perf_counter() - started}), flush=True)


def run_measurement(source: str | bytes, flags: int, deadline: float) -> tuple[list[dict[str, Any]], str | None]:
    """Timings of every call, and the call that was still running at the deadline (None if none)."""
    literal = repr(source)
    code = f"from tests.unit.test_regex_budget import measure; measure({literal}, {int(flags)})"
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,  # noqa: S603
                              timeout=deadline, check=True)
        output, hung = done.stdout, None
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        starts = [json.loads(line) for line in output.splitlines() if line.startswith('{"start"')]
        hung = f"{starts[-1]['start']} ({starts[-1]['method']}, {starts[-1]['chars']} chars)" if starts else "start-up"
    results = [json.loads(line) for line in output.splitlines() if line.startswith('{"done"')]
    return results, hung


DISCOVERED = discover()


def test_models_hold_the_patterns_we_expect_to_guard() -> None:
    """Discovery works (if this drops to zero, the budget test below would pass vacuously)."""
    assert "models.feed.dates._RFC822_RE" in DISCOVERED
    assert "models.feed.fields._ENTITY_REF_RE" in DISCOVERED


def test_no_pattern_in_models_hides_from_discovery() -> None:
    """Every ``re.compile`` is at module or class level (discovered above); no inline ``re.search(...)``."""
    compiled_in_source = 0
    hidden: list[str] = []
    for path in sorted((REPO / "models").rglob("*.py")):
        count, inline = regex_calls_in_source(path)
        compiled_in_source += count
        hidden += inline
    assert not hidden, f"compile regexes at module level so the budget test runs them: {hidden}"
    assert len(DISCOVERED) >= compiled_in_source, (sorted(DISCOVERED), compiled_in_source)


@pytest.mark.parametrize("name", sorted(DISCOVERED))
def test_every_regex_in_models_is_linear_on_hostile_input(name: str) -> None:
    pattern = DISCOVERED[name]
    results, hung = run_measurement(pattern.pattern, pattern.flags, CHILD_DEADLINE_SECONDS)
    assert hung is None, f"{name} did not finish on: {hung}"
    assert len(results) >= 3 * 20, f"too few inputs were tried for {name}: {len(results)}"
    slowest = max(results, key=lambda r: r["seconds"])
    print(f"{name}: {len(results)} calls, slowest {slowest['seconds'] * 1000:.1f} ms on {slowest['done']!r} ({slowest['method']})")
    over = [r for r in results if r["seconds"] > BUDGET_SECONDS]
    assert not over, f"{name} is super-linear: {over[:5]}"


@pytest.mark.parametrize(("source", "flags"), [OLD_HTML, OLD_RFC822], ids=["old-html-detection", "old-rfc822-date"])
def test_the_harness_flags_the_patterns_issue_8_measured(source: str | bytes, flags: int) -> None:
    """The same measurement catches both bugs (exponential: killed at the deadline; quadratic: over budget)."""
    results, hung = run_measurement(source, flags, 8.0)
    assert hung is not None or any(r["seconds"] > BUDGET_SECONDS for r in results)
