"""Runs last (file order): every daemon stops cleanly on SIGTERM (exit 0, within 15 s), and no
daemon's log holds a sanitizer report from anywhere in the run."""
import harness


def test_every_daemon_stops_cleanly(quaver):
    quaver.stopping = True       # the per-test crash check must not restart anything now
    problems = []
    for name in reversed(harness.DAEMONS):
        d = quaver.daemons[name]
        was_running = d.alive()
        code = d.stop()
        problems += d.check()
        assert was_running, f"{name} was not running before the shutdown check"
        assert code == 0, f"{name} exited {code} on SIGTERM\n{d.log_tail(20)}"
    # The whole log of each daemon, not just what the per-test checks saw.
    for d in quaver.daemons.values():
        with open(d.log_path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        hits = [ln for ln in text.splitlines() if any(m in ln for m in harness.SANITIZER_MARKS)]
        assert not hits, f"{d.name}: " + "\n".join(hits[:10])
    quaver.shutdown_checked = True
    assert not problems, "\n".join(problems)
