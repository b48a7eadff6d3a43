"""Schemathesis against the REST extension's own OpenAPI description (``/mlops/api/openapi.json``), over a real
``jupyter server`` on 127.0.0.1 with a token, serving a project whose quickstart ran and whose registry holds a
champion and a version waiting for approval. Every operation is called with generated path parameters, query
strings and JSON bodies — schema-valid ones and, for the operations that take input, schema-breaking ones — and
each answer must be no server error (no 5xx), a documented status code, the documented content type and a body
that conforms to the response schema. The same operations without the token must all be refused."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from mlops_nb.ui.server import openapi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nbtools import jupyter_app, quickstart_with_pending_model  # noqa: E402

pytestmark = pytest.mark.slow

TOKEN = "mlops-nb-security-suite"  # noqa: S105 - a test server's token on 127.0.0.1
AUTH = {"Authorization": f"token {TOKEN}"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

#: The description the server serves, read from the code that serves it (a test below checks they are equal).
schema = schemathesis.openapi.from_dict(openapi.spec())


@pytest.fixture(scope="module")
def server(tmp_path_factory, mlflow_template):
    """The base URL of a real ``jupyter server`` with the extension, over a project with runs and models."""
    folder = tmp_path_factory.mktemp("security") / "project"
    quickstart_with_pending_model(folder, mlflow_template)
    with jupyter_app(folder, folder.parent / "jupyter", app="server", token=TOKEN) as base:
        yield base


def test_the_served_description_is_the_one_fuzzed(server):
    served = requests.get(f"{server}{openapi.BASE}/openapi.json", headers=AUTH, timeout=10)
    assert served.status_code == 200 and served.json() == openapi.spec()


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_operation_errors_or_breaks_its_schema(case, server):
    case.call_and_validate(base_url=server, headers=AUTH, checks=CHECKS, timeout=30)


@schema.parametrize()
@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_operation_answers_without_the_token(case, server):
    response = case.call(base_url=server, timeout=30)
    if case.method == "OPTIONS":  # Jupyter's CORS preflight answer: headers only, no data
        assert response.status_code in {200, 204, 405} and not response.content
        return
    # 403 for every documented method; a malformed body is refused by tornado (400) and a method no handler
    # answers (PUT, TRACE, ...) with 403 (no XSRF token) or 405, before authentication: none reveals anything
    assert response.status_code in {400, 403, 405}, (case.method, case.formatted_path, response.status_code,
                                                     response.text[:200])  # fmt: skip
    assert "churn" not in response.text and "quickstart" not in response.text
    assert list(response.json()) == ["error"]
    assert "secret" not in response.text and TOKEN not in response.text
