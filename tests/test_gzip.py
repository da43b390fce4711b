"""Response compression (services/gateway/gw_gzip.h): a JSON or text answer of at least
gzip_min_bytes (1 KB) goes gzip-compressed to a client whose Accept-Encoding takes gzip, with
Content-Encoding and Vary; the decompressed bytes are exactly the identity answer; small
answers, refusing clients and audio are sent as they are; a cached route's ETag turns weak on
the compressed form and If-None-Match matches either form.

Bodies are checked raw (stream=True, r.raw.read() does not decode), and inflated here with
Python's zlib, an implementation independent of the gateway's."""
import zlib

import requests

from harness import create_room, register, room_id, track_id, upload_wav, wav_bytes, wait_for


def raw_get(user, path, ae, **headers):
    h = {"Accept-Encoding": ae, **headers}
    r = user.get(path, headers=h, stream=True)
    body = r.raw.read()
    r.close()
    return r, body


def gunzip(b):
    return zlib.decompress(b, 16 + zlib.MAX_WBITS)


def test_big_json_is_gzipped_for_clients_that_take_it(api):
    u = register(api)
    r0, plain = raw_get(u, "/api/v1/performance/cache", "identity")
    assert r0.status_code == 200 and len(plain) >= 1024, len(plain)
    assert "Content-Encoding" not in r0.headers
    assert r0.headers.get("Vary") == "Accept-Encoding"
    r, body = raw_get(u, "/api/v1/performance/cache", "gzip, deflate")
    assert r.status_code == 200
    assert r.headers["Content-Encoding"] == "gzip" and r.headers["Vary"] == "Accept-Encoding"
    assert body[:2] == b"\x1f\x8b" and int(r.headers["Content-Length"]) == len(body)
    assert len(body) < len(plain) / 2, (len(body), len(plain))
    doc = gunzip(body)
    assert doc.startswith(b'{"global":') and b'"gateway":' in doc
    # Prometheus text is text too.
    r, body = raw_get(u, "/api/metrics", "gzip")
    assert r.status_code == 200 and r.headers.get("Content-Encoding") == "gzip"
    assert b"# TYPE" in gunzip(body)


def test_compressed_bytes_are_counted(quaver, api):
    # quaver_http_gzip_bytes_total{form=identity|gzip}: the bytes before and after, as the
    # README promises operators (the ratio is theirs to compute).
    u = register(api)
    r, body = raw_get(u, "/api/v1/performance/cache", "gzip")
    assert r.headers.get("Content-Encoding") == "gzip"

    def totals():
        t = {}
        for line in requests.get(quaver.url + "/api/metrics", timeout=5).text.splitlines():
            if line.startswith("quaver_http_gzip_bytes_total{"):
                for form in ("identity", "gzip"):
                    if f'form="{form}"' in line:
                        t[form] = t.get(form, 0.0) + float(line.split()[-1])
        return t if t.get("gzip", 0) >= len(body) else None
    # (the monitor's page shows the gateway's snapshot of a second ago)
    t = wait_for(totals, 15, interval=0.5, what="quaver_http_gzip_bytes_total on /api/metrics")
    assert t.get("identity", 0) > t["gzip"], t


def test_refusals_and_small_answers_are_sent_as_they_are(api):
    u = register(api)
    for ae in ("identity", "gzip;q=0", "br", "*;q=0", "gzip;q=0, *"):
        r, body = raw_get(u, "/api/v1/performance/cache", ae)
        assert r.status_code == 200 and "Content-Encoding" not in r.headers, ae
        assert body.startswith(b'{"global":'), ae
    r, body = raw_get(u, "/api/v1/performance/cache", "*")
    assert r.headers.get("Content-Encoding") == "gzip"
    r, body = raw_get(u, "/api/ping", "gzip")       # far below 1 KB
    assert r.status_code == 200 and "Content-Encoding" not in r.headers
    assert "Vary" not in r.headers and body.startswith(b"{")


def test_audio_is_never_gzipped(api):
    u = register(api)
    rid = room_id(create_room(u))
    t = track_id(upload_wav(u, rid, wav_bytes(0.5), "x.wav"))
    r, body = raw_get(u, f"/api/v1/tracks/{t}/stream", "gzip")
    assert r.status_code == 200 and "Content-Encoding" not in r.headers
    assert body[:4] == b"RIFF"


def test_cached_route_etag_turns_weak_when_compressed(api):
    owner = register(api)
    rid = room_id(create_room(owner))
    for _ in range(12):   # enough participants for a body over 1 KB
        assert register(api).post(f"/api/v1/rooms/{rid}/join").status_code == 201
    p = f"/api/v1/rooms/{rid}/participants"
    r_id, plain = raw_get(owner, p, "identity")
    assert r_id.status_code == 200 and len(plain) >= 1024, len(plain)
    strong = r_id.headers["ETag"]
    assert strong.startswith('"'), strong
    r_gz, body = raw_get(owner, p, "gzip")
    assert r_gz.headers["Content-Encoding"] == "gzip"
    assert r_gz.headers["ETag"] == "W/" + strong
    assert gunzip(body) == plain
    # Either form of the tag validates either representation (weak comparison).
    for ae in ("gzip", "identity"):
        for tag in (strong, "W/" + strong):
            r, body = raw_get(owner, p, ae, **{"If-None-Match": tag})
            assert r.status_code == 304 and body == b"", (ae, tag)
