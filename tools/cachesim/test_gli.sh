#!/bin/sh
# ctest cachesim_gli: cachesim reproduces the reference LRU and OPT hit rates on the gli trace
# (../shared/traces/README.md). Usage: test_gli.sh CACHESIM REPO_ROOT. Exit 77 = skipped.
sim=$1; root=$2
traces=${QUAVER_TRACES:-$root/../shared/traces}
if [ ! -f "$traces/gli.trace.gz" ]; then
    echo "cachesim_gli: skipped: $traces/gli.trace.gz is absent"
    exit 77
fi
out=$("$sim" --trace "$traces/gli.trace.gz" --format lirs --sizes 1000 --policies lru,opt) || exit 1
echo "$out"
echo "$out" | grep -qx '1000,lru,11.21' || { echo "LRU at 1000 is not 11.21"; exit 1; }
echo "$out" | grep -qx '1000,opt,53.13' || { echo "OPT at 1000 is not 53.13"; exit 1; }
echo "cachesim_gli: ok"
