# Reads `go test -bench` output of benchmarks that report client-ns/op,
# raw-ns/op and raw/client (see pair in slurmclient/bench_test.go) and
# prints the median of each over the -count runs. raw/client is the
# client's throughput relative to the raw baseline (1.0 = as fast as raw).
$1 ~ /^Benchmark/ {
	name = $1
	sub(/-[0-9]+$/, "", name)
	names[name] = 1
	for (i = 3; i < NF; i++) {
		if ($(i + 1) == "client-ns/op" || $(i + 1) == "raw-ns/op" || $(i + 1) == "raw/client") {
			key = name SUBSEP $(i + 1)
			vals[key, ++count[key]] = $i
		}
	}
}
function median(key,    i, j, t, c, a) {
	c = count[key]
	for (i = 1; i <= c; i++) a[i] = vals[key, i]
	for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
	return c % 2 ? a[(c + 1) / 2] : (a[c / 2] + a[c / 2 + 1]) / 2
}
END {
	printf "%-30s %14s %14s %10s\n", "benchmark", "client ns/op", "raw ns/op", "raw/client"
	for (n in names)
		printf "%-30s %14.0f %14.0f %10.3f\n", n, median(n SUBSEP "client-ns/op"), median(n SUBSEP "raw-ns/op"), median(n SUBSEP "raw/client")
}
