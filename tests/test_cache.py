"""The cache daemon from the outside (issue 3, "Redis tier and coherence" and operations): MDP
calls with protobuf payloads, and a second Redis client (the harness's RESP socket) changing
Redis behind the cache's back.

Namespaces are the built-in table (room_state, track_queue, user_data, file_metadata,
api_response, db_query); keys are unique per test so tests do not see each other's entries.
"""
import threading
import time
import zlib


import harness
from harness import cache_get, unique, wait_for


def _stored(value):
    """What a value looks like in Redis (services/cache/cache_codec.h): a header byte, 0 for
    the value as given; another client writing our keys must write it so."""
    return b"\x00" + (value if isinstance(value, bytes) else value.encode())


def _unstored(data):
    """The value a Redis entry holds (None for none)."""
    if data is None:
        return None
    if data[:1] == b"\x00":
        return data[1:]
    assert data[:1] == b"\x01", data[:8]
    value = zlib.decompress(data[5:])
    assert len(value) == int.from_bytes(data[1:5], "big")
    return value


def _set(mdp, pb, ns, key, value, ttl_ms=0):
    res = mdp.call("cache", "Set", pb.cache.CacheSetRequest(namespace=ns, key=key, value=value,
                                                            ttl_ms=ttl_ms))
    assert res.status == 200, (res.status, res.error)


def _count(pb, res):
    assert res.status == 200, (res.status, res.error)
    c = pb.cache.CacheCountReply()
    c.ParseFromString(res.payload)
    return c.removed


def _stats(mdp, pb):
    res = mdp.call("cache", "Stats", pb.env.Empty())
    assert res.status == 200, (res.status, res.error)
    s = pb.env.StatsReply()
    s.ParseFromString(res.payload)
    return {st.name: st.value for st in s.stats}


def _health(mdp, pb):
    res = mdp.call("cache", "Health", pb.env.Empty())
    assert res.status == 200, res
    h = pb.env.HealthReply()
    h.ParseFromString(res.payload)
    return h


def _admin(pb):
    return pb.env.Caller(user_id=1, username="operator", admin=True)


def _local(mdp, pb, ns, key, value):
    """Until Get answers value from the local tier (a Redis hit is copied there)."""
    def ok():
        g = cache_get(mdp, pb, ns, key)
        return g.found and g.value == value and g.tier == "local"
    wait_for(ok, 5, interval=0.01, what=f"{ns}:{key} in the local tier")


def test_external_change_reaches_local_tier_within_100ms(quaver, mdp, pb):
    """Another Redis client changes a key we hold locally: within 100 ms of its SET, Get
    answers the new value (Redis client tracking, BCAST, REDIRECT to our subscriber)."""
    ns = "room_state"
    latencies = []
    for i in range(5):
        key = unique("coh")
        _set(mdp, pb, ns, key, b"v1")
        _local(mdp, pb, ns, key, b"v1")
        t0 = time.monotonic()
        quaver.redis.command("SET", f"quaver:{ns}:{key}", _stored("v2"), "PX", "60000")
        seen = set()
        while True:
            g = cache_get(mdp, pb, ns, key)
            seen.add(g.value if g.found else None)
            if g.found and g.value == b"v2":
                break
            assert time.monotonic() - t0 < 5, f"never saw the new value (saw {seen})"
        latencies.append((time.monotonic() - t0) * 1000)
        assert seen <= {b"v1", b"v2"}, seen
        # the new value is what the local tier holds afterwards
        _local(mdp, pb, ns, key, b"v2")
    print(f"\ninvalidation latency (external SET -> new value via Get), ms: "
          f"{', '.join(f'{x:.1f}' for x in latencies)}")
    assert max(latencies) < 100, latencies
    # An external DEL is seen too.
    quaver.redis.command("DEL", f"quaver:{ns}:{key}")
    wait_for(lambda: not cache_get(mdp, pb, ns, key).found, 1, interval=0.005,
             what="an external DEL to reach the local tier")


def test_mget(quaver, mdp, pb):
    ns = "user_data"
    a, b, c, nope = (unique(x) for x in "abcn")
    _set(mdp, pb, ns, a, b"A")
    _set(mdp, pb, ns, c, b"C")
    quaver.redis.command("SET", f"quaver:{ns}:{b}", _stored("B"), "PX", "60000")   # Redis only
    res = mdp.call("cache", "MGet", pb.cache.CacheMGetRequest(namespace=ns, keys=[a, b, nope, c]))
    assert res.status == 200, res
    r = pb.cache.CacheMGetReply()
    r.ParseFromString(res.payload)
    assert [(v.found, v.value) for v in r.values] == [(True, b"A"), (True, b"B"), (False, b""),
                                                      (True, b"C")]
    assert r.values[1].tier == "redis"
    # the Redis hit was copied into the local tier
    _local(mdp, pb, ns, b, b"B")
    # an empty MGet is an empty answer
    res = mdp.call("cache", "MGet", pb.cache.CacheMGetRequest(namespace=ns, keys=[]))
    r = pb.cache.CacheMGetReply()
    r.ParseFromString(res.payload)
    assert res.status == 200 and len(r.values) == 0


def test_invalidate_pattern_both_tiers(quaver, mdp, pb):
    ns = "api_response"
    base = unique("ip")
    inside = [f"{base}:room:1", f"{base}:room:22"]
    outside = [f"{base}:user:1", f"{base}:roomx"]
    for k in inside + outside:
        _set(mdp, pb, ns, k, b"v")
    for k in inside + outside:
        _local(mdp, pb, ns, k, b"v")
    # one matching key only in Redis (another replica wrote it)
    quaver.redis.command("SET", f"quaver:{ns}:{base}:room:3", _stored("v"), "PX", "60000")
    # the same key in another namespace is not touched
    _set(mdp, pb, "db_query", inside[0], b"other")
    res = mdp.call("cache", "InvalidatePattern",
                   pb.cache.CachePatternRequest(namespace=ns, pattern=f"{base}:room:*"))
    assert _count(pb, res) == 3
    for k in inside + [f"{base}:room:3"]:
        assert not cache_get(mdp, pb, ns, k).found, k
        assert quaver.redis.command("EXISTS", f"quaver:{ns}:{k}") == 0, k
    for k in outside:
        g = cache_get(mdp, pb, ns, k)
        assert g.found and g.value == b"v", k
        assert quaver.redis.command("EXISTS", f"quaver:{ns}:{k}") == 1, k
    g = cache_get(mdp, pb, "db_query", inside[0])
    assert g.found and g.value == b"other"
    # ? and [] classes, Redis syntax
    for k in ("a1", "a2", "b1", "a10"):
        _set(mdp, pb, ns, f"{base}:{k}", b"v")
    res = mdp.call("cache", "InvalidatePattern",
                   pb.cache.CachePatternRequest(namespace=ns, pattern=f"{base}:[ab]1"))
    assert _count(pb, res) == 2
    assert [cache_get(mdp, pb, ns, f"{base}:{k}").found for k in ("a1", "a2", "b1", "a10")] == \
        [False, True, False, True]


def test_clear(quaver, mdp, pb):
    k = unique("clr")
    _set(mdp, pb, "file_metadata", k, b"f")
    _set(mdp, pb, "track_queue", k, b"t")
    # Clear is an administrator's call.
    res = mdp.call("cache", "Clear", pb.cache.CacheClearRequest(namespace="file_metadata"))
    assert res.status == 403, res
    assert cache_get(mdp, pb, "file_metadata", k).found
    res = mdp.call("cache", "Clear", pb.cache.CacheClearRequest(namespace="file_metadata"),
                   caller=_admin(pb))
    assert _count(pb, res) >= 1
    assert not cache_get(mdp, pb, "file_metadata", k).found
    assert quaver.redis.command("EXISTS", f"quaver:file_metadata:{k}") == 0
    assert cache_get(mdp, pb, "track_queue", k).found
    # A key outside our prefix is not ours to clear.
    quaver.redis.command("SET", f"notquaver:{k}", "x")
    res = mdp.call("cache", "Clear", pb.cache.CacheClearRequest(namespace=""), caller=_admin(pb))
    assert _count(pb, res) >= 1
    assert not cache_get(mdp, pb, "track_queue", k).found
    assert quaver.redis.command("EXISTS", f"quaver:track_queue:{k}") == 0
    assert quaver.redis.command("EXISTS", f"notquaver:{k}") == 1
    res = mdp.call("cache", "Clear", pb.cache.CacheClearRequest(namespace="nope"),
                   caller=_admin(pb))
    assert res.status == 400 and "unknown namespace 'nope'" in res.error, res


def test_stats_per_namespace(quaver, mdp, pb):
    ns = "db_query"
    before = _stats(mdp, pb)
    k = unique("st")
    cache_get(mdp, pb, ns, k)                 # miss
    _set(mdp, pb, ns, k, b"v")
    cache_get(mdp, pb, ns, k)                 # hit
    after = _stats(mdp, pb)
    assert after[f"ns.{ns}.misses"] - before.get(f"ns.{ns}.misses", 0) == 1
    assert after[f"ns.{ns}.hits"] - before.get(f"ns.{ns}.hits", 0) == 1
    assert 0 <= after[f"ns.{ns}.hit_rate"] <= 1
    assert after[f"ns.{ns}.redis_round_trips"] > before.get(f"ns.{ns}.redis_round_trips", 0)
    assert after[f"ns.{ns}.ttl_ms"] == 180000
    for name in ("hits", "misses", "hit_rate", "entries", "bytes", "evictions_capacity",
                 "evictions_expired", "redis_round_trips", "redis_errors", "invalidations",
                 "local_flushes"):
        assert name in after, name
    for ns in ("room_state", "track_queue", "user_data", "file_metadata", "api_response",
               "db_query"):
        assert f"ns.{ns}.hits" in after, ns


def test_stats_local_tier_per_namespace(quaver, mdp, pb):
    """Each namespace reports its own share of the local tier: a Set in room_state moves
    room_state's entries and bytes (key + value) and nobody else's."""
    k, v = unique("nsb"), b"x" * 100
    before = _stats(mdp, pb)
    _set(mdp, pb, "room_state", k, v)
    after = _stats(mdp, pb)
    assert after["ns.room_state.entries"] - before["ns.room_state.entries"] == 1
    # key + the codec's header byte + value (room_state does not compress)
    assert after["ns.room_state.bytes"] - before["ns.room_state.bytes"] == len(k) + 1 + len(v)
    assert after["ns.track_queue.entries"] == before["ns.track_queue.entries"]
    for ns in ("room_state", "track_queue", "user_data", "file_metadata", "api_response",
               "db_query"):
        for stat in ("entries", "bytes", "evictions_capacity_entries",
                     "evictions_capacity_bytes", "evictions_priority", "evictions_expired"):
            assert f"ns.{ns}.{stat}" in after, (ns, stat)


def test_invalidate_pattern_local_side_is_exact(quaver, mdp, pb):
    """A key that shares the pattern's literal prefix but does not match it stays in the
    local tier: the next Get is still a local hit, not a trip to Redis."""
    ns = "api_response"
    base = unique("ipx")
    hit, keep = f"{base}:room:1", f"{base}:room:1x"
    for k in (hit, keep):
        _set(mdp, pb, ns, k, b"v")
        _local(mdp, pb, ns, k, b"v")
    res = mdp.call("cache", "InvalidatePattern",
                   pb.cache.CachePatternRequest(namespace=ns, pattern=f"{base}:room:?"))
    assert _count(pb, res) == 1
    assert not cache_get(mdp, pb, ns, hit).found
    g = cache_get(mdp, pb, ns, keep)
    assert g.found and g.value == b"v" and g.tier == "local", g


def test_compression_round_trip_and_corrupt_values(quaver, mdp, pb):
    """user_data compresses values from 1 KiB: Redis holds the zlib form, Get answers the
    value as given (from either tier), the ratio is a stat. A value in Redis that is not a
    valid encoding reads as a miss and is deleted, and the daemon stays up."""
    ns = "user_data"
    k, v = unique("z"), b"quaver " * 1000
    before = _stats(mdp, pb)
    _set(mdp, pb, ns, k, v)
    stored = quaver.redis.command("GET", f"quaver:{ns}:{k}")
    assert stored[:1] == b"\x01" and len(stored) < len(v) // 10
    assert _unstored(stored) == v
    g = cache_get(mdp, pb, ns, k)
    assert g.found and g.value == v and g.tier == "local"
    after = _stats(mdp, pb)
    assert after[f"ns.{ns}.values_compressed"] - before[f"ns.{ns}.values_compressed"] == 1
    assert after[f"ns.{ns}.compression_ratio"] > 1
    # another replica's compressed value, read through Redis
    k2 = unique("z2")
    quaver.redis.command("SET", f"quaver:{ns}:{k2}",
                         b"\x01" + len(v).to_bytes(4, "big") + zlib.compress(v), "PX", "60000")
    g = cache_get(mdp, pb, ns, k2)
    assert g.found and g.value == v and g.tier == "redis"
    _local(mdp, pb, ns, k2, v)
    # corrupt: an unknown header, a zlib header over a broken stream, a lying length
    bad = [b"no header", b"\x01\x00\x00\x00\x09junk",
           b"\x01" + (len(v) + 1).to_bytes(4, "big") + zlib.compress(v), b""]
    for i, data in enumerate(bad):
        kb = unique(f"bad{i}")
        quaver.redis.command("SET", f"quaver:{ns}:{kb}", data, "PX", "60000")
        assert not cache_get(mdp, pb, ns, kb).found, data
        assert quaver.redis.command("EXISTS", f"quaver:{ns}:{kb}") == 0, data
    assert _stats(mdp, pb)[f"ns.{ns}.corrupt_values"] - \
        before.get(f"ns.{ns}.corrupt_values", 0) == len(bad)
    assert _health(mdp, pb).status == "ok"


def test_bad_input_is_400_and_stores_nothing(quaver, mdp, pb):
    k = unique("bad")
    res = mdp.call("cache", "Set", pb.cache.CacheSetRequest(namespace="nosuch", key=k, value=b"v"))
    assert res.status == 400, res
    assert "unknown namespace 'nosuch'" in res.error and "room_state" in res.error, res.error
    assert quaver.redis.command("EXISTS", f"quaver:nosuch:{k}") == 0
    res = mdp.call("cache", "Get", pb.cache.CacheKey(namespace="", key=k))
    assert res.status == 400 and "namespace" in res.error, res
    res = mdp.call("cache", "Set", pb.cache.CacheSetRequest(namespace="user_data", key="k" * 513,
                                                            value=b"v"))
    assert res.status == 400 and "max_key_bytes" in res.error, res
    res = mdp.call("cache", "Set", pb.cache.CacheSetRequest(namespace="user_data", key=k,
                                                            value=b"x" * (8 * 1024 * 1024 + 1)),
                   timeout_s=20)
    assert res.status == 400 and "max_value_bytes" in res.error, res
    assert not cache_get(mdp, pb, "user_data", k).found
    assert quaver.redis.command("EXISTS", f"quaver:user_data:{k}") == 0
    res = mdp.call("cache", "Set", pb.cache.CacheSetRequest(namespace="user_data", key=k,
                                                            value=b"v", ttl_ms=-5))
    assert res.status == 400 and "ttl_ms" in res.error, res
    for pat in ("room:[1", "room:\\"):
        res = mdp.call("cache", "InvalidatePattern",
                       pb.cache.CachePatternRequest(namespace="user_data", pattern=pat))
        assert res.status == 400 and res.error.startswith("pattern is not a glob: "), res
    res = mdp.call("cache", "InvalidatePattern",
                   pb.cache.CachePatternRequest(namespace="what", pattern="*"))
    assert res.status == 400 and "unknown namespace" in res.error, res
    res = mdp.call("cache", "MGet", pb.cache.CacheMGetRequest(namespace="user_data",
                                                              keys=["a", "k" * 600]))
    assert res.status == 400 and "keys[1]" in res.error, res
    res = mdp.call("cache", "MGet", pb.cache.CacheMGetRequest(namespace="user_data",
                                                              keys=["a"] * 1025))
    assert res.status == 400 and "1025 keys" in res.error, res
    # Bodies that are not the method's message.
    for method in ("MGet", "InvalidatePattern", "Clear"):
        res = mdp.call("cache", method, b"\xff" * 16, caller=_admin(pb))
        assert res.status == 400, (method, res)
    assert _health(mdp, pb).status == "ok"


def test_invalidation_connection_killed_flushes_local_tier(quaver, mdp, pb):
    """CLIENT KILL TYPE pubsub: Redis stays up but we may have missed invalidations, so the
    local tier is flushed and both connections come back; a value changed meanwhile is not
    served stale."""
    ns = "room_state"
    k = unique("pk")
    _set(mdp, pb, ns, k, b"old")
    _local(mdp, pb, ns, k, b"old")
    flushes = _stats(mdp, pb)["local_flushes"]
    killed = quaver.redis.command("CLIENT", "KILL", "TYPE", "pubsub")
    assert killed >= 1
    quaver.redis.command("SET", f"quaver:{ns}:{k}", _stored("new"), "PX", "60000")
    time.sleep(0.3)
    wait_for(lambda: _stats(mdp, pb)["local_flushes"] > flushes, 5, what="a local flush")
    end = time.monotonic() + 5
    while True:
        g = cache_get(mdp, pb, ns, k)
        assert not (g.found and g.value == b"old"), "stale value served after the kill"
        if g.found and g.value == b"new":
            break
        assert time.monotonic() < end, "never saw the new value"
        time.sleep(0.02)
    # Invalidations flow again on the new subscriber connection.
    _local(mdp, pb, ns, k, b"new")
    quaver.redis.command("SET", f"quaver:{ns}:{k}", _stored("newer"), "PX", "60000")
    wait_for(lambda: cache_get(mdp, pb, ns, k).value == b"newer", 1, interval=0.005,
             what="an invalidation on the new connection")
    assert _health(mdp, pb).status == "ok"


def test_redis_killed_and_restarted_under_load(quaver, mdp, pb):
    """Redis is killed (-9) and started again while a loop of Get/Set runs: every call is
    answered 200, Health shows degraded and then ok."""
    ns = "track_queue"
    stop = threading.Event()
    statuses, errors = [], []

    def loop():
        c = harness.MdpClient(quaver.broker)
        try:
            i = 0
            while not stop.is_set():
                k = f"load{i % 50}"
                try:
                    r1 = c.call("cache", "Set", pb.cache.CacheSetRequest(namespace=ns, key=k,
                                                                         value=b"v%d" % i))
                    r2 = c.call("cache", "Get", pb.cache.CacheKey(namespace=ns, key=k))
                    statuses.extend([r1.status, r2.status])
                except Exception as e:  # noqa: BLE001 - a timeout is a failed call
                    errors.append(repr(e))
                i += 1
        finally:
            c.close()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    states = []
    try:
        time.sleep(0.5)
        quaver.redis.kill()
        wait_for(lambda: _health(mdp, pb).status == "degraded", 10, interval=0.05,
                 what="Health degraded")
        states.append("degraded")
        time.sleep(1.0)
        quaver.redis.start()
        wait_for(lambda: _health(mdp, pb).status == "ok", 20, interval=0.1,
                 what="Health ok again")
        states.append("ok")
        time.sleep(0.5)
    finally:
        if not quaver.redis.alive():
            quaver.redis.start()
        stop.set()
        t.join(30)
    assert states == ["degraded", "ok"]
    assert not errors, errors[:5]
    assert len(statuses) > 20
    bad = [s for s in statuses if s != 200]
    assert not bad, f"{len(bad)} of {len(statuses)} calls failed: {sorted(set(bad))}"
    # Writes reach Redis again.
    k = unique("after")
    _set(mdp, pb, ns, k, b"again")
    wait_for(lambda: quaver.redis.command("EXISTS", f"quaver:{ns}:{k}") == 1, 5,
             what="a write in Redis after the restart")


def test_coherent_under_concurrent_writers(quaver, mdp, pb):
    """Four MDP clients Set/Get/Delete a handful of keys while another Redis client writes
    them too: once everyone stops, every key reads (through the local tier) what Redis holds.
    This is what the version table is for: no reply overtaken by a write or an invalidation
    is left in the local tier."""
    import random
    ns = "room_state"
    base = unique("cc")
    keys = [f"{base}:{i}" for i in range(5)]
    stop = threading.Event()
    errors = []

    def worker(seed):
        rnd = random.Random(seed)
        c = harness.MdpClient(quaver.broker)
        try:
            while not stop.is_set():
                k = rnd.choice(keys)
                op = rnd.random()
                if op < 0.45:
                    r = c.call("cache", "Set", pb.cache.CacheSetRequest(
                        namespace=ns, key=k, value=b"w%d-%d" % (seed, rnd.getrandbits(20))))
                elif op < 0.9:
                    r = c.call("cache", "Get", pb.cache.CacheKey(namespace=ns, key=k))
                else:
                    r = c.call("cache", "Delete", pb.cache.CacheKey(namespace=ns, key=k))
                if r.status != 200:
                    errors.append((r.status, r.error))
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
        finally:
            c.close()

    def external():
        rnd = random.Random(99)
        while not stop.is_set():
            k = rnd.choice(keys)
            quaver.redis.command("SET", f"quaver:{ns}:{k}", _stored("ext%d" % rnd.getrandbits(20)),
                                 "PX", "60000")
            time.sleep(0.002)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(4)]
    threads.append(threading.Thread(target=external, daemon=True))
    for t in threads:
        t.start()
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join(20)
    assert not errors, errors[:5]
    time.sleep(0.2)    # the last invalidations arrive
    for k in keys:
        want = _unstored(quaver.redis.command("GET", f"quaver:{ns}:{k}"))
        for _ in range(2):     # the second read is a local hit when the first came from Redis
            g = cache_get(mdp, pb, ns, k)
            got = g.value if g.found else None
            assert got == want, (k, got, want, g.tier)
