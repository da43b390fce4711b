"""WebSocket room events: every change to a room reaches each subscribed participant as
{type, room, seq, data}, within 100 ms of the HTTP response that caused it, with seq rising."""
import json
import os
import queue
import threading
import time

import pytest
import websocket

from harness import create_room, register, room_id, track_id, wav_bytes

# The spec's bound (issue 2, section 7). QUAVER_WS_LATENCY_MS may loosen it on a machine known
# to be overloaded; CI runs with the spec's value.
LATENCY_S = float(os.environ.get("QUAVER_WS_LATENCY_MS", "100")) / 1000.0


class WsClient:
    """A WebSocket with a reader thread that timestamps each message as it arrives."""

    def __init__(self, url, token):
        self.ws = websocket.create_connection(f"{url}?token={token}", timeout=5)
        self.q = queue.Queue()
        self.closed = threading.Event()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        try:
            while True:
                op, data = self.ws.recv_data(control_frame=False)
                if op == websocket.ABNF.OPCODE_CLOSE:
                    break
                if op == websocket.ABNF.OPCODE_TEXT:
                    self.q.put((time.monotonic(), json.loads(data.decode())))
        except (websocket.WebSocketException, OSError, ValueError):
            pass
        finally:
            self.closed.set()

    def send(self, obj):
        self.ws.send(json.dumps(obj))

    def next(self, timeout=5.0, pred=None):
        """The next message (matching pred), as (arrival time, message)."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError("no WebSocket message in time")
            try:
                t, m = self.q.get(timeout=left)
            except queue.Empty:
                raise TimeoutError("no WebSocket message in time") from None
            if pred is None or pred(m):
                return t, m

    def drain(self, wait=0.3):
        time.sleep(wait)
        out = []
        while True:
            try:
                out.append(self.q.get_nowait()[1])
            except queue.Empty:
                return out

    def subscribe(self, rid):
        self.send({"type": "subscribe", "room": rid})
        _, m = self.next(5, lambda m: m.get("type") in ("subscribed", "error"))
        return m

    def close(self):
        try:
            self.ws.close(timeout=2)
        except (websocket.WebSocketException, OSError):
            pass


@pytest.fixture
def clients(quaver):
    made = []

    def make(token):
        c = WsClient(quaver.ws_url, token)
        made.append(c)
        return c
    yield make
    for c in made:
        c.close()


def expect_event(clients_, t_resp, etype, rid):
    """Each client gets the event; returns the messages. Latency is measured from the moment
    the HTTP response that caused it returned (an event that arrived earlier counts as 0)."""
    got = []
    for c in clients_:
        t, m = c.next(5, lambda m: m.get("type") == etype)
        late = t - t_resp
        assert late <= LATENCY_S, f"{etype} arrived {late * 1000:.1f} ms after the response"
        assert set(m) >= {"type", "room", "seq", "data"}, m
        assert m["room"] == rid and isinstance(m["seq"], int), m
        got.append(m)
    return got


def test_room_events_reach_both_users(api, clients):
    alice, bob = register(api), register(api)
    rid = room_id(create_room(alice))
    a = clients(alice.token)
    assert a.subscribe(rid) == {"type": "subscribed", "room": rid}

    seqs = {id(a): [], }

    def timed(fn):
        r = fn()
        return r, time.monotonic()

    # Bob joins: Alice (subscribed) hears it.
    r, t = timed(lambda: bob.post(f"/api/v1/rooms/{rid}/join"))
    assert r.status_code == 201, r.text
    (m,) = expect_event([a], t, "participant_joined", rid)
    assert m["data"]["user_id"] == bob.id and m["data"]["username"] == bob.username
    seqs[id(a)].append(m["seq"])

    b = clients(bob.token)
    assert b.subscribe(rid)["type"] == "subscribed"
    seqs[id(b)] = []

    # A track is added.
    r, t = timed(lambda: bob.post(f"/api/v1/rooms/{rid}/tracks", data=wav_bytes(0.3),
                                  headers={"Content-Type": "audio/wav"}))
    assert r.status_code == 201, r.text
    tid = track_id(r.json())
    for c, m in zip((a, b), expect_event([a, b], t, "track_added", rid)):
        assert m["data"]["track"]["id"] == tid
        seqs[id(c)].append(m["seq"])

    # A vote, and the unvote.
    r, t = timed(lambda: alice.post(f"/api/v1/tracks/{tid}/vote"))
    assert r.status_code == 200, r.text
    for c, m in zip((a, b), expect_event([a, b], t, "vote_changed", rid)):
        assert m["data"]["track_id"] == tid and m["data"]["vote_score"] == 1
        seqs[id(c)].append(m["seq"])
    r, t = timed(lambda: alice.delete(f"/api/v1/tracks/{tid}/vote"))
    assert r.status_code == 200, r.text
    for c, m in zip((a, b), expect_event([a, b], t, "vote_changed", rid)):
        assert m["data"]["vote_score"] == 0
        seqs[id(c)].append(m["seq"])

    # Playback.
    r, t = timed(lambda: alice.post(f"/api/v1/rooms/{rid}/playback", json={"action": "play"}))
    assert r.status_code == 200, r.text
    for c, m in zip((a, b), expect_event([a, b], t, "playback_changed", rid)):
        assert m["data"]["current_track_id"] == tid and m["data"]["is_playing"] is True
        seqs[id(c)].append(m["seq"])

    # Bob leaves: Alice hears it.
    r, t = timed(lambda: bob.post(f"/api/v1/rooms/{rid}/leave"))
    assert r.status_code == 200, r.text
    (m,) = expect_event([a], t, "participant_left", rid)
    assert m["data"]["user_id"] == bob.id
    seqs[id(a)].append(m["seq"])

    # seq rises by one per event of the room, the same for every subscriber.
    sa = seqs[id(a)]
    assert sa == list(range(sa[0], sa[0] + len(sa))), sa
    sb = seqs[id(b)]
    assert sb == sa[1:1 + len(sb)], (sa, sb)


def test_no_event_for_a_change_that_changes_nothing(api, clients):
    alice, bob = register(api), register(api)
    rid = room_id(create_room(alice))
    assert bob.post(f"/api/v1/rooms/{rid}/join").status_code == 201
    a = clients(alice.token)
    assert a.subscribe(rid)["type"] == "subscribed"
    assert bob.post(f"/api/v1/rooms/{rid}/join").status_code == 200   # already in
    assert a.drain() == []


def test_events_of_other_rooms_do_not_arrive(api, clients):
    alice, bob = register(api), register(api)
    r1, r2 = room_id(create_room(alice)), room_id(create_room(bob))
    a = clients(alice.token)
    assert a.subscribe(r1)["type"] == "subscribed"
    carol = register(api)
    assert carol.post(f"/api/v1/rooms/{r2}/join").status_code == 201
    assert a.drain() == []


def test_non_participant_cannot_subscribe(api, clients):
    alice, mallory = register(api), register(api)
    rid = room_id(create_room(alice))
    m = clients(mallory.token)
    reply = m.subscribe(rid)
    assert reply["type"] == "error", reply
    assert reply["error"]["code"] == "forbidden"
    # And no event of that room reaches Mallory.
    bob = register(api)
    assert bob.post(f"/api/v1/rooms/{rid}/join").status_code == 201
    assert [x for x in m.drain() if x.get("type") == "participant_joined"] == []


def test_bad_messages_get_an_error_and_the_connection_stays(api, clients):
    u = register(api)
    rid = room_id(create_room(u))
    c = clients(u.token)
    for bad in ("not json", "[]", '{"type": 5}', '{"type": "dance"}',
                '{"type": "subscribe", "room": "abc"}', '{"type": "subscribe"}'):
        c.ws.send(bad)
        _, m = c.next(5)
        assert m.get("type") == "error", (bad, m)
    assert c.subscribe(rid)["type"] == "subscribed"


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c"])
def test_bad_token_cannot_connect(quaver, token):
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        websocket.create_connection(f"{quaver.ws_url}?token={token}", timeout=5)
    assert e.value.status_code == 401
