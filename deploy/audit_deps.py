#!/usr/bin/env python3
"""`make test`'s dependency audit: pip-audit over the installed environment (.venv).

A known vulnerability in any installed package (the project's pins and their transitive
dependencies) fails the run, naming the package, the advisory and the fixed versions. pip-audit
reads PyPI's per-release vulnerability data; when that cannot be reached, every package is
"skipped" and pip-audit alone would still say "No known vulnerabilities found": this script says
instead that nothing was audited (and fails when AUDIT_STRICT=1), so a vacuous audit is never
mistaken for a pass.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PIP_AUDIT = ROOT / ".venv" / "bin" / "pip-audit"
TIMEOUT_SECONDS = 600


def verdict(report: dict[str, Any], strict: bool) -> tuple[int, str]:
    """(exit code, message) for a pip-audit JSON report."""
    dependencies = report.get("dependencies", [])
    vulnerable = [d for d in dependencies if d.get("vulns")]
    skipped = [d for d in dependencies if d.get("skip_reason")]
    audited = len(dependencies) - len(skipped)
    if vulnerable:
        lines = ["dependency audit FAILED: installed packages with known vulnerabilities (pip-audit):"]
        for dep in vulnerable:
            for vuln in dep["vulns"]:
                fixed = ", ".join(vuln.get("fix_versions") or []) or "no fixed release yet"
                lines.append(f"  {dep['name']} {dep.get('version', '?')}: {vuln.get('id')} (fixed in: {fixed})")
        lines.append("Raise the floor of that package in setup.cfg (install_requires, or add the transitive one there) "
                     "to a fixed version, reinstall (make setup) and run make test again.")
        return 1, "\n".join(lines)
    if audited == 0 and dependencies:
        reason = skipped[0].get("skip_reason", "")
        message = (f"dependency audit: NOTHING WAS AUDITED: all {len(skipped)} packages were skipped "
                   f"(first: {reason}). PyPI's vulnerability data is not reachable from this machine; "
                   "this is not a pass." + ("" if strict else " (AUDIT_STRICT=1 makes this fail.)"))
        return (1 if strict else 0), message
    note = f" ({len(skipped)} skipped: not on PyPI)" if skipped else ""
    return 0, f"dependency audit: {audited} installed packages audited, no known vulnerabilities{note}"


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "audit.json"
        command = [str(PIP_AUDIT), "--local", "--skip-editable", "--progress-spinner", "off",
                   "--format", "json", "--output", str(output)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False)  # noqa: S603
        except (OSError, subprocess.TimeoutExpired) as exc:
            print(f"dependency audit FAILED: pip-audit could not run: {exc}", file=sys.stderr)
            return 2
        if not output.exists():
            tail = "\n".join((done.stderr or done.stdout).splitlines()[-15:])
            print(f"dependency audit FAILED: pip-audit exited {done.returncode} without a report:\n{tail}", file=sys.stderr)
            return 2
        report = json.loads(output.read_text())
    code, message = verdict(report, strict=os.environ.get("AUDIT_STRICT") == "1")
    print(message, file=sys.stderr if code else sys.stdout)
    return code


if __name__ == "__main__":
    sys.exit(main())
