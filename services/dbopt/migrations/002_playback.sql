-- 002_playback: quaver_playback_set(room_id, action), the body of the catalog's playback_set.
--
-- Why a function and not one statement with CTEs: every CTE of one statement reads the same
-- snapshot, so two concurrent `skip`s on a room would both see the same head of the queue and
-- both "play" it. The function first locks the room row (FOR UPDATE), and each later statement
-- of a plpgsql function takes a fresh snapshot under READ COMMITTED, so the second skip waits
-- for the first, then sees its result and takes the next track. It still runs as one
-- statement (one implicit transaction) from dbopt's side.
--
-- Unknown room: no row is returned. Unknown action: SQLSTATE 22023 (dbopt answers 400).
CREATE FUNCTION quaver_playback_set(p_room_id bigint, p_action text)
RETURNS TABLE (current_track_id bigint, is_playing boolean)
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_current bigint;
    v_head    bigint;
BEGIN
    IF p_action IS NULL OR p_action NOT IN ('play', 'pause', 'skip') THEN
        RAISE EXCEPTION 'unknown playback action "%" (allowed: play, pause, skip)', p_action
            USING ERRCODE = '22023';
    END IF;

    SELECT r.current_track_id INTO v_current FROM rooms r WHERE r.id = p_room_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    IF p_action = 'pause' THEN
        UPDATE rooms r SET is_playing = false, updated_at = now() WHERE r.id = p_room_id;
    ELSIF p_action = 'play' AND v_current IS NOT NULL THEN
        UPDATE rooms r SET is_playing = true, updated_at = now() WHERE r.id = p_room_id;
    ELSE
        -- skip, or play with nothing current: the head of the queue becomes current (and
        -- played). Same order as track_queue and the partial index tracks_queue_idx.
        SELECT t.id INTO v_head FROM tracks t
         WHERE t.room_id = p_room_id AND t.played_at IS NULL
         ORDER BY t.vote_score DESC, t.created_at ASC, t.id ASC
         LIMIT 1;
        IF v_head IS NOT NULL THEN
            UPDATE tracks t SET played_at = now() WHERE t.id = v_head;
        END IF;
        -- With an empty queue there is nothing to play: play and skip both leave the room
        -- stopped, so that is_playing never claims a track that does not exist.
        UPDATE rooms r
           SET current_track_id = v_head,
               is_playing = v_head IS NOT NULL,
               updated_at = now()
         WHERE r.id = p_room_id;
    END IF;

    RETURN QUERY SELECT r.current_track_id, r.is_playing FROM rooms r WHERE r.id = p_room_id;
END
$fn$;
