#!/usr/bin/env bash
# NBD serving with a warm cache: `camount nbd` of the corpus disk image
# (.caibx) beside `nbdkit -r file` of the same image extracted raw, both on
# unix sockets, in one run. Runs alternate between the two servers (so
# background load hits both alike); the best of RUNS is kept.
# Ratio > 1 means camount is better (throughput: camount/nbdkit; latency:
# nbdkit/camount). Targets (issue 7): throughput >= 0.8, QD1 latency
# ratio >= 0.67 (camount at most 1.5x nbdkit's latency).
. "$(dirname "$0")/lib.sh"
RUNS=${NBD_BENCH_RUNS:-5}
ensure_corpus
for c in nbdkit nbdcopy qemu-img; do
	command -v $c >/dev/null || { echo "bench/nbd.sh: $c is not installed (make deps)" >&2; exit 1; }
done
W=$(mktemp -d /var/tmp/camount-bench-nbd.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT

raw=$W/disk.raw
"$CAMOUNT" extract --store="$CORPUS/store.castr" "$CORPUS/disk.caibx" "$raw"
size=$(stat -c %s "$raw")
mib=$((size >> 20))

wait_sock() {
	local i
	for ((i = 0; i < 400; i++)); do
		[ -S "$1" ] && return 0
		sleep 0.05
	done
	echo "bench/nbd.sh: $1 never appeared" >&2
	exit 1
}
nbdkit -r -f -U "$W/kit.sock" file "$raw" &
pids+=($!)
"$CAMOUNT" nbd --listen="unix://$W/cam.sock" --store="$CORPUS/store.castr" --cache-size=4G \
	"$CORPUS/disk.caibx" >/dev/null 2>"$W/camount.log" &
pids+=($!)
wait_sock "$W/kit.sock"
wait_sock "$W/cam.sock"
kit="nbd+unix:///?socket=$W/kit.sock"
cam="nbd+unix:///disk?socket=$W/cam.sock"

# Warm both: the page cache for nbdkit, the chunk cache for camount.
cat "$raw" >/dev/null
nbdcopy "$kit" null:
nbdcopy "$cam" null:
nbdcopy "$cam" "$W/check.raw"
cmp "$raw" "$W/check.raw" || { echo "bench/nbd.sh: camount served different bytes" >&2; exit 1; }
rm -f "$W/check.raw"

now() { date +%s.%N; }
# pair FN: runs FN URI for nbdkit then camount, RUNS times; sets k and c to
# the smallest wall times (seconds).
pair() {
	local r t0 t1 t2
	k=""
	c=""
	for ((r = 0; r < RUNS; r++)); do
		t0=$(now)
		"$1" "$kit" >/dev/null
		t1=$(now)
		"$1" "$cam" >/dev/null
		t2=$(now)
		k=$(awk -v a="$t0" -v b="$t1" -v m="$k" 'BEGIN {d = b - a; if (m == "" || d < m) print d; else print m}')
		c=$(awk -v a="$t1" -v b="$t2" -v m="$c" 'BEGIN {d = b - a; if (m == "" || d < m) print d; else print m}')
	done
}
copy_null() { nbdcopy "$1" null:; }
copy4_null() { nbdcopy -C 4 "$1" null:; }
qd1() { qemu-img bench -f raw -c 100000 -d 1 -s 4k "$1"; }
qd8() { qemu-img bench -f raw -c 4096 -d 8 -s 1M "$1"; }

row() { # row MEASURE UNIT NBDKIT CAMOUNT RATIO
	printf '%-44s %12s %12s %7sx\n' "$1" "$3 $2" "$4 $2" "$5"
}
rate() { awk -v s="$1" -v n="$2" 'BEGIN {printf "%.0f", n / s}'; }
us() { awk -v s="$1" 'BEGIN {printf "%.1f", s * 1e6 / 100000}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

table_header "NBD, warm cache, $mib MiB corpus disk image, unix socket, best of $RUNS" nbdkit
pair copy_null
row "nbdcopy URI null:" MiB/s "$(rate "$k" $mib)" "$(rate "$c" $mib)" "$(ratio "$k" "$c")"
pair copy4_null
row "nbdcopy -C 4 URI null:" MiB/s "$(rate "$k" $mib)" "$(rate "$c" $mib)" "$(ratio "$k" "$c")"
pair qd1
row "qemu-img bench -d 1 -s 4k (QD1 latency)" us/op "$(us "$k")" "$(us "$c")" "$(ratio "$k" "$c")"
pair qd8
row "qemu-img bench -d 8 -s 1M (4 GiB)" MiB/s "$(rate "$k" 4096)" "$(rate "$c" 4096)" "$(ratio "$k" "$c")"

# Cold over HTTP: a fresh camount (empty cache) serving the corpus from
# nginx on loopback; nbdcopy of the whole export, against casync extract
# from the same store (casync fetches chunks one after another).
COLD_RUNS=${NBD_BENCH_COLD_RUNS:-1}
if command -v nginx >/dev/null && command -v casync >/dev/null; then
	start_nginx "$W/nginx" "$CORPUS"
	pids+=("$NGINX_PID")
	ngport=$NGINX_PORT
	STORE="http://127.0.0.1:$ngport/store.castr"
	cold_cam() {
		local sock=$W/cold.sock pid t0 t1
		rm -f "$sock"
		"$CAMOUNT" nbd --listen="unix://$sock" --store="$STORE" "$CORPUS/disk.caibx" >/dev/null 2>"$W/cold.log" &
		pid=$!
		wait_sock "$sock"
		t0=$(now)
		nbdcopy "nbd+unix:///disk?socket=$sock" null:
		t1=$(now)
		kill "$pid"
		wait "$pid" 2>/dev/null || true
		awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}'
	}
	cold_casync() {
		local t0 t1
		rm -f "$W/casync.out"
		t0=$(now)
		casync extract --store="$STORE" "$CORPUS/disk.caibx" "$W/casync.out" >/dev/null 2>&1
		t1=$(now)
		rm -f "$W/casync.out"
		awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}'
	}
	kc=""
	cc=""
	for ((r = 0; r < COLD_RUNS; r++)); do
		x=$(cold_casync)
		y=$(cold_cam)
		kc=$(awk -v d="$x" -v m="$kc" 'BEGIN {if (m == "" || d < m) print d; else print m}')
		cc=$(awk -v d="$y" -v m="$cc" 'BEGIN {if (m == "" || d < m) print d; else print m}')
	done
	table_header "NBD, cold over HTTP (nginx on loopback), $mib MiB corpus disk image, best of $COLD_RUNS (seconds)" "casync extract"
	row "cold: nbdcopy null: / casync extract" s "$(awk -v s="$kc" 'BEGIN {printf "%.2f", s}')" "$(awk -v s="$cc" 'BEGIN {printf "%.2f", s}')" "$(ratio "$kc" "$cc")"
fi
