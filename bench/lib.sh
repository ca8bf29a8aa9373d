# Shared helpers for bench/*.sh. Source it: . "$(dirname "$0")/lib.sh"
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
CAMOUNT=${CAMOUNT:-$REPO/bin/camount}
CORPUS=${CORPUS:-/work/corpus}
RUNS=${RUNS:-3}

# ensure_corpus builds the reference corpus once (../shared/bench/mkcorpus.sh).
ensure_corpus() {
	if [ ! -f "$CORPUS/disk.caibx" ] || [ ! -f "$CORPUS/share.caidx" ]; then
		local mk
		for mk in "$REPO/../shared/bench/mkcorpus.sh" /work/shared/bench/mkcorpus.sh; do
			[ -f "$mk" ] && break
		done
		bash "$mk" "$CORPUS" >&2
	fi
}

# time_once CMD... : prints the wall time of one run in seconds (output discarded).
time_once() {
	local s e
	s=$(date +%s.%N)
	"$@" >/dev/null 2>&1 || { echo "bench: command failed: $*" >&2; return 1; }
	e=$(date +%s.%N)
	echo "$e - $s" | bc -l
}

# median_time SETUP CMD... : runs SETUP (a shell string, untimed) then CMD, RUNS times; prints the median seconds.
median_time() {
	local setup=$1; shift
	local ts=() i
	for ((i = 0; i < RUNS; i++)); do
		eval "$setup"
		ts+=("$(time_once "$@")")
	done
	printf '%s\n' "${ts[@]}" | sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3f\n", m}'
}

table_header() {
	printf '\n%s\n' "$1"
	printf '%-44s %12s %12s %8s\n' "measure" "${2:-peer}" "camount" "ratio"
	printf '%-44s %12s %12s %8s\n' "-------" "----" "-------" "-----"
}

# table_row MEASURE PEER CAMOUNT [UNIT]: ratio = peer/camount (>1: camount is faster/smaller).
table_row() {
	local ratio
	ratio=$(echo "scale=2; $2 / $3" | bc -l 2>/dev/null || echo "?")
	printf '%-44s %12s %12s %7sx\n' "$1" "$2${4:-s}" "$3${4:-s}" "$ratio"
}

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }

# free_port: prints a loopback TCP port nothing listens on.
free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 30000))
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
	done
}

# wait_port PORT: waits (up to 5 s) until something listens on PORT.
wait_port() {
	local i
	for ((i = 0; i < 100; i++)); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.05
	done
	echo "bench: nothing listens on port $1" >&2
	return 1
}

# start_nginx DIR ROOT [log]: serves ROOT over HTTP on a free loopback port,
# as a CDN serves a casync store; config, logs and temp files go under DIR.
# With "log", DIR/access.log gets one "URI STATUS" line a request. Sets
# NGINX_PORT and NGINX_PID (the caller kills it) and waits until it listens.
start_nginx() {
	local dir=$1 root=$2 alog=off
	[ "${3:-}" = log ] && alog="$dir/access.log plain"
	NGINX_PORT=$(free_port)
	mkdir -p "$dir"
	cat >"$dir/nginx.conf" <<NGINX
user root;
daemon off;
worker_processes 2;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  default_type application/octet-stream;
  log_format plain '\$request_uri \$status';
  access_log $alog;
  client_body_temp_path $dir/client;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  sendfile on;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$NGINX_PORT; root $root; }
}
NGINX
	nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" &
	NGINX_PID=$!
	wait_port "$NGINX_PORT"
}
