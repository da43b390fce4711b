"""The test fixtures themselves: a real PostgreSQL 15 with pg_stat_statements and hypopg, and a
real redis-server that the resilience tests can stop and start again."""


def test_postgres_is_15_with_extensions(stack):
    assert stack.pg.sql("SHOW server_version_num").strip().startswith("15")
    assert "pg_stat_statements" in stack.pg.sql("SHOW shared_preload_libraries")
    exts = set(stack.pg.sql("SELECT extname FROM pg_extension").split())
    assert {"pg_stat_statements", "hypopg"} <= exts
    # hypopg works in this session: a hypothetical index is visible to EXPLAIN.
    out = stack.pg.sql("CREATE TEMP TABLE t(a int); "
                       "SELECT count(*) FROM hypopg_create_index('CREATE INDEX ON t(a)')")
    assert out.strip().splitlines()[-1] == "1"


def test_redis_stops_and_starts_on_the_same_port(stack):
    r = stack.redis
    assert r.command("SET", "k", "v") == "OK"
    assert r.command("GET", "k") == b"v"
    r.stop()
    assert not r.ping()
    r.start()
    assert r.ping()
    assert r.command("GET", "k") is None  # no persistence: a restart loses the cache
