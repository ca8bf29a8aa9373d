#!/usr/bin/env bash
# Access profiles on a tree mount (issue 14, item 3): a .caidx of
# /usr/share/perl served by nginx behind a proxy adding 20 ms per request.
# Workloads: cat of every .pm file, and of 150 of them (every third).
# For each: the recorded run (--record-profile), the profile against the
# chunks the run used (foreground fetches + prefetched chunks used), and the
# replayed run (--prefetch-profile; reading starts once the profile is
# fetched) against a mount of the same image from a local store directory.
# Targets: the profile lists >= 90% of the used chunks; the replay fetches
# nothing in the foreground and takes at most 1.3x the local-store run.
. "$(dirname "$0")/lib.sh"
SRC=${PROFILE_BENCH_TREE:-}
for d in /usr/share/perl /usr/share/perl5; do
	[ -z "$SRC" ] && [ -d "$d" ] && SRC=$d
done
[ -d "$SRC" ] || { echo "bench/profile.sh: no /usr/share/perl or /usr/share/perl5 (set PROFILE_BENCH_TREE)" >&2; exit 1; }
RUNS=${PROFILE_BENCH_RUNS:-$RUNS}
mount_setup /var/tmp/camount-bench-profile.XXXXXX
pids=()
trap 'mount_cleanup; for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT
mkdir -p "$W/srv"
"$CAMOUNT" make --store="$W/srv/perl.castr" "$W/srv/perl.caidx" "$SRC" >/dev/null
start_nginx "$W/ngx" "$W/srv"
pids+=("$NGINX_PID")
start_delay_proxy "$W" "$NGINX_PORT" 20ms
pids+=("$PROXY_PID")
URL=http://127.0.0.1:$PROXY_PORT
(cd "$SRC" && find . -name '*.pm' | sort) >"$W/all"
awk 'NR % 3 == 1' "$W/all" | head -150 >"$W/some"
json() { sed -n "s/.*\"$2\": *\([0-9]*\).*/\1/p" "$1" | head -1; }
fg_chunks() { awk '/"foreground"/ {f=1} f && /"chunks"/ {gsub(/[^0-9]/, ""); print; exit}' "$1"; }
bg_chunks() { awk '/"background"/ {f=1} f && /"chunks"/ {gsub(/[^0-9]/, ""); print; exit}' "$1"; }
readcmd() { echo "cd \$MNT && xargs -d '\\n' cat <$W/$1 >/dev/null"; }

declare -A T_LOCAL T_REPLAY T_FIRST USED LISTED FG
for list in all some; do
	n=$(wc -l <"$W/$list")
	ts=() tr=() tf=()
	for ((r = 0; r < RUNS; r++)); do
		# Local store directory: the limit.
		drop_caches
		mount_start "$CAMOUNT" mount --store="$W/srv/perl.castr" "$W/srv/perl.caidx" "$MNT"
		time_mounted "$(readcmd "$list")"
		ts+=("$WALL")
		mount_stop
		# Recorded run over the slow link.
		drop_caches
		mount_start "$CAMOUNT" mount --store="$URL/perl.castr" --record-profile="$W/$list.profile" --stats-json="$W/$list.rec.json" "$W/srv/perl.caidx" "$MNT"
		time_mounted "$(readcmd "$list")"
		tf+=("$WALL")
		mount_stop
		# Replay: prefetch the profile, read once it is fetched.
		listed=$(sed -n 's/^chunks //p' "$W/$list.profile")
		drop_caches
		mount_start "$CAMOUNT" mount --store="$URL/perl.castr" --prefetch-profile="$W/$list.profile" --stats-json="$W/$list.rep.json" "$W/srv/perl.caidx" "$MNT"
		for ((i = 0; i < 600; i++)); do
			rm -f "$W/$list.rep.json"
			kill -USR1 "$MOUNT_PID"
			sleep 0.1
			[ -s "$W/$list.rep.json" ] && [ "$(json "$W/$list.rep.json" fetched_chunks)" -ge "$listed" ] && break
		done
		# (the mount reads the archive's root at start, maybe before the fill
		# has it: only what the reads fetch in the foreground counts)
		fg0=$(fg_chunks "$W/$list.rep.json")
		time_mounted "$(readcmd "$list")"
		tr+=("$WALL")
		mount_stop
	done
	T_LOCAL[$list]=$(median "${ts[@]}")
	T_FIRST[$list]=$(median "${tf[@]}")
	T_REPLAY[$list]=$(median "${tr[@]}")
	USED[$list]=$(($(fg_chunks "$W/$list.rec.json") + $(json "$W/$list.rec.json" prefetch_used)))
	LISTED[$list]=$(sed -n 's/^chunks //p' "$W/$list.profile")
	FG[$list]=$(($(fg_chunks "$W/$list.rep.json") - fg0))
	echo "bench/profile.sh: $list ($n files): local ${T_LOCAL[$list]}s, recorded ${T_FIRST[$list]}s, replay ${T_REPLAY[$list]}s; used ${USED[$list]} chunks, profile ${LISTED[$list]}, replay foreground ${FG[$list]}" >&2
done

for list in all some; do
	label="all $(wc -l <"$W/all") .pm files"
	[ $list = some ] && label="$(wc -l <"$W/some") .pm files (every third)"
	table_header "Tree mount of $SRC, cat of $label, 20 ms per request; median of $RUNS run(s); peer = local store directory" "local"
	table_row "replayed profile vs local store" "${T_LOCAL[$list]}" "${T_REPLAY[$list]}"
	table_row "recorded (first) run vs local store" "${T_LOCAL[$list]}" "${T_FIRST[$list]}"
	table_row "chunks: used by the run vs in the profile" "${USED[$list]}" "${LISTED[$list]}" " "
	printf '%-44s %12s %12s\n' "replay: foreground fetches" "-" "${FG[$list]}"
done
