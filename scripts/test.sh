#!/usr/bin/env bash
# test.sh: what `make test` runs after setup. An ASan+UBSan Debug build in $ASAN_BUILD; the
# RelWithDebInfo build of `make run` in ./build (it must compile too: one test); every
# selftest under ctest; then the integration tests (tests/, pytest with Debian's python3)
# against the ASan build's daemons; then every fuzz target for a short budget (fuzz/run.sh).
# Runs every part even when one fails, and ends with one line
# "tests: N passed, N failed, N skipped" over all of them. Exits non-zero on any failure.
# Needs no stdin; safe as root in CI.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ASAN_BUILD=${ASAN_BUILD:-build-asan}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
PYTHON=/usr/bin/python3

# Sanitizers: stop at the first error and say where. Leak checking stays off: LeakSanitizer
# needs ptrace, which containers often forbid, and a daemon stopped by a signal is not
# expected to free everything. Callers may override both.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
ulimit -c 0 2>/dev/null || true

# Configures and builds into $1 with its output in log $2; $3 are cmake's configure arguments,
# $4 the build's (both space-separated). On failure prints the errors and returns non-zero.
build_logged() {
  # shellcheck disable=SC2086 # the argument strings are meant to split
  if cmake -S . -B "$1" $3 >"$2" 2>&1 && cmake --build "$1" $4 -j"$JOBS" >>"$2" 2>&1; then
    return 0
  fi
  grep -E 'error|Error' "$2" | head -30
  return 1
}

t0=$(date +%s)
echo "== build ($ASAN_BUILD: Debug, ASan+UBSan)"
if ! cmake -S . -B "$ASAN_BUILD" -DCMAKE_BUILD_TYPE=Debug -DQV_SANITIZE=ON >/dev/null ||
   ! cmake --build "$ASAN_BUILD" -j"$JOBS"; then
  echo "build failed"
  echo "tests: 0 passed, 1 failed"
  exit 1
fi
# `make run` uses the optimised build, where GCC sees more (format truncation, maybe-
# uninitialized): it must compile too, under the same -Werror, or CI would pass while
# `make run` fails. Counted as one test.
REL_BUILD=${REL_BUILD:-build}
echo "== build ($REL_BUILD: RelWithDebInfo, what make run uses)"
r_pass=0 r_fail=0
rel_log="$ASAN_BUILD/release-build.log"
if build_logged "$REL_BUILD" "$rel_log" "-DCMAKE_BUILD_TYPE=RelWithDebInfo" ""; then
  r_pass=1
else
  echo "release build failed (log: $rel_log): make run would not start"
  r_fail=1
fi
t1=$(date +%s)
echo "== builds took $((t1 - t0)) s"

c_pass=0 c_fail=0
echo "== selftests (ctest)"
ctest_log="$ASAN_BUILD/ctest.log"
ctest --test-dir "$ASAN_BUILD" --output-on-failure --timeout 300 -j"$JOBS" </dev/null 2>&1 |
  tee "$ctest_log"
ctest_rc=${PIPESTATUS[0]}
# "100% tests passed, 0 tests failed out of 12"
line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$ctest_log" | tail -1)
if [ -n "$line" ]; then
  c_fail=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
  c_total=$(sed -E 's/.* failed out of ([0-9]+).*/\1/' <<<"$line")
  c_pass=$((c_total - c_fail))
elif grep -q 'No tests were found' "$ctest_log"; then
  echo "ctest: no selftests registered"
elif [ "$ctest_rc" -ne 0 ]; then
  c_fail=1
fi
t2=$(date +%s)

echo "== integration tests (pytest, daemons from $ASAN_BUILD/bin)"
junit="$ASAN_BUILD/pytest.xml"
rm -f "$junit"
QUAVER_BIN="$ROOT/$ASAN_BUILD/bin" "$PYTHON" -m pytest tests/ -v -p no:cacheprovider \
  --junitxml="$junit" -o junit_family=xunit2 </dev/null
py_rc=$?
read -r p_pass p_fail p_skip < <("$PYTHON" - "$junit" <<'EOF'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    print(0, 1, 0)
    sys.exit()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
t = f = e = s = 0
for su in suites:
    t += int(su.get("tests", 0)); f += int(su.get("failures", 0))
    e += int(su.get("errors", 0)); s += int(su.get("skipped", 0))
print(t - f - e - s, f + e, s)
EOF
)
# pytest exits 5 when it collected nothing: that is a failure here, not a pass.
if [ "$py_rc" -ne 0 ] && [ "$p_fail" -eq 0 ]; then p_fail=1; fi
t3=$(date +%s)

# Fuzzing: every parser of untrusted input under libFuzzer for a short budget (fuzz/run.sh).
# Counted as one test; a crash names its log and reproducer.
FUZZ_BUILD=${FUZZ_BUILD:-build-fuzz}
f_pass=0 f_fail=0
echo "== fuzz ($FUZZ_BUILD: clang, libFuzzer+ASan+UBSan, ${FUZZ_SECONDS:-20} s per target)"
fuzz_log="$ASAN_BUILD/fuzz-build.log"
if CC=clang build_logged "$FUZZ_BUILD" "$fuzz_log" "-DQV_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug" \
     "--target fuzz-all"; then
  if FUZZ_BIN="$FUZZ_BUILD/fuzz" FUZZ_SECONDS=${FUZZ_SECONDS:-20} fuzz/run.sh </dev/null; then
    f_pass=1
  else
    f_fail=1
  fi
else
  echo "fuzz build failed (log: $fuzz_log)"
  f_fail=1
fi
t4=$(date +%s)

echo "== release build: $r_pass passed, $r_fail failed"
echo "== selftests: $c_pass passed, $c_fail failed"
echo "== integration: $p_pass passed, $p_fail failed, $p_skip skipped"
echo "== fuzz: $f_pass passed, $f_fail failed"
echo "== time: build $((t1 - t0)) s, selftests $((t2 - t1)) s, integration $((t3 - t2)) s, fuzz $((t4 - t3)) s, total $((t4 - t0)) s"
pass=$((r_pass + c_pass + p_pass + f_pass)) fail=$((r_fail + c_fail + p_fail + f_fail))
echo "tests: $pass passed, $fail failed, $p_skip skipped"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
