"""A vulnerability report over the installed dependencies (pip-audit): reported, never blocking.

Run by ``make audit`` (and so by ``.ci/run``) with the project's virtual environment. It asks PyPI's
vulnerability data first and OSV when PyPI had none for any package (a mirror of PyPI serves no vulnerability
data), each with a time limit, then prints one summary line and one line per known vulnerability. It always exits 0:
a finding is for people to read, not a reason to stop the build.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TIMEOUT = 30  # seconds per vulnerability service


def audit(service: str) -> tuple[dict | None, str]:
    """Run pip-audit over this environment against ``service``; return its JSON report (None if it gave none)
    and the last line it wrote to stderr."""
    pip_audit = Path(sys.executable).with_name("pip-audit")
    command = [str(pip_audit), "--local", "--format", "json", "--progress-spinner", "off", "--vulnerability-service"]
    try:
        done = subprocess.run([*command, service], capture_output=True, text=True, timeout=TIMEOUT)
    except FileNotFoundError:
        return None, "pip-audit is not installed (the dev extra has it)"
    except subprocess.TimeoutExpired:
        return None, f"no answer within {TIMEOUT} s"
    last = (done.stderr.strip().splitlines() or [""])[-1]
    if "ConnectionError" in last or "Failed to resolve" in last:
        last = "could not reach it"
    try:
        return json.loads(done.stdout), last
    except json.JSONDecodeError:
        return None, last[:200]


def summarize(report: dict, service: str) -> list[str]:
    """Lines for people from a pip-audit JSON report: a summary, then one line per vulnerability."""
    packages = report.get("dependencies", [])
    skipped = [p for p in packages if p.get("skip_reason")]
    audited = [p for p in packages if not p.get("skip_reason")]
    found = [(p, v) for p in audited for v in p.get("vulns", [])]
    lines = [
        f"pip-audit ({service}): {len(audited)} of {len(packages)} installed packages audited, "
        f"{len(found)} known vulnerabilit{'y' if len(found) == 1 else 'ies'}"
        + (f", {len(skipped)} skipped (not known to the service)" if skipped else "")
    ]
    for package, vuln in found:
        fixed = ", ".join(vuln.get("fix_versions", [])) or "no fixed version yet"
        lines.append(f"  {package['name']} {package.get('version', '?')}: {vuln.get('id', '?')} (fixed in {fixed})")
    return lines


def main() -> int:
    """Print the report; exit 0 whatever it says."""
    reasons = []
    for service in ("pypi", "osv"):
        report, last = audit(service)
        if report is None:
            reasons.append(f"{service}: {last}")
            continue
        packages = report.get("dependencies", [])
        if packages and all(p.get("skip_reason") for p in packages):
            reasons.append(f"{service}: none of {len(packages)} packages is known to it")
            continue
        print("\n".join(summarize(report, service)))
        return 0
    print("pip-audit: no vulnerability report (not blocking); " + "; ".join(reasons))
    return 0


if __name__ == "__main__":
    sys.exit(main())
