"""Failures of what Quaver depends on: PostgreSQL dropping every dbopt connection, Redis going
away and coming back. Nothing that PostgreSQL could answer fails for long, and the cache keeps
serving what it holds."""
import hashlib
import os
import re
import signal
import time

from harness import create_room, register, room_id, track_id, unique, upload_wav, wait_for, \
    wav_bytes


def terminate_dbopt_connections(pg):
    out = pg.sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                 f"WHERE datname = '{pg.dbname}' AND pid <> pg_backend_pid() "
                 "AND backend_type = 'client backend'")
    return int(out.strip() or 0)


def _room_get(mdp, pb, rid):
    """room_get straight from dbopt: the gateway caches GET /rooms/{id}, and this test is
    about dbopt's connections, so it reads where no cache stands in between."""
    req = pb.dbopt.QueryRequest(name="room_get", params=[pb.dbopt.Value(text=str(rid))])
    return mdp.call("dbopt", "Query", req)


def test_dbopt_survives_terminated_connections(quaver, api, mdp, pb):
    u = register(api)
    rid = room_id(create_room(u, "before"))
    assert _room_get(mdp, pb, rid).status == 200

    killed = terminate_dbopt_connections(quaver.pg)
    assert killed >= 1, "dbopt held no connection to terminate"

    # A read right after may fail once (503) while dbopt notices; by the second it works.
    res = _room_get(mdp, pb, rid)
    if res.status != 200:
        assert res.status == 503, (res.status, res.error)
        res = _room_get(mdp, pb, rid)
    assert res.status == 200, f"second read after pg_terminate_backend: {res.status} {res.error}"
    rows = pb.dbopt.QueryReply()
    rows.ParseFromString(res.payload)
    assert len(rows.rows) == 1
    # And from then on everything works: reads, writes, on every pooled connection.
    for i in range(12):
        res = _room_get(mdp, pb, rid)
        assert res.status == 200, (i, res.status, res.error)
    r = u.post("/api/v1/rooms", json={"name": "after"})
    assert r.status_code == 201, r.text
    assert quaver.daemons["dbopt"].alive()
    # dbopt reconnected by itself: it holds connections again.
    n = int(quaver.pg.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                          f"'{quaver.pg.dbname}' AND backend_type = 'client backend' "
                          "AND pid <> pg_backend_pid()").strip())
    assert n >= 1


def test_dbopt_survives_repeated_terminations(quaver, api, mdp, pb):
    u = register(api)
    rid = room_id(create_room(u))
    for _ in range(3):
        terminate_dbopt_connections(quaver.pg)
        ok = 0
        for _ in range(3):
            if _room_get(mdp, pb, rid).status == 200:
                ok += 1
        assert ok >= 2


def test_writes_are_in_postgresql(quaver, api):
    """An acknowledged write is a row: checked in the database itself, not through the API."""
    u = register(api)
    rid = room_id(create_room(u, "in the db"))
    name = quaver.pg.sql(f"SELECT name FROM rooms WHERE id = {int(rid)}").strip()
    assert name == "in the db"
    n = quaver.pg.sql(f"SELECT count(*) FROM room_participants WHERE room_id = {int(rid)}")
    assert n.strip() == "1"
    h = quaver.pg.sql(f"SELECT password_hash FROM users WHERE id = {int(u.id)}").strip()
    assert h.startswith("$argon2id$"), h


def _cache_health(mdp, pb):
    res = mdp.call("cache", "Health", pb.env.Empty())
    assert res.status == 200, res
    h = pb.env.HealthReply()
    h.ParseFromString(res.payload)
    return h


def _redis_state(mdp, pb):
    return {d.name: d.state for d in _cache_health(mdp, pb).dependencies}.get("redis")


def test_cache_basics(mdp, pb):
    ns, key = "api_response", unique("k")   # a declared namespace (issue 3)
    res = mdp.call("cache", "Get", pb.cache.CacheKey(namespace=ns, key=key))
    assert res.status == 200
    g = pb.cache.CacheGetReply()
    g.ParseFromString(res.payload)
    assert not g.found
    res = mdp.call("cache", "Set", pb.cache.CacheSetRequest(namespace=ns, key=key,
                                                            value=b"\x00bin\xffary"))
    assert res.status == 200, res
    res = mdp.call("cache", "Get", pb.cache.CacheKey(namespace=ns, key=key))
    g.ParseFromString(res.payload)
    assert g.found and g.value == b"\x00bin\xffary"
    res = mdp.call("cache", "Delete", pb.cache.CacheKey(namespace=ns, key=key))
    assert res.status == 200
    c = pb.cache.CacheCountReply()
    c.ParseFromString(res.payload)
    assert c.removed >= 1
    res = mdp.call("cache", "Get", pb.cache.CacheKey(namespace=ns, key=key))
    g = pb.cache.CacheGetReply()
    g.ParseFromString(res.payload)
    assert not g.found
    # InvalidatePrefix removes what starts with the prefix, and only that.
    for k in ("p:1", "p:2", "q:1"):
        mdp.call("cache", "Set", pb.cache.CacheSetRequest(namespace=ns, key=k, value=b"v"))
    res = mdp.call("cache", "InvalidatePrefix", pb.cache.CachePrefixRequest(namespace=ns,
                                                                            prefix="p:"))
    assert res.status == 200
    c.ParseFromString(res.payload)
    assert c.removed >= 2
    for k, found in (("p:1", False), ("p:2", False), ("q:1", True)):
        g = pb.cache.CacheGetReply()
        g.ParseFromString(mdp.call("cache", "Get", pb.cache.CacheKey(namespace=ns,
                                                                     key=k)).payload)
        assert g.found == found, k


def test_cache_entries_reach_redis(quaver, mdp, pb):
    ns, key = "api_response", unique("r")
    assert mdp.call("cache", "Set", pb.cache.CacheSetRequest(namespace=ns, key=key,
                                                             value=b"v1")).status == 200
    # Keys are quaver:<namespace>:<key> (issue 2, section 4).
    wait_for(lambda: quaver.redis.command("EXISTS", f"quaver:{ns}:{key}") == 1, 5,
             what="the entry in Redis")
    ttl = quaver.redis.command("PTTL", f"quaver:{ns}:{key}")
    assert ttl > 0, f"cache entries in Redis should expire (PTTL {ttl})"


def test_cache_serves_with_redis_stopped_and_recovers(quaver, mdp, pb, api):
    ns = "api_response"
    before = unique("before")
    assert mdp.call("cache", "Set", pb.cache.CacheSetRequest(namespace=ns, key=before,
                                                             value=b"kept")).status == 200
    assert _redis_state(mdp, pb) == "up"
    quaver.redis.stop()
    try:
        # Reads are served from the local tier.
        t0 = time.monotonic()
        res = mdp.call("cache", "Get", pb.cache.CacheKey(namespace=ns, key=before))
        assert res.status == 200, res
        g = pb.cache.CacheGetReply()
        g.ParseFromString(res.payload)
        assert g.found and g.value == b"kept"
        assert time.monotonic() - t0 < 2.0
        # Writes degrade without failing the caller.
        during = unique("during")
        res = mdp.call("cache", "Set", pb.cache.CacheSetRequest(namespace=ns, key=during,
                                                                value=b"local"))
        assert res.status == 200, res
        g.ParseFromString(mdp.call("cache", "Get", pb.cache.CacheKey(namespace=ns,
                                                                     key=during)).payload)
        assert g.found and g.value == b"local"
        # Health says so, and the API goes on.
        wait_for(lambda: _redis_state(mdp, pb) in ("down", "degraded"), 10,
                 what="cache Health to show redis down")
        assert _cache_health(mdp, pb).status == "degraded"
        r = api.get("/api/health")
        assert r.json()["dependencies"]["redis"]["state"] in ("down", "degraded"), r.text
        assert r.json()["status"] == "degraded"
        u = register(api)
        assert u.post("/api/v1/rooms", json={"name": "no redis"}).status_code == 201
    finally:
        if not quaver.redis.alive():
            quaver.redis.start()
    # Redis is back (empty): the cache reconnects by itself and writes reach it again.
    wait_for(lambda: _redis_state(mdp, pb) == "up", 20, interval=0.2,
             what="cache Health to show redis up again")
    assert _cache_health(mdp, pb).status == "ok"
    after = unique("after")
    assert mdp.call("cache", "Set", pb.cache.CacheSetRequest(namespace=ns, key=after,
                                                             value=b"again")).status == 200
    wait_for(lambda: quaver.redis.command("EXISTS", f"quaver:{ns}:{after}") == 1, 5,
             what="a new entry in Redis after it came back")
    g = pb.cache.CacheGetReply()
    g.ParseFromString(mdp.call("cache", "Get", pb.cache.CacheKey(namespace=ns,
                                                                 key=after)).payload)
    assert g.found and g.value == b"again"
    # (What was cached before the outage may be gone: Redis came back empty, and the cache
    # drops its local copies on reconnect, since it could not see writes meanwhile.)
    r = api.get("/api/health")
    assert r.status_code == 200 and r.json()["status"] == "ok", r.text


def test_postgresql_restart(quaver, api):
    """PostgreSQL stops: dbopt answers 503 at once (no hang); it comes back by itself."""
    u = register(api)
    rid = room_id(create_room(u))
    quaver.pg.stop()
    try:
        t0 = time.monotonic()
        r = u.get(f"/api/v1/rooms/{rid}")
        assert r.status_code == 503, r.text
        assert time.monotonic() - t0 < 6.0    # within the route's deadline
        assert api.get("/api/health").json()["dependencies"]["postgresql"]["state"] != "up"
    finally:
        quaver.pg.start()
    wait_for(lambda: u.get(f"/api/v1/rooms/{rid}").status_code == 200, 30, interval=0.3,
             what="dbopt to reconnect after PostgreSQL restarted")
    wait_for(lambda: api.get("/api/health").status_code == 200, 10, what="health ok")


def test_acknowledged_writes_survive_kill_9(quaver, api):
    """An upload and a vote, acknowledged, then kill -9 of stream and dbopt: both are there
    when the daemons come back."""
    u = register(api)
    rid = room_id(create_room(u))
    data = wav_bytes(0.7, freq=330)
    tid = track_id(upload_wav(u, rid, data, "durable.wav"))
    r = u.post(f"/api/v1/tracks/{tid}/vote")
    assert r.status_code == 200 and r.json()["vote_score"] == 1
    for name in ("stream", "dbopt"):
        d = quaver.daemons[name]
        d.kill()
        d.start()
    quaver.wait_ready(30)
    r = wait_for(lambda: (lambda x: x if x.status_code == 200 else None)(
        u.get(f"/api/v1/tracks/{tid}/stream")), 15, interval=0.2, what="the stream after restart")
    assert r.content == data
    q = u.get(f"/api/v1/rooms/{rid}/tracks").json()["tracks"]
    assert [(t["id"], t["vote_score"]) for t in q] == [(tid, 1)]


def test_audio_is_stored_under_its_sha256(quaver, api):
    """Content-addressed, written whole: every audio file on disk is named by the SHA-256 of
    its bytes, the same upload twice is one file, and no temporary file is left behind."""
    u = register(api)
    rid = room_id(create_room(u))
    data = wav_bytes(0.4, freq=770)
    upload_wav(u, rid, data, "a.wav")
    upload_wav(u, rid, data, "b.wav")
    sha = hashlib.sha256(data).hexdigest()
    found = []
    for root, _, files in os.walk(quaver.storage_dir):
        for f in files:
            found.append(os.path.join(root, f))
    audio = [p for p in found if re.fullmatch(r"[0-9a-f]{64}", os.path.basename(p))]
    assert [p for p in audio if os.path.basename(p) == sha], f"{sha} not in {found}"
    for p in audio:
        with open(p, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == os.path.basename(p), p
    leftovers = [p for p in found if not re.fullmatch(r"[0-9a-f]{64}(\.meta)?",
                                                      os.path.basename(p))]
    assert not leftovers, f"files that are not <sha256>[.meta]: {leftovers}"


def test_monitor_down_everything_else_goes_on(quaver, api):
    """DESIGN.md: with the monitor down only metrics, alerts and cross-replica events pause."""
    m = quaver.daemons["monitor"]
    m.kill()
    try:
        alice, bob = register(api), register(api)
        rid = room_id(create_room(alice))
        assert bob.post(f"/api/v1/rooms/{rid}/join").status_code == 201
        data = wav_bytes(0.3)
        tid = track_id(upload_wav(bob, rid, data))
        assert alice.post(f"/api/v1/tracks/{tid}/vote").json()["vote_score"] == 1
        assert bob.get(f"/api/v1/tracks/{tid}/stream").content == data
        r = api.get("/api/metrics")
        assert r.status_code in (503, 504), r.status_code      # that one needs the monitor
    finally:
        m.start()
    quaver.wait_ready(30)
    wait_for(lambda: api.get("/api/metrics").status_code == 200, 15, interval=0.3,
             what="metrics after the monitor came back")


def test_a_frozen_service_answers_504_at_the_deadline(quaver, api):
    """A service that stops answering (SIGSTOP: alive, connected, silent) costs a caller its
    deadline and no more: the gateway answers 504, then everything works again on SIGCONT."""
    u = register(api)
    rid = room_id(create_room(u))
    tid = track_id(upload_wav(u, rid, wav_bytes(0.3), "frozen.wav"))
    stream = quaver.daemons["stream"]
    os.kill(stream.pid, signal.SIGSTOP)
    try:
        # Sent at once, while the broker still counts stream's workers as ready (three
        # heartbeats), so the call goes to a worker that will not answer.
        t0 = time.monotonic()
        r = u.get(f"/api/v1/tracks/{tid}/stream", timeout=30)
        took = time.monotonic() - t0
    finally:
        os.kill(stream.pid, signal.SIGCONT)
    assert r.status_code == 504, (r.status_code, r.text)
    err = r.json()["error"]
    assert err["code"] and "stream" in err["message"] and err["request_id"]
    assert took < 15, f"504 came after {took:.1f} s, long past the route's deadline"
    quaver.wait_ready(30)
    r = wait_for(lambda: (lambda x: x if x.status_code == 200 else None)(
        u.get(f"/api/v1/tracks/{tid}/stream")), 15, interval=0.2, what="the stream after SIGCONT")
    assert r.headers["Content-Type"].startswith("audio/")
