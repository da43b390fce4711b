"""cache.GetOrLoad from the outside (issue 3): a loader service written here as a 7/MDP worker
("testloader", as in test_rpc.py) counts its calls, takes 300 ms, and answers a Result whose
payload is "val:" + the request payload; payloads starting with "absent" get 404 and "fail"
get 503. XFetch and stale-while-revalidate are timing rules: cache_selftest load_* covers them
with a fake clock.
"""
import threading
import time

import pytest
import zmq

import harness
from harness import cache_get, unique

LOADER = "testloader"


class Loader:
    def __init__(self, quaver, pb, delay_s=0.3):
        self.quaver, self.pb, self.delay_s = quaver, pb, delay_s
        self.calls = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(quaver.broker)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _answer(self, body):
        call = self.pb.env.Call()
        call.ParseFromString(body)
        with self.lock:
            self.calls.append(call.payload)
        time.sleep(self.delay_s)
        if call.payload.startswith(b"absent"):
            return self.pb.env.Result(status=404, error="no such thing")
        if call.payload.startswith(b"fail"):
            return self.pb.env.Result(status=503, error="loader backend down")
        return self.pb.env.Result(status=200, payload=b"val:" + call.payload)

    def _run(self):
        w = self.sock
        w.send_multipart([b"", b"MDPW01", b"\x01", LOADER.encode()])
        hb = self.quaver.hb_ms / 1000
        next_hb = time.monotonic() + hb
        while not self.stop.is_set():
            if w.poll(20):
                f = w.recv_multipart()
                if f[2] == b"\x02":              # REQUEST: client, "", body
                    res = self._answer(f[5])
                    w.send_multipart([b"", b"MDPW01", b"\x03", f[3], b"",
                                      res.SerializeToString()])
                elif f[2] == b"\x05":
                    return
            if time.monotonic() >= next_hb:
                w.send_multipart([b"", b"MDPW01", b"\x04"])
                next_hb = time.monotonic() + hb
        w.send_multipart([b"", b"MDPW01", b"\x05"])

    def count(self, payload):
        with self.lock:
            return sum(1 for p in self.calls if p == payload)

    def __enter__(self):
        self.thread.start()
        mdp = harness.MdpClient(self.quaver.broker)
        try:
            deadline = time.monotonic() + 5
            while mdp.request("mmi.service", LOADER) != [b"200"]:
                assert time.monotonic() < deadline, "the broker never saw the loader"
                time.sleep(0.05)
        finally:
            mdp.close()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)
        self.sock.close(linger=100)


@pytest.fixture
def loader(quaver, pb):
    with Loader(quaver, pb) as ld:
        yield ld


def _gol(mdp, pb, ns, key, payload, service=LOADER, method="Load", ttl_ms=0, timeout_s=5):
    req = pb.cache.CacheGetOrLoadRequest(namespace=ns, key=key, loader_service=service,
                                         loader_method=method, loader_payload=payload,
                                         ttl_ms=ttl_ms)
    return mdp.call("cache", "GetOrLoad", req, timeout_s=timeout_s)


def _reply(pb, res):
    assert res.status == 200, (res.status, res.error)
    r = pb.cache.CacheGetOrLoadReply()
    r.ParseFromString(res.payload)
    return r


def test_32_concurrent_misses_load_once(quaver, pb, loader):
    ns, key = "room_state", unique("sf")
    payload = key.encode()
    results, errors = [None] * 32, []
    go = threading.Event()

    def one(i):
        c = harness.MdpClient(quaver.broker)
        try:
            go.wait()
            results[i] = _gol(c, pb, ns, key, payload, timeout_s=10)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
        finally:
            c.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join(30)
    assert not errors, errors
    replies = [_reply(pb, r) for r in results]
    assert all(r.found and r.value == b"val:" + payload for r in replies), replies
    assert {r.source for r in replies} <= {"loader", "local"}, {r.source for r in replies}
    assert loader.count(payload) == 1, loader.calls
    # Stored with Set's semantics: a plain Get finds it, and Redis holds it for TTL + grace.
    c = harness.MdpClient(quaver.broker)
    try:
        g = cache_get(c, pb, ns, key)
    finally:
        c.close()
    assert g.found and g.value == b"val:" + payload
    pttl = int(quaver.redis.command("PTTL", f"quaver:{ns}:{key}"))
    assert 30000 < pttl <= 40000, pttl   # room_state 30 s + grace_ms 10 s


def test_absent_is_cached_for_the_negative_ttl(mdp, pb, loader):
    ns, key = "user_data", unique("neg")
    payload = b"absent-" + key.encode()
    r = _reply(pb, _gol(mdp, pb, ns, key, payload))
    assert not r.found and r.source == "loader"
    t0 = time.monotonic()
    for _ in range(3):
        r = _reply(pb, _gol(mdp, pb, ns, key, payload))
        assert not r.found and r.source == "negative" and r.value == b""
    assert loader.count(payload) == 1
    assert not cache_get(mdp, pb, ns, key).found
    # negative_ttl_ms is 5 s by default: after it the loader is asked again.
    time.sleep(max(0.0, 5.2 - (time.monotonic() - t0)))
    r = _reply(pb, _gol(mdp, pb, ns, key, payload))
    assert not r.found and r.source == "loader"
    assert loader.count(payload) == 2


def test_loader_error_passes_through_and_nothing_is_cached(mdp, pb, loader):
    ns, key = "api_response", unique("err")
    payload = b"fail-" + key.encode()
    res = _gol(mdp, pb, ns, key, payload)
    assert res.status == 503 and "loader backend down" in res.error, (res.status, res.error)
    assert not cache_get(mdp, pb, ns, key).found
    res = _gol(mdp, pb, ns, key, payload)
    assert res.status == 503
    assert loader.count(payload) == 2


def test_a_missing_loader_is_503_and_hits_need_no_loader(mdp, pb):
    ns, key = "db_query", unique("noloader")
    res = _gol(mdp, pb, ns, key, b"x", service="pytest.nobody", timeout_s=2)
    assert res.status in (503, 504), (res.status, res.error)
    assert not cache_get(mdp, pb, ns, key).found
    # A value already cached is answered without any loader.
    res = mdp.call("cache", "Set", pb.cache.CacheSetRequest(namespace=ns, key=key, value=b"v"))
    assert res.status == 200
    r = _reply(pb, _gol(mdp, pb, ns, key, b"x", service="pytest.nobody"))
    assert r.found and r.value == b"v" and r.source == "local"


@pytest.mark.parametrize("ns,key,service,method,ttl,want", [
    ("nope", "k", LOADER, "Load", 0, "unknown namespace 'nope'"),
    ("room_state", "", LOADER, "Load", 0, "key is empty"),
    ("room_state", "k" * 600, LOADER, "Load", 0, "max_key_bytes"),
    ("room_state", "k", "", "Load", 0, "loader_service is empty"),
    ("room_state", "k", LOADER, "", 0, "loader_method is empty"),
    ("room_state", "k", "cache", "Get", 0, "loader_service 'cache'"),
    ("room_state", "k", LOADER, "Load", -5, "ttl_ms is negative"),
])
def test_bad_input_is_400(quaver, mdp, pb, ns, key, service, method, ttl, want):
    res = _gol(mdp, pb, ns, key, b"x", service=service, method=method, ttl_ms=ttl)
    assert res.status == 400 and want in res.error, (res.status, res.error)
    assert quaver.daemons["cache"].alive()


def _stats(mdp, pb):
    res = mdp.call("cache", "Stats", pb.env.Empty())
    assert res.status == 200, (res.status, res.error)
    s = pb.env.StatsReply()
    s.ParseFromString(res.payload)
    return {st.name: st.value for st in s.stats}


def test_stats_count_loads(mdp, pb, loader):
    ns, key = "track_queue", unique("st")
    before = _stats(mdp, pb)
    assert _reply(pb, _gol(mdp, pb, ns, key, key.encode())).source == "loader"
    assert _reply(pb, _gol(mdp, pb, ns, key, key.encode())).source == "local"
    stats = _stats(mdp, pb)
    for name in ("loads", "load_errors", "load_absent", "load_coalesced", "xfetch_refreshes",
                 "stale_served", "negative_hits"):
        assert f"ns.{ns}.{name}" in stats, name
    assert stats[f"ns.{ns}.loads"] - before.get(f"ns.{ns}.loads", 0) == 1
    assert loader.count(key.encode()) == 1
