#!/bin/sh
# bench/cache/hitrate.sh: the hit-rate table. Replays every trace in the shared traces folder
# through tools/cachesim (the daemon's own policy code) at the sizes of the reference table,
# with every policy, and prints a markdown table beside the reference LRU, ARC and OPT figures
# read from the traces' README.md. The last column says whether the best of our policies
# reaches ARC's figure (the goal of issue 3).
#
# Usage: bench/cache/hitrate.sh [CACHESIM]
#   CACHESIM        the cachesim binary (default: build/bin/cachesim, then build-pol/bin/...)
#   QUAVER_TRACES   the traces folder (default: ../shared/traces beside the repository)
# Hit rates are deterministic (the Random policy's PRNG is seeded), so one run is enough.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
traces=${QUAVER_TRACES:-$root/../shared/traces}
sim=${1:-}
if [ -z "$sim" ]; then
    for c in "$root/build/bin/cachesim" "$root/../build-pol/bin/cachesim"; do
        if [ -x "$c" ]; then sim=$c; break; fi
    done
fi
[ -n "$sim" ] && [ -x "$sim" ] || { echo "hitrate.sh: no cachesim binary (build it, or pass its path)" >&2; exit 2; }
[ -d "$traces" ] || { echo "hitrate.sh: no traces folder at $traces (set QUAVER_TRACES)" >&2; exit 2; }

policies=lru,lfu,fifo,random,wtinylfu,s3fifo,opt
# trace name, file, format, sizes: the reference table's rows, plus 2_pools and cs (no
# reference figures) at sizes around a tenth of their distinct keys.
rows="oltp oltp.gz arc 250,500,1000,2000
gli gli.trace.gz lirs 500,1000,2000
multi1 multi1.trace.gz lirs 500,1000
sprite sprite.trace.gz lirs 500,1000
loop loop.trace.gz lirs 1000
web12 web12.trace.xz int32 1000,4000
2_pools 2_pools.trace.gz lirs 500,1000
cs cs.trace.gz lirs 250,500"

# ref TRACE SIZE COLUMN: a figure from the README's reference table, or "" (columns: 3 LRU,
# 4 FIFO, 5 ARC, 6 S3-FIFO, 7 OPT).
ref() {
    awk -F'|' -v t="$1" -v n="$2" -v c="$3" '
        { for (i = 2; i <= NF; i++) { gsub(/^ +| +$/, "", $i) } }
        $2 == t { e = $3; gsub(/,/, "", e); if (e == n) { print $(c + 1); exit } }' "$traces/README.md"
}

echo "| trace | entries | LRU | LFU | FIFO | Random | W-TinyLFU | S3-FIFO | OPT | ref LRU | ref ARC | ref OPT | best ≥ ARC |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
echo "$rows" | while read -r name file format sizes; do
    if [ ! -f "$traces/$file" ]; then echo "hitrate.sh: $traces/$file is absent, skipped" >&2; continue; fi
    "$sim" --trace "$traces/$file" --format "$format" --sizes "$sizes" --policies "$policies" |
    awk -F, -v name="$name" '
        { rate[$1 "," $2] = $3; if (!($1 in seen)) { seen[$1] = 1; order[n++] = $1 } }
        END { for (i = 0; i < n; i++) print name, order[i],
                  rate[order[i] ",lru"], rate[order[i] ",lfu"], rate[order[i] ",fifo"],
                  rate[order[i] ",random"], rate[order[i] ",wtinylfu"], rate[order[i] ",s3fifo"],
                  rate[order[i] ",opt"] }' |
    while read -r t size lru lfu fifo rnd wt s3 opt; do
        rlru=$(ref "$t" "$size" 3); rarc=$(ref "$t" "$size" 5); ropt=$(ref "$t" "$size" 7)
        best=$(printf '%s\n' "$lru" "$lfu" "$fifo" "$rnd" "$wt" "$s3" | sort -g | tail -1)
        verdict=""
        if [ -n "$rarc" ]; then
            verdict=$(awk -v b="$best" -v a="$rarc" 'BEGIN { print (b + 0 >= a + 0) ? "yes" : "**no**" }')
            verdict="$verdict ($best)"
        fi
        # Bold the best of our policies.
        cells=""
        for v in "$lru" "$lfu" "$fifo" "$rnd" "$wt" "$s3"; do
            if [ "$v" = "$best" ]; then cells="$cells | **$v**"; else cells="$cells | $v"; fi
        done
        echo "| $t | $size$cells | $opt | ${rlru:-} | ${rarc:-} | ${ropt:-} | $verdict |"
    done
done
