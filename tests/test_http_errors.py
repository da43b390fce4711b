"""Malformed HTTP input gets the right 4xx with the JSON error shape, changes nothing, and
never hurts the gateway. Every response carries X-Request-ID and X-Response-Time."""
import base64
import hashlib
import hmac
import http.client
import json
import time

import pytest

from harness import assert_error_shape, create_room, register, room_id, unique, wav_bytes, \
    NET_TIMEOUT


def raw_request(quaver, method, path, headers, body=b""):
    """A request with exactly the headers given (Content-Length too, even when it lies)."""
    c = http.client.HTTPConnection("127.0.0.1", quaver.http_port, timeout=NET_TIMEOUT)
    try:
        c.putrequest(method, path, skip_accept_encoding=True)
        for k, v in headers.items():
            c.putheader(k, v)
        c.endheaders()
        if body:
            c.send(body)
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        c.close()


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def make_jwt(secret, claims, alg="HS256"):
    header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())
    signing = f"{header}.{payload}".encode()
    if alg == "none":
        return f"{header}.{payload}."
    sig = hmac.new(secret.encode(), signing, hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(sig)}"


@pytest.fixture(scope="module")
def user(api):
    return register(api)


# ---- JSON bodies ------------------------------------------------------------------------------
@pytest.mark.parametrize("body,field", [
    (b"{", None),
    (b"not json at all", None),
    (b"[1,2,3]", None),
    (b"", None),
    (b'{"username": 12, "email": "a@b.c", "password": "longenough"}', "username"),
    (b'{"username": "okname", "email": ["a@b.c"], "password": "longenough"}', "email"),
    (b'{"username": "okname", "email": "a@b.c", "password": null}', "password"),
    (b'{"username": "okname", "email": "a@b.c"}', "password"),
    (b'{"email": "a@b.c", "password": "longenough"}', "username"),
    (b'{"username": "no spaces allowed", "email": "a@b.c", "password": "longenough"}',
     "username"),
    (b'{"username": "okname", "email": "not-an-address", "password": "longenough"}', "email"),
    (b'{"username": "okname", "email": "a@b.c", "password": "short"}', "password"),
])
def test_register_rejects_bad_bodies(api, body, field):
    r = api.post("/api/v1/auth/register", data=body,
                 headers={"Content-Type": "application/json"})
    err = assert_error_shape(r, 400)
    if field:
        assert field in err["message"], err


def test_bad_room_bodies(user):
    for body in ({"name": ""}, {"name": 5}, {}, {"name": "x" * 1000}, {"nom": "x"}):
        r = user.post("/api/v1/rooms", json=body)
        assert_error_shape(r, 400)
    r = user.post("/api/v1/rooms", data=b"{\"name\": \"unterminated",
                  headers={"Content-Type": "application/json"})
    assert_error_shape(r, 400)


def test_deeply_nested_json_is_400_and_the_gateway_stays_up(api, user):
    # civetweb's worker threads have 100 KB stacks; a recursive parse of this would overflow.
    for depth in (33, 5000, 200000):
        body = b"[" * depth + b"]" * depth
        r = user.post("/api/v1/rooms", data=body, headers={"Content-Type": "application/json"})
        assert_error_shape(r, 400)
        assert "nested" in r.json()["error"]["message"]
    assert api.get("/api/ping").status_code == 200


def test_deeply_nested_optimize_body_is_400_and_the_gateway_stays_up(quaver, api):
    # The advisor route parses its own (optional) body, up to 4 KB: 2048 levels, jansson's own
    # limit, which a 100 KB worker stack does not survive either. Administrators only, so the
    # body is read at all.
    admin = register(api)
    quaver.pg.sql(f"UPDATE users SET is_admin = true WHERE id = {int(admin.id)}")
    body = b"[" * 2040 + b"]" * 2040
    r = admin.post("/api/v1/performance/database/optimize", data=body,
                   headers={"Content-Type": "application/json"}, timeout=60)
    assert_error_shape(r, 400)
    assert "nested" in r.json()["error"]["message"]
    assert api.get("/api/ping").status_code == 200


def test_nothing_changes_after_a_bad_request(api):
    name = unique("bad")
    r = api.post("/api/v1/auth/register",
                 json={"username": name, "email": "broken", "password": "longenough"})
    assert_error_shape(r, 400)
    r = api.post("/api/v1/auth/login", json={"username": name, "password": "longenough"})
    assert_error_shape(r, 401)


def test_oversize_json_body_is_413(quaver, api):
    big = b'{"username": "' + b"a" * (quaver.max_body_bytes + 10) + b'"}'
    r = api.post("/api/v1/auth/register", data=big, headers={"Content-Type": "application/json"})
    assert_error_shape(r, 413)


def test_oversize_upload_is_refused_before_reading(quaver, user):
    """Content-Length says 1 GiB and no byte follows: the gateway must answer at once."""
    rid = room_id(create_room(user))
    t0 = time.monotonic()
    status, headers, body = raw_request(
        quaver, "POST", f"/api/v1/rooms/{rid}/tracks",
        {"Host": "localhost", "Authorization": f"Bearer {user.token}",
         "Content-Type": "audio/wav", "Content-Length": str(1 << 30)})
    assert status == 413, (status, body[:200])
    assert time.monotonic() - t0 < NET_TIMEOUT
    err = json.loads(body)["error"]
    assert err["request_id"] == headers.get("x-request-id")


def test_oversize_json_by_content_length(quaver):
    status, headers, body = raw_request(
        quaver, "POST", "/api/v1/auth/login",
        {"Host": "localhost", "Content-Type": "application/json",
         "Content-Length": str(quaver.max_body_bytes + 1)})
    assert status == 413, (status, body[:200])
    assert "error" in json.loads(body)


# ---- uploads ------------------------------------------------------------------------------------
def test_upload_content_types(user):
    rid = room_id(create_room(user))
    r = user.post(f"/api/v1/rooms/{rid}/tracks", data=wav_bytes(0.2),
                  headers={"Content-Type": "text/plain"})
    assert_error_shape(r, 415)
    r = user.post(f"/api/v1/rooms/{rid}/tracks", data=wav_bytes(0.2))  # no Content-Type
    assert_error_shape(r, 415)
    # Says audio, is not audio: the content decides.
    r = user.post(f"/api/v1/rooms/{rid}/tracks", data=b"<html>not audio</html>" * 50,
                  headers={"Content-Type": "audio/wav"})
    assert_error_shape(r, 415)
    r = user.post(f"/api/v1/rooms/{rid}/tracks",
                  files={"file": ("song.mp3", b"\x00\x01garbage" * 100, "audio/mpeg")})
    assert_error_shape(r, 415)
    # A multipart body without a file part, and one that is cut short.
    r = user.post(f"/api/v1/rooms/{rid}/tracks", data={"just": "a field"},
                  files={"x": ("", b"")})
    assert r.status_code in (400, 415), r.text
    assert_error_shape(r)
    r = user.post(f"/api/v1/rooms/{rid}/tracks", data=b"--xyz\r\nContent-Disposition: form",
                  headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert_error_shape(r, 400)
    # An empty file.
    r = user.post(f"/api/v1/rooms/{rid}/tracks", data=b"",
                  headers={"Content-Type": "audio/wav"})
    assert_error_shape(r, 400)
    # None of that made a track.
    q = user.get(f"/api/v1/rooms/{rid}/tracks").json()
    assert q["tracks"] == []


# ---- tokens -------------------------------------------------------------------------------------
def test_bad_tokens_are_401(quaver, api, user):
    now = int(time.time())
    good_claims = {"sub": str(user.id), "name": user.username, "adm": False,
                   "iat": now, "exp": now + 600}
    tokens = {
        "missing": None,
        "garbage": "garbage",
        "three dots": "a.b.c",
        "expired": make_jwt(quaver.jwt_secret, dict(good_claims, iat=now - 7200,
                                                    exp=now - 3600)),
        "wrong secret": make_jwt("not-the-secret" * 4, good_claims),
        "alg none": make_jwt("", good_claims, alg="none"),
        "tampered": user.token[:-4] + ("AAAA" if not user.token.endswith("AAAA") else "BBBB"),
    }
    for what, tok in tokens.items():
        r = api.post("/api/v1/rooms", token=tok, json={"name": "x"})
        err = assert_error_shape(r, 401)
        assert err["message"], what
    r = api.post("/api/v1/rooms", headers={"Authorization": "Basic dXNlcjpwYXNz"},
                 json={"name": "x"})
    assert_error_shape(r, 401)
    # The real token still works, and so does one we sign ourselves with the same claims and
    # the right secret: the refusals above were for the reason each case names.
    assert user.post("/api/v1/rooms", json={"name": "fine"}).status_code == 201
    forged_ok = make_jwt(quaver.jwt_secret, good_claims)
    assert api.post("/api/v1/rooms", token=forged_ok, json={"name": "x"}).status_code == 201


# ---- routing ------------------------------------------------------------------------------------
@pytest.mark.parametrize("method,path", [
    ("GET", "/nope"), ("GET", "/api/v1/rooms/abc"), ("GET", "/api/v1/rooms/0"),
    ("GET", "/api/v1/rooms/-1"), ("GET", "/api/v1/rooms/12/unknown"),
    ("GET", "/api/v1/rooms/99999999999999999999999"), ("POST", "/api/v2/rooms"),
    ("GET", "/api/v1/rooms/1/../../etc/passwd"),
])
def test_unknown_routes_are_404(api, user, method, path):
    r = api.req(method, path, token=user.token)
    assert_error_shape(r, 404)


@pytest.mark.parametrize("method,path,allowed", [
    ("PUT", "/api/v1/rooms", "POST"),
    ("DELETE", "/api/ping", "GET"),
    ("GET", "/api/v1/auth/login", "POST"),
    ("PATCH", "/api/v1/tracks/5/vote", "POST"),
    ("POST", "/api/health", "GET"),
])
def test_wrong_method_is_405_with_allow(api, method, path, allowed):
    r = api.req(method, path)
    assert_error_shape(r, 405)
    assert allowed in r.headers.get("Allow", ""), r.headers


# ---- request ids and timing --------------------------------------------------------------------
def test_request_id_and_response_time_on_every_response(api, user):
    cases = [("GET", "/api/ping", None), ("GET", "/nope", None),
             ("POST", "/api/v1/rooms", user.token), ("POST", "/api/v1/rooms", None)]
    for method, path, tok in cases:
        r = api.req(method, path, token=tok, json={"name": "rid test"})
        rid = r.headers.get("X-Request-ID")
        assert rid and len(rid) >= 8, (path, r.headers)
        assert r.headers.get("X-Response-Time"), (path, r.headers)
        # Given ids are echoed, on success and on error.
        mine = unique("req-")
        r = api.req(method, path, token=tok, json={"name": "rid test"},
                    headers={"X-Request-ID": mine})
        assert r.headers.get("X-Request-ID") == mine
        if r.status_code >= 400:
            assert r.json()["error"]["request_id"] == mine
    # Two requests without ids get different ones.
    a = api.get("/api/ping").headers["X-Request-ID"]
    b = api.get("/api/ping").headers["X-Request-ID"]
    assert a != b


def test_unsafe_request_id_is_replaced(api):
    for bad in ("has spaces in it", "x" * 200, "semi;colon", "<script>"):
        r = api.get("/nope", headers={"X-Request-ID": bad})
        got = r.headers.get("X-Request-ID")
        assert got and got != bad
        assert r.json()["error"]["request_id"] == got


def test_gateway_survives_garbage_requests(quaver, api):
    """Broken HTTP on a raw socket, then the gateway still answers."""
    import socket
    junk = [b"\x00\x01\x02\x03\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
            b"POST /api/v1/auth/login HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
            b"POST /api/v1/auth/login HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",
            b"GET /api/ping HTTP/1.1\r\n" + b"X-H: v\r\n" * 500 + b"\r\n"]
    for j in junk:
        with socket.create_connection(("127.0.0.1", quaver.http_port), timeout=5) as s:
            try:
                # The gateway may answer and close before we finish sending: that is fine.
                s.sendall(j)
                s.shutdown(socket.SHUT_WR)
                while s.recv(65536):
                    pass
            except OSError:
                pass
    r = api.get("/api/ping")
    assert r.status_code == 200
