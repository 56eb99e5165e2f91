"""The OpenAPI spec genrec serve publishes, fuzzed by schemathesis against the running server:
generated valid and invalid requests never get a 5xx, and answers match the spec's schemas.

(The operations are driven through hypothesis directly: schemathesis' pytest plugin does not run
under this pytest.)"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# The test extra installs it; the GPU machine has none, and its `cuda` run collects this module too.
schemathesis = pytest.importorskip("schemathesis")
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error, response_schema_conformance  # noqa: E402

OPERATIONS = [("POST", "/recommend"), ("POST", "/recommend/user"), ("GET", "/health")]


@pytest.fixture(scope="module")
def api_schema(plain_server):
    return schemathesis.openapi.from_url(f"{plain_server.url}/openapi.json")


def test_the_spec_lists_every_operation(api_schema):
    found = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


# GET /health has no parameters: nothing invalid to generate for it.
FUZZED = [(m, p, mode) for m, p in OPERATIONS for mode in GenerationMode]
FUZZED = [(m, p, mode) for m, p, mode in FUZZED if m == "POST" or mode == GenerationMode.POSITIVE]


@pytest.mark.parametrize("method,path,mode", FUZZED, ids=str)
def test_no_generated_request_gets_a_server_error(api_schema, plain_server, method, path, mode):
    operation = api_schema[path][method]
    checks = [not_a_server_error] + ([response_schema_conformance] if mode == GenerationMode.POSITIVE else [])

    @given(operation.as_strategy(generation_mode=mode))
    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def fuzz(case):
        case.call_and_validate(base_url=plain_server.url, checks=checks)

    fuzz()


IDS = [f"I{i:03d}" for i in range(24)]  # the tiny run's catalogue
ITEM = st.sampled_from(IDS) | st.sampled_from([*IDS, "", "I999", "i001"]) | st.text(max_size=5)
LIST = st.none() | st.lists(st.sampled_from(IDS), max_size=12) | st.lists(ITEM, max_size=4)
BODY = st.fixed_dictionaries(
    {"history": st.lists(st.sampled_from(IDS), min_size=1, max_size=8) | st.lists(ITEM, max_size=3)},
    optional={"k": st.integers(-1, 12), "exclude": LIST, "allow": LIST},
)
USER_BODY = st.fixed_dictionaries(
    {"user_id": st.sampled_from(["U0", "U7", "U59", "U60", "", "u1"])},
    optional={"k": st.integers(-1, 12), "exclude": LIST, "allow": LIST},
)


@pytest.mark.parametrize("path,bodies", [("/recommend", BODY), ("/recommend/user", USER_BODY)])
def test_requests_with_real_item_ids_never_get_a_server_error(api_schema, plain_server, path, bodies):
    """Bodies built from the run's own item and user ids (random strings are almost all unknown
    ids, refused early): the deep paths run, and every 200 keeps k, exclude and allow."""
    operation = api_schema[path]["POST"]

    @given(bodies)
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def fuzz(body):
        case = operation.Case(body=body, media_type="application/json")
        response = case.call_and_validate(
            base_url=plain_server.url, checks=[not_a_server_error, response_schema_conformance]
        )
        assert response.status_code in (200, 404, 422), response.text
        if response.status_code == 200:
            got = [r["item_id"] for r in response.json()["items"]]
            assert len(got) <= body.get("k", 10) and len(set(got)) == len(got)
            assert not set(got) & set(body.get("exclude") or [])
            if body.get("allow") is not None:
                assert set(got) <= set(body["allow"])

    fuzz()
