#!/bin/sh
# ctest cachesim_bad_input: bad traces and arguments give a message naming the problem and exit
# status 2, never a crash. Usage: test_bad_input.sh CACHESIM
sim=$1
dir=$(mktemp -d) || exit 1
trap 'rm -rf "$dir"' EXIT
fail=0
expect() {   # expect NAME PATTERN ARGS...: exit status 2 and PATTERN on stderr
    name=$1; pat=$2; shift 2
    "$sim" "$@" >/dev/null 2>"$dir/err"; rc=$?
    if [ $rc -ne 2 ] || ! grep -q -- "$pat" "$dir/err"; then
        echo "FAIL $name: rc=$rc stderr: $(cat "$dir/err")"; fail=1
    else
        echo "ok   $name: $(cat "$dir/err")"
    fi
}
printf '1\n2\n*\n\n3\nx7\n' > "$dir/bad.lirs"
printf '1 2 0 0\n5\n' > "$dir/bad.arc"
printf '\000\000\000\001\000\000' > "$dir/trunc.int32"
printf '1\n2\n1\n' | gzip > "$dir/good.lirs.gz"
printf 'not xz' > "$dir/bad.xz"
expect missing      'nope.gz'            --trace "$dir/nope.gz" --format lirs --sizes 10
expect bad_line     'bad.lirs:6'         --trace "$dir/bad.lirs" --format lirs --sizes 10
expect bad_arc      'bad.arc:2'          --trace "$dir/bad.arc" --format arc --sizes 10
expect truncated    'record 2: truncated' --trace "$dir/trunc.int32" --format int32 --sizes 10
expect bad_format   "unknown format"     --trace "$dir/good.lirs.gz" --format csv --sizes 10
expect bad_policy   "unknown policy"     --trace "$dir/good.lirs.gz" --format lirs --sizes 10 --policies lru,arc
expect bad_sizes    "--sizes"            --trace "$dir/good.lirs.gz" --format lirs --sizes 10,x
expect bad_xz       "bad.xz"             --trace "$dir/bad.xz" --format lirs --sizes 10
expect no_args      "usage"
out=$("$sim" --trace "$dir/good.lirs.gz" --format lirs --sizes 1,2 --policies lru,opt)
want=$(printf '1,lru,0.00\n1,opt,0.00\n2,lru,33.33\n2,opt,33.33')
if [ "$out" != "$want" ]; then echo "FAIL good: got '$out'"; fail=1; else echo "ok   good"; fi
exit $fail
