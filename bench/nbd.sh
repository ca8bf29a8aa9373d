#!/bin/sh
# NBD serving, warm cache: `camount nbd` of a .caibx against `nbdkit -r file`
# of the same image extracted raw, side by side in one run, both on unix
# sockets. Prints: measure | nbdkit | camount | ratio (camount/nbdkit).
# Targets: throughput ratio >= 0.8, QD1 latency ratio <= 1.5.
#
# Environment: CAMOUNT (binary, default bin/camount), NBD_BENCH_MB (image
# size, default 512), NBD_BENCH_RUNS (runs per measure, best kept; default 3).
set -eu
CAMOUNT=${CAMOUNT:-$(pwd)/bin/camount}
MB=${NBD_BENCH_MB:-512}
RUNS=${NBD_BENCH_RUNS:-3}
for c in casync nbdkit nbdcopy qemu-img; do
	command -v $c >/dev/null || { echo "bench/nbd.sh: $c is not installed (make deps)" >&2; exit 1; }
done
[ -x "$CAMOUNT" ] || { echo "bench/nbd.sh: $CAMOUNT not built (make build)" >&2; exit 1; }

work=$(mktemp -d /tmp/camount-bench-nbd.XXXXXX)
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

# The image: random data with two zero regions (holes for base:allocation).
img=$work/image.raw
head -c $((MB << 20)) /dev/urandom >"$img"
dd if=/dev/zero of="$img" bs=1M seek=$((MB / 4)) count=$((MB / 16)) conv=notrunc status=none
dd if=/dev/zero of="$img" bs=1M seek=$((MB * 3 / 4)) count=$((MB / 16)) conv=notrunc status=none
casync make --store="$work/store" "$work/image.caibx" "$img" >/dev/null
"$CAMOUNT" extract --store="$work/store" "$work/image.caibx" "$work/extracted.raw"
cmp "$img" "$work/extracted.raw"
rm -f "$img"

wait_sock() {
	i=0
	while [ ! -S "$1" ]; do
		i=$((i + 1))
		[ $i -lt 200 ] || { echo "bench/nbd.sh: $1 never appeared" >&2; exit 1; }
		sleep 0.05
	done
}

nbdkit -r -f -U "$work/kit.sock" file "$work/extracted.raw" &
pids="$pids $!"
"$CAMOUNT" nbd --listen="unix://$work/cam.sock" --store="$work/store" --cache-size=$((MB * 2))M \
	"$work/image.caibx" >/dev/null 2>"$work/camount.log" &
pids="$pids $!"
wait_sock "$work/kit.sock"
wait_sock "$work/cam.sock"
kit="nbd+unix:///?socket=$work/kit.sock"
cam="nbd+unix:///image?socket=$work/cam.sock"

# Warm both: the page cache for nbdkit, the chunk cache for camount.
nbdcopy "$kit" null:
nbdcopy "$cam" null:

now() { date +%s.%N; }
# best URI CMD... : the smallest wall time of RUNS runs of CMD with URI last.
best() {
	uri=$1
	shift
	b=""
	r=0
	while [ $r -lt "$RUNS" ]; do
		t0=$(now)
		"$@" "$uri" >/dev/null
		t1=$(now)
		b=$(echo "$t0 $t1 ${b:-}" | awk '{d=$2-$1; if ($3=="" || d<$3) print d; else print $3}')
		r=$((r + 1))
	done
	echo "$b"
}

copy_null() { nbdcopy "$1" null:; }
copy4_null() { nbdcopy -C 4 "$1" null:; }
qd1() { qemu-img bench -f raw -c 100000 -d 1 -s 4k "$1"; }
qd8() { qemu-img bench -f raw -c 4096 -d 8 -s 1M "$1"; }

printf '%-44s | %12s | %12s | %6s\n' "measure ($MB MiB image, warm, unix socket)" nbdkit camount ratio
row() { # row NAME UNIT KIT CAM
	printf '%-44s | %12s | %12s | %6s\n' "$1" "$3 $2" "$4 $2" "$(echo "$4 $3" | awk '{printf "%.2f", $1/$2}')"
}
tp() { echo "$1" | awk -v mb="$2" '{printf "%.0f", mb/$1}'; }

k=$(best "$kit" copy_null)
c=$(best "$cam" copy_null)
row "nbdcopy URI null:" MiB/s "$(tp "$k" "$MB")" "$(tp "$c" "$MB")"
k=$(best "$kit" copy4_null)
c=$(best "$cam" copy4_null)
row "nbdcopy -C 4 URI null:" MiB/s "$(tp "$k" "$MB")" "$(tp "$c" "$MB")"
k=$(best "$kit" qd1)
c=$(best "$cam" qd1)
row "qemu-img bench -d 1 -s 4k (QD1 latency)" us/op "$(echo "$k" | awk '{printf "%.1f", $1*1e6/100000}')" "$(echo "$c" | awk '{printf "%.1f", $1*1e6/100000}')"
k=$(best "$kit" qd8)
c=$(best "$cam" qd8)
row "qemu-img bench -d 8 -s 1M" MiB/s "$(tp "$k" 4096)" "$(tp "$c" 4096)"
