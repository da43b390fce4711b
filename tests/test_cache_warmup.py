"""Warm starts of the cache daemon (issue 3, "Warmup"): the snapshot written at shutdown
(SIGTERM) is loaded at start, so values come back as local hits at once; the Warmup method
copies a namespace's Redis keys into the local tier; msgpack values are checked on Set.

The harness points snapshot_path into the test run's directory."""
import os

from harness import cache_get, unique, wait_for


def _stored(value):
    """A value as both tiers hold it (services/cache/cache_codec.h): 0x00, then the value."""
    return b"\x00" + value


def _set(mdp, pb, ns, key, value, msgpack=False):
    return mdp.call("cache", "Set", pb.cache.CacheSetRequest(namespace=ns, key=key, value=value,
                                                             msgpack=msgpack))


def _admin(pb):
    return pb.env.Caller(user_id=1, username="operator", admin=True)


def _start_cache(quaver, mdp, pb):
    """Starts the stopped cache daemon again and waits until it answers."""
    quaver.daemons["cache"].start()
    quaver.wait_ready(30)

    def serving():
        res = mdp.call("cache", "Health", pb.env.Empty(), timeout_s=2)
        return res is not None and res.status == 200
    wait_for(serving, 30, interval=0.1, what="the cache answering after its restart")


def test_snapshot_brings_values_back_as_local_hits(quaver, mdp, pb):
    ns = "user_data"                  # W-TinyLFU: its sketch is in the snapshot too
    keys = {unique("snap"): f"value {i}".encode() for i in range(20)}
    for k, v in keys.items():
        assert _set(mdp, pb, ns, k, v).status == 200
        assert cache_get(mdp, pb, ns, k).tier == "local"
    # One key changes in Redis while the daemon is down: it must not come back from the file.
    changed = next(iter(keys))
    cache = quaver.daemons["cache"]
    assert cache.stop() == 0          # SIGTERM: the snapshot is written on the way out
    path = os.path.join(quaver.base, "cache", "snapshot.bin")
    assert os.path.getsize(path) > 24
    assert open(path, "rb").read(8) == b"QVCSNAP\0"
    quaver.redis.command("SET", f"quaver:{ns}:{changed}", _stored(b"newer"), "PX", "60000")
    _start_cache(quaver, mdp, pb)
    for k, v in keys.items():
        g = cache_get(mdp, pb, ns, k)
        if k == changed:
            assert g.found and g.value == b"newer" and g.tier == "redis", g
        else:
            assert g.found and g.value == v and g.tier == "local", (k, g)
    assert "snapshot" in cache.log_tail(200)


def test_corrupt_snapshot_is_ignored(quaver, mdp, pb):
    cache = quaver.daemons["cache"]
    assert cache.stop() == 0
    path = os.path.join(quaver.base, "cache", "snapshot.bin")
    data = bytearray(open(path, "rb").read())
    data[-1] ^= 0xFF
    open(path, "wb").write(bytes(data))
    _start_cache(quaver, mdp, pb)
    assert "snapshot ignored" in cache.log_tail(300)
    k = unique("after")
    assert _set(mdp, pb, "room_state", k, b"x").status == 200
    assert cache_get(mdp, pb, "room_state", k).tier == "local"


def test_warmup_loads_redis_keys_into_the_local_tier(quaver, mdp, pb):
    ns = "file_metadata"
    base = unique("warm")
    keys = [f"{base}:{i}" for i in range(30)]
    for k in keys:
        quaver.redis.command("SET", f"quaver:{ns}:{k}", _stored(f"v-{k}".encode()), "PX", "60000")
    res = mdp.call("cache", "Warmup", pb.cache.CacheWarmupRequest(namespace=ns, max_keys=0),
                   caller=_admin(pb))
    assert res.status == 200, (res.status, res.error)
    c = pb.cache.CacheCountReply()
    c.ParseFromString(res.payload)
    assert c.removed >= len(keys)     # "removed" counts the keys loaded
    for k in keys:
        g = cache_get(mdp, pb, ns, k)
        assert g.found and g.value == f"v-{k}".encode() and g.tier == "local", (k, g)
    # max_keys bounds it; a non-admin may not; bad input is a 400.
    other = unique("warm")
    for i in range(10):
        quaver.redis.command("SET", f"quaver:api_response:{other}:{i}", _stored(b"x"), "PX",
                             "60000")
    res = mdp.call("cache", "Warmup", pb.cache.CacheWarmupRequest(namespace="api_response",
                                                                  max_keys=3), caller=_admin(pb))
    c.ParseFromString(res.payload)
    assert res.status == 200 and c.removed == 3, (res.status, res.error, c.removed)
    res = mdp.call("cache", "Warmup", pb.cache.CacheWarmupRequest(namespace=ns))
    assert res.status == 403, (res.status, res.error)
    res = mdp.call("cache", "Warmup", pb.cache.CacheWarmupRequest(namespace="nosuch"),
                   caller=_admin(pb))
    assert res.status == 400 and "unknown namespace" in res.error
    res = mdp.call("cache", "Warmup", pb.cache.CacheWarmupRequest(namespace=ns, max_keys=-1),
                   caller=_admin(pb))
    assert res.status == 400 and "max_keys" in res.error


def test_msgpack_values_are_checked(quaver, mdp, pb):
    ns = "db_query"
    good, bad, bomb = unique("mp"), unique("mp"), unique("mp")
    value = b"\x82\xa2id\x07\xa4tags\x92\xa1a\xa1b"          # {"id": 7, "tags": ["a", "b"]}
    assert _set(mdp, pb, ns, good, value, msgpack=True).status == 200
    g = cache_get(mdp, pb, ns, good)
    assert g.found and g.value == value
    res = _set(mdp, pb, ns, bad, value + b"\x01", msgpack=True)
    assert res.status == 400 and "value is not one msgpack object" in res.error \
        and "trailing" in res.error, res.error
    res = _set(mdp, pb, ns, bomb, b"\xdd\xff\xff\xff\xff", msgpack=True)
    assert res.status == 400 and "declares 4294967295 elements" in res.error, res.error
    for k in (bad, bomb):
        assert not cache_get(mdp, pb, ns, k).found
        assert quaver.redis.command("EXISTS", f"quaver:{ns}:{k}") == 0
