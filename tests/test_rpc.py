"""Majordomo from the outside: a client and a worker written here in Python from the 7/MDP and
8/MMI specs talk to Quaver's broker, and every RPC method of every service answers garbage
with 400 (unknown methods with 404) and stays up."""
import random
import threading
import time

import pytest
import zmq


# docs/CONTRACTS.md: methods per service (every service also has Health and Stats).
METHODS = {
    "dbopt": ["Query", "Exec", "Health", "Stats"],
    "cache": ["Get", "MGet", "Set", "Delete", "InvalidatePrefix", "InvalidatePattern", "Clear",
              "GetOrLoad", "Health", "Stats"],
    "stream": ["Put", "Read", "Stat", "Health", "Stats"],
    "monitor": ["Metrics", "Health", "Stats"],
}

# Bodies no protobuf decoder can accept, whatever the message type:
_rng = random.Random(7)
GARBAGE = [
    b"\x0f" + bytes(_rng.getrandbits(8) for _ in range(63)),  # field 1, wire type 7 (none such)
    b"\xff" * 16,                                            # a tag varint longer than 10 bytes
    b"\x0a\x64abc",                                          # length 100, 3 bytes follow
    b"\x0a\x05ab",                                           # length 5, 2 bytes follow
    b"\x08",                                                 # a varint field with no value
    b"\x0e" + bytes(_rng.getrandbits(8) for _ in range(200)),  # field 1, wire type 6
]


def test_mmi_service(mdp):
    for svc in METHODS:
        assert mdp.request("mmi.service", svc) == [b"200"], svc
    assert mdp.request("mmi.service", "nonexistent") == [b"404"]
    assert mdp.request("mmi.service", "") == [b"404"]
    # Other mmi.* requests are not implemented: 501 (8/MMI).
    assert mdp.request("mmi.nosuch", "dbopt") == [b"501"]


@pytest.mark.parametrize("service", list(METHODS))
def test_health_over_mdp(mdp, pb, service):
    res = mdp.call(service, "Health", pb.env.Empty())
    assert res.status == 200, (res.status, res.error)
    h = pb.env.HealthReply()
    h.ParseFromString(res.payload)
    assert h.service == service
    assert h.status in ("ok", "degraded"), h
    assert h.uptime_ms >= 0
    res = mdp.call(service, "Stats", pb.env.Empty())
    assert res.status == 200, (res.status, res.error)
    s = pb.env.StatsReply()
    s.ParseFromString(res.payload)
    assert s.service == service


def test_health_dependencies(mdp, pb):
    want = {"dbopt": "postgresql", "cache": "redis", "stream": "storage"}
    for svc, dep in want.items():
        res = mdp.call(svc, "Health", pb.env.Empty())
        h = pb.env.HealthReply()
        h.ParseFromString(res.payload)
        states = {d.name: d.state for d in h.dependencies}
        assert states.get(dep) == "up", (svc, states)


@pytest.mark.parametrize("service", list(METHODS))
def test_garbage_to_every_method_is_400(quaver, mdp, pb, service):
    daemon = quaver.daemons[service]
    # Not a Call at all.
    for body in GARBAGE:
        res = mdp.call_raw(service, body)
        assert res.status == 400, (service, body[:8], res.status, res.error)
        assert res.error
    # A Call whose payload is not the method's message (from an administrator, so that admin
    # methods such as cache.Clear get as far as decoding it).
    admin = pb.env.Caller(user_id=1, username="operator", admin=True)
    for method in METHODS[service]:
        for body in GARBAGE:
            res = mdp.call(service, method, body, caller=admin)
            assert res.status == 400, (service, method, body[:8], res.status, res.error)
            assert res.error, (service, method)
    # Unknown methods.
    for method in ("NoSuchMethod", "", "health", "x" * 300):
        res = mdp.call(service, method, b"")
        assert res.status == 404, (service, method, res.status, res.error)
    # A body of two frames (a Quaver body is one): one Result frame, 400, naming the rule.
    c = pb.env.Call(method="Health", deadline_ms=int(time.time() * 1000) + 5000)
    frames = mdp.request(service, c.SerializeToString(), b"\xff" * 16)
    assert len(frames) == 1
    res = pb.env.Result()
    res.ParseFromString(frames[0])
    assert res.status == 400 and "one frame" in res.error, res
    # Still up and still answering.
    assert daemon.alive(), daemon.log_tail()
    res = mdp.call(service, "Health", pb.env.Empty())
    assert res.status == 200


def test_dbopt_refuses_what_is_not_in_its_catalog(mdp, pb):
    q = pb.dbopt.QueryRequest(name="DROP TABLE users")
    assert mdp.call("dbopt", "Query", q).status == 404
    q = pb.dbopt.QueryRequest(name="user_get")                 # one parameter missing
    assert mdp.call("dbopt", "Query", q).status == 400
    q = pb.dbopt.QueryRequest(name="user_get", params=[pb.dbopt.Value(text="not a number")])
    assert mdp.call("dbopt", "Query", q).status == 400
    q = pb.dbopt.QueryRequest(name="user_get", params=[pb.dbopt.Value(text="1; DROP TABLE x")])
    assert mdp.call("dbopt", "Query", q).status == 400
    q = pb.dbopt.QueryRequest(name="user_get", params=[pb.dbopt.Value(text="999999999")])
    res = mdp.call("dbopt", "Query", q)
    assert res.status == 200
    reply = pb.dbopt.QueryReply()
    reply.ParseFromString(res.payload)
    assert list(reply.columns) == ["id", "username", "email", "is_admin"]
    assert len(reply.rows) == 0


def test_stream_never_reads_outside_its_folder(mdp, pb):
    for sha in ("../../../../etc/passwd", "/etc/passwd", "a" * 64 + "/../x", "", "Z" * 64,
                "0" * 64):
        res = mdp.call("stream", "Read", pb.stream.StreamReadRequest(sha256=sha, length=100))
        assert res.status in (400, 404), (sha, res.status, res.error)
        res = mdp.call("stream", "Stat", pb.stream.StreamStatRequest(sha256=sha))
        assert res.status in (400, 404), (sha, res.status, res.error)


def test_past_deadline_is_not_served(mdp, pb):
    past = int(time.time() * 1000) - 1000
    res = mdp.call("dbopt", "Health", pb.env.Empty(), deadline_ms=past, timeout_s=5)
    assert res.status in (503, 504), res


def test_python_worker_interoperates(quaver, mdp):
    """A 7/MDP worker written here registers with the broker and serves a call."""
    ctx = zmq.Context.instance()
    w = ctx.socket(zmq.DEALER)
    w.setsockopt(zmq.LINGER, 0)
    w.connect(quaver.broker)
    service = b"pytest.echo"
    stop = threading.Event()
    served = []

    def run():
        w.send_multipart([b"", b"MDPW01", b"\x01", service])
        next_hb = time.monotonic() + quaver.hb_ms / 1000
        while not stop.is_set():
            if w.poll(50):
                f = w.recv_multipart()
                assert f[0] == b"" and f[1] == b"MDPW01", f
                if f[2] == b"\x02":              # REQUEST: client address, "", body
                    client, empty, body = f[3], f[4], f[5:]
                    assert empty == b""
                    served.append(body)
                    w.send_multipart([b"", b"MDPW01", b"\x03", client, b""] +
                                     [b"echo:" + body[0]] + body[1:])
                elif f[2] == b"\x05":            # DISCONNECT from the broker
                    return
            if time.monotonic() >= next_hb:
                w.send_multipart([b"", b"MDPW01", b"\x04"])
                next_hb = time.monotonic() + quaver.hb_ms / 1000
        w.send_multipart([b"", b"MDPW01", b"\x05"])

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 5
        while mdp.request("mmi.service", "pytest.echo") != [b"200"]:
            assert time.monotonic() < deadline, "the broker never saw our READY"
            time.sleep(0.05)
        assert mdp.request("pytest.echo", b"hello", b"two") == [b"echo:hello", b"two"]
        assert served == [[b"hello", b"two"]]
        # It survives several heartbeat intervals while idle.
        time.sleep(quaver.hb_ms * 5 / 1000)
        assert mdp.request("pytest.echo", b"again") == [b"echo:again"]
    finally:
        stop.set()
        t.join(5)
        w.close(linger=100)
    deadline = time.monotonic() + 5
    while mdp.request("mmi.service", "pytest.echo") != [b"404"]:
        assert time.monotonic() < deadline, "DISCONNECT did not remove the worker"
        time.sleep(0.05)


def test_a_silent_worker_is_dropped(quaver, mdp):
    """A worker that stops heartbeating is forgotten after liveness x heartbeat."""
    w = zmq.Context.instance().socket(zmq.DEALER)
    w.setsockopt(zmq.LINGER, 0)
    w.connect(quaver.broker)
    try:
        w.send_multipart([b"", b"MDPW01", b"\x01", b"pytest.silent"])
        deadline = time.monotonic() + 5
        while mdp.request("mmi.service", "pytest.silent") != [b"200"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        t0 = time.monotonic()
        while mdp.request("mmi.service", "pytest.silent") != [b"404"]:
            assert time.monotonic() - t0 < 10 * quaver.hb_ms / 1000, \
                "a worker silent for 10 heartbeats is still listed"
            time.sleep(0.05)
    finally:
        w.close(linger=0)
