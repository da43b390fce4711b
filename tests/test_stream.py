"""Streaming a track: the bytes that come back are exactly the bytes uploaded, whole or by
range, with the HTTP caching and range headers a media player relies on."""
import email.utils
import hashlib

import pytest

from harness import assert_error_shape, create_room, register, room_id, track_id, upload_wav, \
    wav_bytes


@pytest.fixture(scope="module")
def uploaded(api):
    """A room with two tracks: a small WAV and one larger than the gateway's 1 MiB read chunk."""
    owner = register(api)
    rid = room_id(create_room(owner))
    small = wav_bytes(1.0, freq=440)
    big = wav_bytes(15.0, freq=523)          # ~1.3 MB: several chunks through stream Read
    t_small = track_id(upload_wav(owner, rid, small, "small.wav"))
    t_big = track_id(upload_wav(owner, rid, big, "big.wav"))
    return owner, {t_small: small, t_big: big}


def stream(user, tid, headers=None, **kw):
    return user.get(f"/api/v1/tracks/{tid}/stream", headers=headers or {}, **kw)


def test_whole_file_equals_upload(uploaded):
    owner, files = uploaded
    for tid, data in files.items():
        r = stream(owner, tid)
        assert r.status_code == 200, r.text[:300]
        assert r.content == data, f"track {tid}: {len(r.content)} bytes back, {len(data)} sent"
        assert int(r.headers["Content-Length"]) == len(data)
        assert r.headers.get("Accept-Ranges") == "bytes"
        assert r.headers["Content-Type"].startswith("audio/")
        # ETag: strong, and here the SHA-256 of the content.
        assert r.headers.get("ETag") == f'"{hashlib.sha256(data).hexdigest()}"'
        lm = r.headers.get("Last-Modified")
        assert lm and email.utils.parsedate_to_datetime(lm) is not None, lm


@pytest.mark.parametrize("spec", ["0-0", "0-99", "100-", "-50", "1000-1999", "0-"])
def test_single_ranges(uploaded, spec):
    owner, files = uploaded
    for tid, data in files.items():
        size = len(data)
        a, b = spec.split("-")
        if a == "":
            first, last = size - int(b), size - 1
        else:
            first, last = int(a), (int(b) if b else size - 1)
        r = stream(owner, tid, {"Range": f"bytes={spec}"})
        assert r.status_code == 206, f"Range {spec}: {r.status_code} {r.text[:200]}"
        assert r.headers["Content-Range"] == f"bytes {first}-{last}/{size}"
        assert r.content == data[first:last + 1]
        assert int(r.headers["Content-Length"]) == last - first + 1


def test_range_across_chunks(uploaded):
    owner, files = uploaded
    tid, data = max(files.items(), key=lambda kv: len(kv[1]))
    first, last = (1 << 20) - 10, (1 << 20) + 4095        # straddles the 1 MiB chunk edge
    r = stream(owner, tid, {"Range": f"bytes={first}-{last}"})
    assert r.status_code == 206
    assert r.content == data[first:last + 1]
    # A range whose end is past the file is cut at the file's end.
    r = stream(owner, tid, {"Range": f"bytes={len(data) - 10}-{len(data) + 1000}"})
    assert r.status_code == 206
    assert r.content == data[-10:]
    assert r.headers["Content-Range"] == f"bytes {len(data) - 10}-{len(data) - 1}/{len(data)}"


def test_unsatisfiable_range_is_416(uploaded):
    owner, files = uploaded
    tid, data = next(iter(files.items()))
    for spec in (f"{len(data)}-", f"{len(data) + 100}-{len(data) + 200}"):
        r = stream(owner, tid, {"Range": f"bytes={spec}"})
        assert_error_shape(r, 416)
        assert r.headers.get("Content-Range") == f"bytes */{len(data)}"


def test_malformed_range_gets_the_whole_file(uploaded):
    # RFC 7233 3.1: a server may ignore a Range it cannot parse; then it is a plain 200.
    owner, files = uploaded
    tid, data = next(iter(files.items()))
    for bad in ("bytes=abc", "bytes=5-2", "lines=0-10", "bytes=--1", "bytes="):
        r = stream(owner, tid, {"Range": bad})
        if r.status_code == 200:
            assert r.content == data, bad
        else:
            assert_error_shape(r)
            assert r.status_code in (400, 416), (bad, r.status_code)


def test_conditional_get(uploaded):
    owner, files = uploaded
    tid, data = next(iter(files.items()))
    etag = stream(owner, tid).headers["ETag"]
    r = stream(owner, tid, {"If-None-Match": etag})
    assert r.status_code == 304, r.status_code
    assert r.content == b""
    assert r.headers.get("ETag") == etag
    r = stream(owner, tid, {"If-None-Match": '"0000"'})
    assert r.status_code == 200 and r.content == data
    # If-Range with a stale validator: the whole file, not the range.
    r = stream(owner, tid, {"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert r.status_code == 200 and r.content == data
    r = stream(owner, tid, {"Range": "bytes=0-9", "If-Range": etag})
    assert r.status_code == 206 and r.content == data[:10]


def test_stream_auth(api, uploaded):
    owner, files = uploaded
    tid, data = next(iter(files.items()))
    # An <audio> element cannot send headers: ?token= works too.
    r = api.get(f"/api/v1/tracks/{tid}/stream?token={owner.token}")
    assert r.status_code == 200 and r.content == data
    assert_error_shape(api.get(f"/api/v1/tracks/{tid}/stream"), 401)
    assert_error_shape(api.get(f"/api/v1/tracks/{tid}/stream?token=not.a.jwt"), 401)
