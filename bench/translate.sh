#!/usr/bin/env bash
# $(VAR) expansion of a hostile value ("$(" repeated) of 1 KiB to 1 MiB:
# the provider's linear expansion against the quadratic one it replaced
# (#28), in the same run, medians of COUNT (default 3) runs. ns/byte flat
# across sizes is linear; past 128 KiB (MaxExpanded) the value is refused
# once expansion reaches the bound.
#   bench/translate.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(go test -count="${COUNT:-3}" -run '^$' -bench '^BenchmarkExpand$' -benchtime 1x ./provider/)
echo "$out" | awk '
$1 ~ /^BenchmarkExpand/ {
	n = $1; sub(/-[0-9]+$/, "", n); sub(/^BenchmarkExpand\//, "", n); names[n] = 1
	for (i = 3; i < NF; i++) if ($(i+1) ~ /-ns\/(op|byte)$/) { k = n SUBSEP $(i+1); v[k, ++c[k]] = $i }
}
function med(k,   i, j, t, a, m) {
	m = c[k]; for (i = 1; i <= m; i++) a[i] = v[k, i]
	for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
	return m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
}
END {
	printf "%-14s %14s %16s %14s %12s\n", "value", "linear ns/op", "quadratic ns/op", "linear ns/B", "quad/linear"
	split("size=1KiB size=16KiB size=128KiB size=1024KiB", order, " ")
	for (i = 1; i <= 4; i++) { n = order[i]; if (!(n in names)) continue
		l = med(n SUBSEP "linear-ns/op"); q = med(n SUBSEP "quadratic-ns/op")
		printf "%-14s %14.0f %16.0f %14.2f %12.0f\n", n, l, q, med(n SUBSEP "linear-ns/byte"), q / l }
}'
