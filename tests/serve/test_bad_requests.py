"""Bad requests to genrec serve get a 4xx answer with a message saying what is wrong, never a
500; the server keeps answering afterwards."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.serve.conftest import BODY_LIMIT, MAX_LIST

GOOD = {"history": ["I001", "I002"], "k": 3}
JSON = {"content-type": "application/json"}

CASES = {
    "unknown item ids are named": (
        "/recommend", {"history": ["I001", "nope", "I002", "gone"]}, 422, "unknown item ids 'nope', 'gone'"
    ),
    "unknown ids in exclude": ("/recommend", {**GOOD, "exclude": ["zzz"]}, 422, "exclude: unknown item ids 'zzz'"),
    "unknown ids in allow": ("/recommend", {**GOOD, "allow": ["I003", "zz"]}, 422, "allow: unknown item ids 'zz'"),
    "empty history": ("/recommend", {"history": []}, 422, "history: List should have at least 1 item"),
    "no history": ("/recommend", {"k": 3}, 422, "history: Field required"),
    "k zero": ("/recommend", {**GOOD, "k": 0}, 422, "k: Input should be greater than or equal to 1"),
    "k over the beam": ("/recommend", {**GOOD, "k": 11}, 422, "k: Input should be less than or equal to 10"),
    "k negative": ("/recommend", {**GOOD, "k": -5}, 422, "k: Input should be greater than or equal to 1"),
    "k a string": ("/recommend", {**GOOD, "k": "ten"}, 422, "k: Input should be a valid integer"),
    "k a fraction": ("/recommend", {**GOOD, "k": 2.5}, 422, "k: Input should be a valid integer"),
    "ids as numbers": ("/recommend", {"history": [1, 2]}, 422, "history[0]: Input should be a valid string"),
    "history a string": ("/recommend", {"history": "I001"}, 422, "history: Input should be a valid list"),
    "exclude an object": ("/recommend", {**GOOD, "exclude": {"a": 1}}, 422, "exclude: Input should be a valid list"),
    "an unknown field": ("/recommend", {**GOOD, "users": [1]}, 422, "users: Extra inputs are not permitted"),
    "a list too long": (
        "/recommend", {**GOOD, "allow": ["I001"] * (MAX_LIST + 1)}, 422, f"at most {MAX_LIST} items"
    ),
    "body an array": ("/recommend", [GOOD], 422, "Input should be a valid dictionary"),
    "body null": ("/recommend", None, 422, "Input should be a valid dictionary"),
    "unknown user": ("/recommend/user", {"user_id": "U999"}, 404, "user id 'U999' is not a user of dataset cycle"),
    "user id a number": ("/recommend/user", {"user_id": 3}, 422, "user_id: Input should be a valid string"),
    "user with k out of range": ("/recommend/user", {"user_id": "U1", "k": 99}, 422, "k: Input should be less"),
    "user with unknown allow": (
        "/recommend/user", {"user_id": "U1", "allow": ["??"]}, 422, "allow: unknown item ids '??'"
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_json_requests_get_their_4xx_and_message(plain_server, name):
    path, body, status, message = CASES[name]
    got = httpx.post(f"{plain_server.url}{path}", content=json.dumps(body), headers=JSON)
    assert got.status_code == status, got.text
    assert message in got.json()["detail"], got.json()


RAW = {
    "malformed JSON": (b'{"history": ["I001",', JSON, 400, "malformed JSON in the request body"),
    "not JSON at all": (b"history=I001", JSON, 400, "malformed JSON"),
    "empty body": (b"", JSON, 422, "the request body is empty"),
    "not sent as JSON": (b'{"history": ["I001"]}', {"content-type": "text/plain"}, 415, "Content-Type: application/json"),
    "oversized body": (
        json.dumps({"history": ["I001"] * BODY_LIMIT}).encode(), JSON, 413, f"at most {BODY_LIMIT} bytes"
    ),
}


@pytest.mark.parametrize("name", sorted(RAW))
def test_bad_bodies_get_their_4xx_and_message(plain_server, name):
    content, headers, status, message = RAW[name]
    got = httpx.post(f"{plain_server.url}/recommend", content=content, headers=headers)
    assert got.status_code == status, got.text
    assert message in got.json()["detail"], got.json()


def test_an_oversized_body_without_a_declared_length_is_refused_as_it_arrives(plain_server):
    def chunks():  # chunked transfer: no Content-Length to check up front
        yield b'{"history": ['
        for _ in range(BODY_LIMIT // 8):
            yield b'"I001", '
        yield b'"I001"]}'

    got = httpx.post(f"{plain_server.url}/recommend", content=chunks(), headers=JSON)
    assert got.status_code == 413, got.text
    assert "request body too large" in got.json()["detail"]


def test_the_server_still_answers_after_bad_requests(plain_server):
    for path, body, _, _ in CASES.values():
        httpx.post(f"{plain_server.url}{path}", json=body)
    got = httpx.post(f"{plain_server.url}/recommend", json=GOOD)
    assert got.status_code == 200 and len(got.json()["items"]) == 3
    assert httpx.get(f"{plain_server.url}/health").json()["status"] == "ok"


def test_health_names_the_model(plain_server, served_run):
    import hashlib

    health = httpx.get(f"{plain_server.url}/health").json()
    info = json.loads((served_run / "run.json").read_text())
    assert health["status"] == "ok" and health["num_items"] == 24 and health["num_users"] == 60
    assert health["model"]["signature"] == info["train"]["signature_hash"]
    assert health["model"]["weights_sha256"] == hashlib.sha256((served_run / "model.safetensors").read_bytes()).hexdigest()
    assert health["device"] == "cpu" and health["max_k"] == 10
    assert health["batching"]["enabled"] is False
