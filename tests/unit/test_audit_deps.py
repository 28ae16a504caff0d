"""The dependency audit's verdict on pip-audit reports: vulnerabilities fail, a vacuous audit is named as such."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def audit_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit_deps", ROOT / "deploy" / "audit_deps.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


AUDIT = audit_module()


def test_a_known_vulnerability_fails_with_package_advisory_and_fix() -> None:
    report = {"dependencies": [
        {"name": "aiohttp", "version": "3.13.2", "vulns": [{"id": "GHSA-6mq8-rvhq-8wgg", "fix_versions": ["3.13.3"]}]},
        {"name": "yarl", "version": "1.25.1", "vulns": []},
    ]}
    code, message = AUDIT.verdict(report, strict=False)
    assert code == 1
    assert "aiohttp 3.13.2: GHSA-6mq8-rvhq-8wgg (fixed in: 3.13.3)" in message and "setup.cfg" in message


def test_a_clean_audit_passes_and_counts_what_it_checked() -> None:
    report = {"dependencies": [{"name": "yarl", "version": "1.25.1", "vulns": []},
                               {"name": "local-thing", "skip_reason": "Dependency not found on PyPI"}]}
    assert AUDIT.verdict(report, strict=True) == (0, "dependency audit: 1 installed packages audited, no known "
                                                     "vulnerabilities (1 skipped: not on PyPI)")


def test_an_audit_that_checked_nothing_is_not_called_a_pass() -> None:
    report = {"dependencies": [{"name": n, "skip_reason": f"Dependency not found on PyPI and could not be audited: {n}"}
                               for n in ("aiohttp", "yarl")]}
    code, message = AUDIT.verdict(report, strict=False)
    assert code == 0 and "NOTHING WAS AUDITED" in message and "not a pass" in message
    assert AUDIT.verdict(report, strict=True)[0] == 1
