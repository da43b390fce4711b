"""The room slice as users see it: register, log in, make a room, join it, upload audio, vote the
queue into order, and control playback as the room's administrator."""

import datetime

from harness import (assert_error_shape, create_room, login, mp3_bytes, register, room_id,
                     track_id, unique, upload_wav, wav_bytes)


def queue_ids(user, rid):
    r = user.get(f"/api/v1/rooms/{rid}/tracks")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["room_id"] == rid
    tracks = body["tracks"]
    return [(t["id"], t["vote_score"]) for t in tracks]


def score_of(body):
    assert "vote_score" in body, f"vote reply has no score: {body}"
    return body["vote_score"]


def test_register_and_login(api):
    name = unique("alice")
    r = api.post("/api/v1/auth/register",
                 json={"username": name, "email": f"{name}@example.test",
                       "password": "s3cret-enough"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["username"] == name
    assert isinstance(body["id"], int) and body["id"] > 0
    assert "password" not in body and "password_hash" not in body

    token = login(api, name, "s3cret-enough")
    # The token works on an authenticated route.
    r = api.post("/api/v1/rooms", token=token, json={"name": "first"})
    assert r.status_code == 201, r.text

    # Wrong password and unknown user: the same 401.
    r1 = api.post("/api/v1/auth/login", json={"username": name, "password": "wrong-password"})
    r2 = api.post("/api/v1/auth/login", json={"username": unique("nobody"), "password": "x" * 10})
    assert_error_shape(r1, 401)
    assert_error_shape(r2, 401)
    assert r1.json()["error"]["message"] == r2.json()["error"]["message"]


def test_duplicate_username_or_email_is_409(api):
    u = register(api)
    r = api.post("/api/v1/auth/register",
                 json={"username": u.username, "email": f"other-{u.email}",
                       "password": "another-password"})
    err = assert_error_shape(r, 409)
    assert "username" in err["message"]
    r = api.post("/api/v1/auth/register",
                 json={"username": unique("other"), "email": u.email,
                       "password": "another-password"})
    err = assert_error_shape(r, 409)
    assert "email" in err["message"]
    # The first registration still logs in with its own password.
    login(api, u.username, u.password)


def test_room_slice_as_two_users(api):
    alice, bob, carol = register(api), register(api), register(api)

    # Alice makes a room: she administers it and is its first participant.
    room = create_room(alice, "Friday mix")
    rid = room_id(room)
    assert room["name"] == "Friday mix"
    assert room["administrator"]["id"] == alice.id
    assert room["participant_count"] == 1
    # Times are RFC 3339 in UTC, which any client's date parser reads.
    created = datetime.datetime.fromisoformat(room["created_at"].replace("Z", "+00:00"))
    assert room["created_at"][10] == "T" and room["created_at"].endswith("Z")
    assert abs((datetime.datetime.now(datetime.timezone.utc) - created).total_seconds()) < 300

    # Bob joins (201), joining again changes nothing (200).
    r = bob.post(f"/api/v1/rooms/{rid}/join")
    assert r.status_code == 201, r.text
    assert r.json()["joined"] is True
    r = bob.post(f"/api/v1/rooms/{rid}/join")
    assert r.status_code == 200, r.text
    assert r.json()["joined"] is False

    r = alice.get(f"/api/v1/rooms/{rid}/participants")
    assert r.status_code == 200, r.text
    people = r.json()["participants"]
    assert [p["username"] for p in people] == [alice.username, bob.username]  # oldest first
    r = bob.get(f"/api/v1/rooms/{rid}")
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["participant_count"] == 2
    assert got["administrator"]["username"] == alice.username
    assert got["current_track_id"] is None and got["is_playing"] is False

    # Uploads: Bob a raw WAV, Alice a file through a multipart form, then another WAV.
    wav = wav_bytes(1.0, freq=440)
    up1 = upload_wav(bob, rid, wav)
    t1 = track_id(up1)
    assert up1["size"] == len(wav)
    assert abs(up1["duration_ms"] - 1000) <= 50, up1

    mp3 = mp3_bytes(1.0)
    data, name, ctype = (mp3, "tone.mp3", "audio/mpeg") if mp3 else (wav_bytes(1.0, freq=660),
                                                                     "tone.wav", "audio/wav")
    r = alice.post(f"/api/v1/rooms/{rid}/tracks", files={"file": (name, data, ctype)})
    assert r.status_code == 201, r.text
    up2 = r.json()
    t2 = track_id(up2)
    assert up2["size"] == len(data)
    assert abs(up2["duration_ms"] - 1000) <= 100, up2

    t3 = track_id(upload_wav(alice, rid, wav_bytes(0.5, freq=880)))
    assert len({t1, t2, t3}) == 3

    # Carol is no participant: she can neither upload nor vote.
    r = carol.post(f"/api/v1/rooms/{rid}/tracks", data=wav,
                   headers={"Content-Type": "audio/wav"})
    assert_error_shape(r, 403)
    r = carol.post(f"/api/v1/tracks/{t1}/vote")
    assert_error_shape(r, 403)

    # No votes yet: oldest first.
    assert queue_ids(bob, rid) == [(t1, 0), (t2, 0), (t3, 0)]

    # Votes: one per user per track, idempotent, the reply carries the new score.
    r = bob.post(f"/api/v1/tracks/{t3}/vote")
    assert r.status_code == 200, r.text
    assert score_of(r.json()) == 1
    r = bob.post(f"/api/v1/tracks/{t3}/vote")
    assert r.status_code == 200, r.text
    assert score_of(r.json()) == 1
    assert score_of(alice.post(f"/api/v1/tracks/{t3}/vote").json()) == 2
    assert score_of(bob.post(f"/api/v1/tracks/{t2}/vote").json()) == 1
    assert queue_ids(alice, rid) == [(t3, 2), (t2, 1), (t1, 0)]

    # Unvote, twice: the score drops once. t2 and t3 then tie at 1 and the older comes first.
    r = bob.delete(f"/api/v1/tracks/{t3}/vote")
    assert r.status_code == 200, r.text
    assert score_of(r.json()) == 1
    assert score_of(bob.delete(f"/api/v1/tracks/{t3}/vote").json()) == 1
    assert queue_ids(alice, rid) == [(t2, 1), (t3, 1), (t1, 0)]

    # Playback is the administrator's: Bob is refused, Alice plays the head of the queue.
    r = bob.post(f"/api/v1/rooms/{rid}/playback", json={"action": "play"})
    assert_error_shape(r, 403)
    r = alice.post(f"/api/v1/rooms/{rid}/playback", json={"action": "play"})
    assert r.status_code == 200, r.text
    assert r.json()["current_track_id"] == t2 and r.json()["is_playing"] is True
    got = bob.get(f"/api/v1/rooms/{rid}").json()
    assert got["current_track_id"] == t2 and got["is_playing"] is True
    assert [t for t, _ in queue_ids(bob, rid)] == [t3, t1]   # a played track leaves the queue

    r = alice.post(f"/api/v1/rooms/{rid}/playback", json={"action": "pause"})
    assert r.status_code == 200, r.text
    got = bob.get(f"/api/v1/rooms/{rid}").json()
    assert got["current_track_id"] == t2 and got["is_playing"] is False

    r = alice.post(f"/api/v1/rooms/{rid}/playback", json={"action": "skip"})
    assert r.status_code == 200, r.text
    got = bob.get(f"/api/v1/rooms/{rid}").json()
    assert got["current_track_id"] == t3 and got["is_playing"] is True
    assert [t for t, _ in queue_ids(bob, rid)] == [t1]

    # Bob leaves; leaving twice is harmless.
    r = bob.post(f"/api/v1/rooms/{rid}/leave")
    assert r.status_code == 200 and r.json()["left"] is True, r.text
    r = bob.post(f"/api/v1/rooms/{rid}/leave")
    assert r.status_code == 200 and r.json()["left"] is False, r.text
    people = alice.get(f"/api/v1/rooms/{rid}/participants").json()["participants"]
    assert [p["username"] for p in people] == [alice.username]
    assert alice.get(f"/api/v1/rooms/{rid}").json()["participant_count"] == 1


def test_unknown_room_and_track_are_404(api):
    u = register(api)
    for method, path in (("GET", "/api/v1/rooms/987654321"),
                         ("POST", "/api/v1/rooms/987654321/join"),
                         ("GET", "/api/v1/rooms/987654321/participants"),
                         ("POST", "/api/v1/tracks/987654321/vote"),
                         ("GET", "/api/v1/tracks/987654321/stream")):
        r = api.req(method, path, token=u.token)
        assert_error_shape(r, 404)


def test_playback_rejects_unknown_action(api):
    u = register(api)
    rid = room_id(create_room(u))
    r = u.post(f"/api/v1/rooms/{rid}/playback", json={"action": "rewind"})
    err = assert_error_shape(r, 400)
    assert "action" in err["message"]
