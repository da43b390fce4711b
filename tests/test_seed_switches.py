"""The gateway's seed switches, set through the environment names the seeds use:
- rate limiting (services/gateway/gw_ratelimit.h): MAX_REQUESTS_PER_HOUR per caller, a sliding
  hour, 429 with Retry-After past it, RateLimit-* headers on every limited answer, probes never
  limited, and the limit off when RATE_LIMITING_ENABLED is false;
- ENABLE_PERFORMANCE_MONITORING=false: no per-route latency histograms.

The session's gateway runs with a rate limit too high to matter (every test shares 127.0.0.1),
so these tests start a gateway of their own, publishing its metrics on the session's bus.
Only /api/ping and the probes are called: they need no service."""
import contextlib
import os
import subprocess

import requests

from harness import Daemon, assert_error_shape, free_port, wait_for


@contextlib.contextmanager
def gateway(quaver, **env):
    port = free_port()
    cfg = {"http_port": port, "broker_bind": f"tcp://127.0.0.1:{free_port()}",
           "bus_pub": f"tcp://127.0.0.1:{quaver.bus_in_port}", "bus_sub": "",
           "instance": f"t-ratelimit-{port}", "jwt_secret": quaver.jwt_secret,
           "redis_url": quaver.redis.url, "log_level": "warn"}
    d = Daemon("gateway", quaver.bin_dir, cfg, quaver.log_dir,
               env=dict(quaver.daemon_env(), **{k: str(v) for k, v in env.items()}))
    d.log_path = os.path.join(quaver.log_dir, f"gateway-ratelimit-{port}.log")
    d.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(url), 20, interval=0.1, what="the rate-limit test gateway")
        yield url
    finally:
        d.stop()


def _up(url):
    try:
        return requests.get(url + "/livez", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def test_limit_then_429_with_retry_after(quaver):
    with gateway(quaver, RATE_LIMITING_ENABLED="true", MAX_REQUESTS_PER_HOUR=5) as url:
        instance = "t-ratelimit-" + url.rsplit(":", 1)[1]
        s = requests.Session()
        for i in range(5):
            r = s.get(url + "/api/ping", timeout=5)
            assert r.status_code == 200, r.text
            assert r.headers["RateLimit-Limit"] == "5"
            assert r.headers["RateLimit-Remaining"] == str(4 - i)
            assert 0 < int(r.headers["RateLimit-Reset"]) <= 3600
        r = s.get(url + "/api/ping", timeout=5)
        assert_error_shape(r, 429)
        assert r.json()["error"]["code"] == "too_many_requests"
        assert 0 < int(r.headers["Retry-After"]) <= 3600
        assert r.headers["RateLimit-Remaining"] == "0"
        # Probes and scrapes are never refused, and do not count.
        for p in ("/livez", "/readyz", "/api/health", "/api/metrics"):
            r = s.get(url + p, timeout=5)
            # (this gateway has no services behind it: readyz 503, metrics 504; never 429)
            assert r.status_code != 429 and "RateLimit-Limit" not in r.headers, p
        assert s.get(url + "/api/ping", timeout=5).status_code == 429

        # The refusals are counted for operators: this gateway publishes its metrics on the
        # session's bus, and the monitor's Prometheus page (through the session's gateway)
        # shows them.
        def refused():
            text = requests.get(quaver.url + "/api/metrics", timeout=5).text
            return [float(line.split()[-1]) for line in text.splitlines()
                    if line.startswith("quaver_http_rate_limited_total") and instance in line]
        # (snapshots go out every second: wait for the one after the second refusal)
        wait_for(lambda: refused() == [2.0], 15, interval=0.5,
                 what="quaver_http_rate_limited_total 2 for this gateway")


def test_limit_off(quaver):
    with gateway(quaver, RATE_LIMITING_ENABLED="false", MAX_REQUESTS_PER_HOUR=2) as url:
        for _ in range(5):
            r = requests.get(url + "/api/ping", timeout=5)
            assert r.status_code == 200 and "RateLimit-Limit" not in r.headers


def test_bad_limit_refuses_to_start(quaver):
    exe = os.path.join(quaver.bin_dir, "quaver-gateway")
    for bad in ("0", "-3", "many"):
        r = subprocess.run([exe, "--set", f"jwt_secret={quaver.jwt_secret}", "--print-config"],
                           env=dict(quaver.daemon_env(), MAX_REQUESTS_PER_HOUR=bad),
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 2, (bad, r.returncode, r.stdout[-500:])
        assert "max_requests_per_hour" in r.stderr, r.stderr


def test_performance_monitoring_off_drops_the_latency_histograms(quaver):
    with gateway(quaver, ENABLE_PERFORMANCE_MONITORING="false") as url:
        instance = "t-ratelimit-" + url.rsplit(":", 1)[1]
        for _ in range(3):
            assert requests.get(url + "/api/ping", timeout=5).status_code == 200

        def lines():
            text = requests.get(quaver.url + "/api/metrics", timeout=5).text
            return [line for line in text.splitlines() if instance in line]
        mine = wait_for(lambda: [x for x in lines() if x.startswith("quaver_http_requests_total")
                                 and 'route="/api/ping"' in x] and lines(), 15, interval=0.5,
                        what="this gateway's request counts on the monitor")
        assert not [x for x in mine if x.startswith("quaver_http_request_duration_seconds")], mine
