-- 001_rooms: the rooms application's tables and the indexes its catalog statements use
-- (seeds/001: unique usernames and emails, one vote per user per track, one participation per
-- user per room, the queue read as vote_score DESC, created_at ASC).
-- Applied by dbopt_migrate in one transaction, recorded in schema_migrations.
-- Constraint names are spelled out because dbopt's 409 text names them and the gateway and
-- the tests rely on them (docs/CONTRACTS.md: users_username_key, users_email_key).

CREATE TABLE users (
    id            bigserial   PRIMARY KEY,
    username      text        NOT NULL,
    email         text        NOT NULL,
    password_hash text        NOT NULL,
    is_admin      boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_username_key UNIQUE (username),
    CONSTRAINT users_email_key UNIQUE (email)
);
CREATE INDEX users_created_at_idx ON users (created_at);

-- Deleting a user who administers a room or uploaded a track is refused (RESTRICT): a room
-- or a queue must not lose rows because an account went away.
CREATE TABLE rooms (
    id               bigserial   PRIMARY KEY,
    name             text        NOT NULL,
    administrator_id bigint      NOT NULL REFERENCES users (id),
    current_track_id bigint,     -- FK added below, once tracks exists
    is_playing       boolean     NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rooms_administrator_id_idx ON rooms (administrator_id);
CREATE INDEX rooms_current_track_id_idx ON rooms (current_track_id);
CREATE INDEX rooms_is_playing_idx ON rooms (is_playing);

CREATE TABLE tracks (
    id          bigserial   PRIMARY KEY,
    room_id     bigint      NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    uploader_id bigint      NOT NULL REFERENCES users (id),
    sha256      text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    filename    text        NOT NULL,
    mime_type   text        NOT NULL,
    size_bytes  bigint      NOT NULL CHECK (size_bytes >= 0),
    duration_ms bigint      CHECK (duration_ms >= 0),
    bitrate     integer     CHECK (bitrate >= 0),
    vote_score  integer     NOT NULL DEFAULT 0,
    played_at   timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tracks_room_id_idx ON tracks (room_id);
CREATE INDEX tracks_uploader_id_idx ON tracks (uploader_id);
-- The queue (track_queue, and the head that playback_set takes): only unplayed tracks are ever
-- read in this order, so the index is partial and stays as small as the live queues. id is
-- the final tie-break so that two tracks created in one transaction still have one order.
CREATE INDEX tracks_queue_idx ON tracks (room_id, vote_score DESC, created_at ASC, id ASC)
    WHERE played_at IS NULL;

-- Deleting the current track leaves the room with nothing current rather than refusing.
ALTER TABLE rooms ADD CONSTRAINT rooms_current_track_id_fkey
    FOREIGN KEY (current_track_id) REFERENCES tracks (id) ON DELETE SET NULL;

CREATE TABLE room_participants (
    room_id   bigint      NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id   bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    joined_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT room_participants_room_id_user_id_key UNIQUE (room_id, user_id)
);
-- The unique index above serves lookups by room_id (its leading column).
CREATE INDEX room_participants_user_id_idx ON room_participants (user_id);
CREATE INDEX room_participants_joined_at_idx ON room_participants (joined_at);

CREATE TABLE track_votes (
    track_id   bigint      NOT NULL REFERENCES tracks (id) ON DELETE CASCADE,
    user_id    bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT track_votes_track_id_user_id_key UNIQUE (track_id, user_id)
);
CREATE INDEX track_votes_user_id_idx ON track_votes (user_id);
