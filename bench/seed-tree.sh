#!/usr/bin/env bash
# bench/seed-tree.sh: a container-style tree update with a directory seed. v1 is the corpus's
# share tree (/usr/share; with --quick a small copy), v2 a copy of it with some files changed,
# renamed, added and removed, made into a store by casync and served by nginx behind a proxy
# adding 20 ms to every request (prefetchtool proxy). Each tool extracts v2.caidx into an empty
# directory with v1 as seed:
#   casync extract --seed=v1     camount extract --seed=v1 (seed scan not cached, then cached)
#   desync v0.9.3 has no directory seeds: its untar of v2.caidx (no seed) is shown for reference.
# Wall time (median of RUNS), chunks and bytes fetched (nginx's access log; bytes are the stored,
# compressed sizes). Prints "measure | peer | camount | ratio" tables (ratio > 1: camount better).
# Env: RUNS (default 3), DELAY (default 20ms), CHANGE (files changed, default 200; quick: 20).
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || { echo "bench/seed-tree.sh: needs root (ownership in the trees)" >&2; exit 1; }
DELAY=${DELAY:-20ms}
ensure_corpus
V1=$SHARE_TREE
CHANGE=${CHANGE:-200}
[ -n "${BENCH_QUICK:-}" ] && CHANGE=20

work=$(mktemp -d /tmp/camount-bench-seedtree.XXXXXX)
pids=()
cleanup() {
	set +e
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	rm -rf "$work"
}
trap cleanup EXIT
[ -x "$CAMOUNT" ] || (cd "$REPO" && go build -o "$CAMOUNT" ./cmd/camount)
ensure_desync

# v1 is a snapshot of the share tree, so that every tool is seeded with the same bytes even if
# packages change /usr/share meanwhile.
cp -a "$V1" "$work/v1"
V1=$work/v1
# v2: v1 with files changed (a block overwritten in the middle), renamed, added and removed.
echo "bench: making v1 and v2 from $V1 ($(du -sh "$V1" | cut -f1))" >&2
cp -a "$V1" "$work/v2"
mapfile -t files < <(cd "$work/v2" && find . -type f -size +8k | sort | awk -v n="$CHANGE" 'NR % 37 == 0 && c < n { print; c++ }')
i=0
for f in "${files[@]}"; do
	p="$work/v2/$f"
	case $((i % 4)) in
	0 | 1) head -c 4096 /dev/urandom | dd of="$p" bs=1 seek=$(($(stat -c %s "$p") / 2)) conv=notrunc status=none ;;
	2) mv "$p" "$p.renamed" ;;
	3) rm -f "$p" ;;
	esac
	i=$((i + 1))
done
mkdir -p "$work/v2/new-in-v2"
head -c $((4 << 20)) /dev/urandom >"$work/v2/new-in-v2/blob"
mkdir -p "$work/srv"
casync make --store="$work/srv/store.castr" "$work/srv/v2.caidx" "$work/v2" >/dev/null

start_nginx "$work/nginx" "$work/srv" log
pids+=("$NGINX_PID")
start_delay_proxy "$work" "$NGINX_PORT" "$DELAY"
pids+=("$PROXY_PID")
pxport=$PROXY_PORT
STORE="http://127.0.0.1:$pxport/store.castr"
INDEX="http://127.0.0.1:$pxport/v2.caidx"
total=$("$CAMOUNT" info "$work/srv/v2.caidx" 2>/dev/null | awk '/^Chunks:/ {print $2; exit}' || true)

# fetched: chunks and stored bytes requested since the access log was cleared.
reset_log() { : >"$work/nginx/access.log"; }
fetched() {
	local n=0 b=0 uri
	while read -r uri _; do
		case $uri in *.cacnk)
			n=$((n + 1))
			b=$((b + $(stat -c %s "$work/srv$uri" 2>/dev/null || echo 0))) ;;
		esac
	done <"$work/nginx/access.log"
	echo "$n $b"
}

out=$work/out
# Each run extracts into a directory that does not exist; removing the last run's output
# (51,000 files, after the caches were dropped) is setup, not part of the timed extract.
run_casync() { casync extract --store="$STORE" --seed="$V1" "$INDEX" "$out"; }
run_camount() { "$CAMOUNT" extract --store="$STORE" --seed="$V1" "$INDEX" "$out"; }
run_camount_cold() { XDG_CACHE_HOME=$work/xdg run_camount; }
run_camount_warm() { XDG_CACHE_HOME=$work/xdg run_camount; }
run_desync() { "$DESYNC" untar --store="$STORE" --index "$INDEX" "$out"; }
setup() { rm -rf "$out"; drop_caches; }
setup_cold() { rm -rf "$out" "$work/xdg"; drop_caches; }

# Correctness and counts, once each (a timed run too: with RUNS=1 it is the figure).
counts() { # NAME CMD [SETUP]
	local s e
	reset_log
	${3:-setup}
	s=$(date +%s.%N)
	"$2" >/dev/null 2>"$work/$1.err" || { echo "bench: $1 failed:" >&2; cat "$work/$1.err" >&2; exit 1; }
	e=$(date +%s.%N)
	diff -r --no-dereference "$work/v2" "$out" >/dev/null || { echo "bench: $1 did not reproduce v2" >&2; exit 1; }
	read -r "${1}_n" "${1}_b" < <(fetched)
	printf -v "t_$1" '%.3f' "$(echo "$e - $s" | bc -l)"
}
counts cas run_casync
counts cam run_camount_cold setup_cold
counts warm run_camount_warm
counts des run_desync

if [ "$RUNS" -gt 1 ]; then
	t_cas=$(median_time setup run_casync)
	t_cam=$(median_time setup_cold run_camount_cold)
	t_warm=$(median_time setup run_camount_warm)
	t_des=$(median_time setup run_desync)
fi

table_header "seed-tree: extract v2.caidx ($(du -sh "$work/v2" | cut -f1), ${total:-?} chunks) with --seed=v1, store +$DELAY/request; median of $RUNS runs (counts: 1 run)" "casync"
table_row "wall: casync extract --seed vs camount" "$t_cas" "$t_cam"
table_row "wall: casync vs camount (seed scan cached)" "$t_cas" "$t_warm"
table_row "chunks fetched: casync vs camount" "$cas_n" "$cam_n" " "
table_row "bytes fetched: casync vs camount" "$cas_b" "$cam_b" " "
table_row "chunks fetched: casync vs camount (cached)" "$cas_n" "$warm_n" " "
table_header "seed-tree: desync v0.9.3 has no directory seeds; its untar of v2.caidx (no seed)" "desync"
table_row "wall: desync untar (no seed) vs camount" "$t_des" "$t_cam"
table_row "chunks fetched: desync (no seed) vs camount" "$des_n" "$cam_n" " "
