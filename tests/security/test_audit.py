"""The dependency report of `make audit` (.ci/audit.py): what it tells people from pip-audit's JSON."""

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("audit", Path(__file__).parents[2] / ".ci" / "audit.py")
audit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(audit)


def test_summary_names_each_vulnerability_and_its_fix():
    report = {
        "dependencies": [
            {"name": "requests", "version": "2.0.0", "vulns": [{"id": "GHSA-x", "fix_versions": ["2.31.0"]}]},
            {"name": "duckdb", "version": "1.4.0", "vulns": []},
            {"name": "mlops-nb", "skip_reason": "Dependency not found on PyPI and could not be audited"},
        ]
    }
    lines = audit.summarize(report, "pypi")
    assert lines[0] == (
        "pip-audit (pypi): 2 of 3 installed packages audited, 1 known vulnerability, 1 skipped (not known to the service)"
    )
    assert lines[1:] == ["  requests 2.0.0: GHSA-x (fixed in 2.31.0)"]


def test_a_clean_report_is_one_line():
    report = {"dependencies": [{"name": "duckdb", "version": "1.4.0", "vulns": []}]}
    assert audit.summarize(report, "osv") == [
        "pip-audit (osv): 1 of 1 installed packages audited, 0 known vulnerabilities"
    ]
