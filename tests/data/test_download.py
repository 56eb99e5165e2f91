"""Downloads against a loopback HTTP server: resume, checksums, truncation, corruption, zip members."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
import zipfile

import pytest
from typer.testing import CliRunner

from genrec.cli import app
from genrec.data import DownloadError
from genrec.data.download import download_dataset, download_file
from genrec.data.registry import DATASETS, KnownDataset, RemoteFile

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files[path]``; ``server.faults[path]`` is a list of faults, one used per request:
    "truncate" (announce everything, send a third, hang up), "corrupt" (flip a byte),
    "ignore_range" (always answer 200 with the whole file)."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = self.server.files.get(self.path)
        self.server.requests.append((self.path, self.headers.get("Range")))
        if body is None:
            self.send_error(404)
            return
        faults = self.server.faults.get(self.path, [])
        fault = faults.pop(0) if faults else None
        if fault == "corrupt":
            body = body[:10] + bytes([body[10] ^ 0xFF]) + body[11:]
        start = 0
        rng = self.headers.get("Range")
        if rng and fault != "ignore_range":
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        rest = body[start:]
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        if fault == "truncate":
            self.wfile.write(rest[: len(rest) // 3])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(rest)


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.files, srv.faults, srv.requests = {"/data.bin": PAYLOAD}, {}, []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


def test_complete_download_is_verified_and_recorded(server, tmp_path):
    record = download_file(f"{server.url}/data.bin", tmp_path / "data.bin", sha256=SHA)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD
    assert record["verified"] and record["sha256"] == SHA and record["bytes"] == len(PAYLOAD)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]
    # Present and matching: not fetched again.
    download_file(f"{server.url}/data.bin", tmp_path / "data.bin", sha256=SHA)
    assert len(server.requests) == 1


def test_truncated_download_errors_then_resumes(server, tmp_path):
    server.faults["/data.bin"] = ["truncate"]
    dest = tmp_path / "data.bin"
    with pytest.raises(
        DownloadError, match=r"truncated: .* ended after 34133 of 102400 bytes; rerun to resume"
    ):
        download_file(f"{server.url}/data.bin", dest, sha256=SHA, retries=0)
    assert not dest.exists()  # no partial file where the good one would be
    assert (tmp_path / "data.bin.part").stat().st_size == 34133
    record = download_file(f"{server.url}/data.bin", dest, sha256=SHA, retries=0)
    assert server.requests[-1] == ("/data.bin", "bytes=34133-")  # resumed, not restarted
    assert dest.read_bytes() == PAYLOAD and record["verified"]
    assert not (tmp_path / "data.bin.part").exists()


def test_interruptions_are_retried_within_one_call(server, tmp_path):
    server.faults["/data.bin"] = ["truncate", "truncate"]
    download_file(f"{server.url}/data.bin", tmp_path / "d.bin", sha256=SHA, retries=2)
    assert (tmp_path / "d.bin").read_bytes() == PAYLOAD
    assert [r for _, r in server.requests] == [None, "bytes=34133-", "bytes=56888-"]


def test_corrupt_download_is_deleted(server, tmp_path):
    server.faults["/data.bin"] = ["corrupt"]
    with pytest.raises(DownloadError, match=f"sha256 mismatch for data.bin: expected {SHA}"):
        download_file(f"{server.url}/data.bin", tmp_path / "data.bin", sha256=SHA)
    assert list(tmp_path.iterdir()) == []


def test_existing_file_with_wrong_checksum_is_replaced(server, tmp_path):
    (tmp_path / "data.bin").write_bytes(b"stale")
    download_file(f"{server.url}/data.bin", tmp_path / "data.bin", sha256=SHA)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(b"junk that is not the start")
    server.faults["/data.bin"] = ["ignore_range"]
    download_file(f"{server.url}/data.bin", tmp_path / "data.bin", sha256=SHA)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_complete_part_file_is_finished_without_refetching(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)
    download_file(f"{server.url}/data.bin", tmp_path / "data.bin", sha256=SHA)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD
    assert server.requests == [("/data.bin", f"bytes={len(PAYLOAD)}-")]


def test_http_errors_are_reported(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(f"{server.url}/missing.bin", tmp_path / "m.bin")
    assert list(tmp_path.iterdir()) == []


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def test_dataset_download_extracts_and_writes_manifest(server, tmp_path):
    udata = b"1\t1\t5\t10\n1\t2\t4\t11\n1\t3\t3\t12\n"
    server.files["/ml.zip"] = make_zip({"ml-tiny/u.data": udata, "ml-tiny/u.item": b"1|A|||x\n"})
    ds = KnownDataset(
        name="test/tiny",
        format="movielens",
        folder="test/tiny",
        files=(
            RemoteFile(
                f"{server.url}/ml.zip",
                "ml.zip",
                extract=True,
                strip_prefix="ml-tiny/",
                member_sha256={"u.data": hashlib.sha256(udata).hexdigest()},
            ),
            RemoteFile(f"{server.url}/data.bin", "data.bin", SHA),
        ),
        description="tiny",
        citation="none",
        terms="test only",
    )
    manifest = download_dataset(ds, tmp_path)
    folder = tmp_path / "test" / "tiny"
    assert (folder / "u.data").read_bytes() == udata
    assert json.loads((folder / "download.json").read_text()) == manifest
    zip_record, bin_record = manifest["files"]
    assert not zip_record["verified"] and len(zip_record["sha256"]) == 64  # no published zip checksum
    assert [(m["path"], m["verified"]) for m in zip_record["extracted"]] == [
        ("u.data", True),
        ("u.item", False),
    ]
    assert bin_record["verified"] and bin_record["expected_sha256"] == SHA


def test_zip_members_are_checked(server, tmp_path):
    server.files["/bad.zip"] = make_zip({"u.data": b"tampered", "../escape.txt": b"x"})
    ds = KnownDataset(
        "t/bad",
        "movielens",
        "t/bad",
        (RemoteFile(f"{server.url}/bad.zip", "bad.zip", extract=True, member_sha256={"u.data": SHA}),),
        "",
        "",
        "",
    )
    with pytest.raises(DownloadError, match=r"member u\.data has sha256"):
        download_dataset(ds, tmp_path)
    assert not (tmp_path / "t" / "bad" / "u.data").exists()
    server.files["/bad.zip"] = make_zip({"../escape.txt": b"x"})
    assert not (tmp_path / "t" / "bad" / "bad.zip").exists()  # a rejected archive is not reused
    with pytest.raises(DownloadError, match="would land outside"):
        download_dataset(ds, tmp_path)
    assert not (tmp_path / "t" / "escape.txt").exists()


def test_registry_entries_are_well_formed():
    for name, ds in DATASETS.items():
        assert name == ds.name and ds.format in ("p5", "amazon2014", "movielens", "table")
        for f in ds.files:
            assert f.url.startswith("https://") and "/" not in f.filename
            assert f.sha256 is None or len(f.sha256) == 64


def test_cli_download_unknown_name_and_list(monkeypatch, tmp_path):
    monkeypatch.setenv("GENREC_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["data", "download", "nope/nothing"])
    assert result.exit_code == 1 and "unknown dataset 'nope/nothing'" in result.output
    listed = CliRunner().invoke(app, ["data", "list"])
    assert listed.exit_code == 0 and "movielens/ml-100k" in listed.output
