"""S8, short: schemathesis against the served OpenAPI document with valid credentials (no server error, every
response as documented, invalid data refused), and every operation without credentials answering 401.

``PAGEQ_FUZZ_EXAMPLES`` examples per operation (10 by default); CI's PostgreSQL 18 pass sets 200 (the HTTP
API issue's acceptance), its PostgreSQL 15 pass keeps 10.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

import pageq
from http_helpers import Api, serve

EXAMPLES = int(os.environ.get("PAGEQ_FUZZ_EXAMPLES", "10"))
CHECKS = [
    not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
    negative_data_rejection,
]  # fmt: skip


@pytest.fixture
def served_api(app: pageq.App) -> Iterator[Api]:
    yield from serve(app)


def operations(served_api: Api) -> list[Any]:
    """The served document's operations, without its security requirements: every call carries valid
    credentials of ours (the test below checks the calls without them), so schemathesis must not mutate the
    Authorization header into "invalid" data that the call then replaces with a valid one (it would count
    the request as invalid, and its acceptance as a failure)."""
    document = served_api.http.get("/openapi.json").json()
    document.pop("security", None)
    document.get("components", {}).pop("securitySchemes", None)
    for methods in document["paths"].values():
        for operation in methods.values():
            operation.pop("security", None)
    # 413 is a refusal too (a body over the size limit, checked before it is parsed: a batch beyond maxItems
    # can be that big), and the documented one for it
    rejected = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, "5xx"]
    config = SchemathesisConfig.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": rejected}}}
    )
    schema = schemathesis.openapi.from_dict(document, config=config)
    schema.app = served_api.http.app
    schema.location = "/openapi.json"
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzz_with_credentials(served_api: Api, mode: GenerationMode) -> None:
    headers = served_api.headers("admin")
    found = operations(served_api)
    assert len(found) >= 20
    for operation in found:

        @given(operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
        )
        def run(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            run()
        except Unsatisfiable:  # nothing of it can be invalid (an operation without parameters or body)
            assert mode is GenerationMode.NEGATIVE


def test_every_operation_without_credentials_answers_401(served_api: Api) -> None:
    document = served_api.http.get("/openapi.json").json()
    checked = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if operation.get("security") == []:
                continue
            concrete = path.replace("{job_id}", "1").replace("{name}", "emails")
            body = {} if "requestBody" in operation else None
            response = served_api.http.request(method.upper(), concrete, json=body)
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            checked += 1
    assert checked >= 18
