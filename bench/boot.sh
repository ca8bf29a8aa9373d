#!/usr/bin/env bash
# Booting a real Debian (bookworm minbase, systemd) under qemu (TCG) from a
# lazily fetched image: time until multi-user.target (the image's marker unit
# prints the guest's uptime on the serial console) and what was fetched.
# Every remote boot goes over nginx behind a proxy adding 20 ms per request.
#
# qemu's NBD client (camount nbd on the host; the disk is /dev/vda):
#   local raw image (the limit) | qemu's curl driver on the raw image |
#   casync extract of the image, then boot | camount first boot (recording a
#   profile) | camount boot with that profile.
# /dev/nbd0 in the guest (root=camount:URL, contrib/initramfs-tools):
#   camount first boot (recording a profile) | camount boot with that profile
#   (both with a static address) | a first boot with ip=dhcp.
#
# Each boot once (BOOT_RUNS=N for more: every figure is then the median of N;
# a profiled boot uses the profile of the first boot of its run); a boot
# takes 30 s to minutes on a loaded machine. The image is built once per
# version of scripts/bootimage.sh and kept in $BENCH_TOOLS/boot.
# The local raw boot runs under qemu's block trace: what the guest read
# (distinct 4 KiB blocks), and the chunks holding it (the floor of what a
# lazy reader of this index must fetch), are printed with the table. Targets (issue 14): first lazy
# boot within 1.5x of the local raw boot, profiled within 1.1x, at most 10%
# of the store fetched, faster than the curl driver.
# With BENCH_QUICK (make test) no VM is booted: integration/boot_test.go
# boots the same image in make test.
. "$(dirname "$0")/lib.sh"
if [ -n "${BENCH_QUICK:-}" ]; then
	table_header "Debian boot under qemu TCG: not run in quick mode (integration/boot_test.go boots it in make test)" "peer"
	exit 0
fi
RUNS=${BOOT_RUNS:-1}
DELAY=${BOOT_DELAY:-20ms}
for c in qemu-system-x86_64 nginx casync mmdebstrap mkinitramfs; do
	command -v $c >/dev/null || { echo "bench/boot.sh: $c is not installed (make deps)" >&2; exit 1; }
done
kver=$(ls /boot/vmlinuz-* | sed 's|.*/vmlinuz-||' | sort -V | tail -1)
KERNEL=/boot/vmlinuz-$kver
INITRD=/boot/initrd.img-$kver
[ -r "$KERNEL" ] && [ -r "$INITRD" ] || { echo "bench/boot.sh: no readable $KERNEL and $INITRD" >&2; exit 1; }

IMGDIR=${BOOT_IMAGE_DIR:-$BENCH_TOOLS/boot}
mkdir -p "$IMGDIR"
# One image per version of bootimage.sh (a changed script rebuilds it).
IMG=$IMGDIR/os-$(sha256sum "$REPO/scripts/bootimage.sh" | cut -c1-12).img
if [ ! -s "$IMG" ]; then
	echo "bench/boot.sh: building the Debian image $IMG" >&2
	find "$IMGDIR" -maxdepth 1 -name 'os*.img' -delete
	BOOTIMAGE_ROOTFS_CACHE=$IMGDIR "$REPO/scripts/bootimage.sh" "$IMG.tmp" >&2
	mv "$IMG.tmp" "$IMG"
fi

W=$(mktemp -d /var/tmp/camount-bench-boot.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT

SRV=$W/srv
mkdir -p "$SRV"
ln "$IMG" "$SRV/os.img" 2>/dev/null || cp "$IMG" "$SRV/os.img"
"$CAMOUNT" make --store="$SRV/os.castr" "$SRV/os.caibx" "$SRV/os.img" >/dev/null
# The store's size is its chunk files' (not du: directories add ~10%).
store_bytes=$(find "$SRV/os.castr" -name '*.cacnk' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
store_chunks=$(find "$SRV/os.castr" -name '*.cacnk' | wc -l)
img_bytes=$(stat -c %s "$SRV/os.img")
(cd "$REPO" && go build -o "$W/prefetchtool" ./bench/prefetchtool)

# nginx logging each request's body bytes, behind the delay proxy.
start_nginx "$W/ngx" "$SRV" bytes
NGX=$W/ngx
pids+=("$NGINX_PID")
start_delay_proxy "$W" "$NGINX_PORT" "$DELAY"
pids+=("$PROXY_PID")
pport=$PROXY_PORT
URL=http://127.0.0.1:$pport
GURL=http://10.0.2.2:$pport # the same, seen from the guest (qemu user networking)
find "$SRV/os.castr" "$SRV/os.img" -type f -exec cat {} + >/dev/null # nginx serves from the page cache

# served_bytes: bytes nginx sent since the log was last cleared.
served_bytes() { awk '{ s += $3 } END { print s + 0 }' "$NGX/access.log"; }
served_requests() { wc -l <"$NGX/access.log"; }
reset_log() { : >"$NGX/access.log"; }

# Every VM has a virtio-rng device, as cloud VMs do (real machines have
# RDRAND, which qemu's default TCG CPU lacks): without one the kernel's random
# pool fills only after many seconds under TCG, and camount in the initramfs
# (whose S3 client library reads the pool when it starts) waits for it.
# boot NAME INITRD CMDLINE QEMU_ARGS...: boots once; sets UPTIME (guest
# seconds at the marker) and WALL (qemu start to the marker), saves the
# console in $W/NAME.console.
boot() {
	local name=$1 initrd=$2 cmdline=$3 s line
	shift 3
	s=$(date +%s.%N)
	WALL=
	UPTIME=
	while IFS= read -r line; do
		printf '%s\n' "$line" >>"$W/$name.console"
		case "$line" in
		*CAMOUNT-BOOT-MARKER*)
			WALL=$(echo "$(date +%s.%N) - $s" | bc -l | awk '{printf "%.1f", $1}')
			UPTIME=$(echo "$line" | sed -n 's/.*uptime=\([0-9.]*\).*/\1/p')
			;;
		esac
	done < <(timeout 900 qemu-system-x86_64 -accel tcg -smp 2 -m 1024 -nographic -no-reboot -nodefaults \
		-serial stdio -device virtio-rng-pci -kernel "$KERNEL" -initrd "$initrd" -append "console=ttyS0 no_timer_check $cmdline" "$@" 2>&1)
	if [ -z "$UPTIME" ]; then
		echo "bench/boot.sh: boot $name printed no marker; console:" >&2
		tail -40 "$W/$name.console" >&2
		UPTIME=failed WALL=failed
		FAILED=1
	fi
	echo "bench/boot.sh: $name: uptime ${UPTIME}s, wall ${WALL}s" >&2
}
FAILED=

# Every run's figures of a boot kind K are kept as space-separated lists
# (RU[K], RW[K], RB[K]: uptime, wall, bytes fetched); med K sets U[K], WL[K]
# and B[K] to their medians.
declare -A RU RW RB U WL B
keep() { # KIND BYTES: after a boot, keep its UPTIME, WALL and BYTES
	RU[$1]="${RU[$1]:-} $UPTIME" RW[$1]="${RW[$1]:-} $WALL" RB[$1]="${RB[$1]:-} $2"
}
med() {
	# shellcheck disable=SC2086 # the lists split on purpose
	U[$1]=$(MEDIAN_DIGITS=1 median ${RU[$1]}) WL[$1]=$(MEDIAN_DIGITS=1 median ${RW[$1]}) B[$1]=$(MEDIAN_DIGITS=0 median ${RB[$1]})
}

mib() { echo "scale=1; $1 / 1048576" | bc -l | awk '{printf "%.1f", $1}'; }
vda="root=/dev/vda ro panic=-1"

have_curl=
ls /usr/lib/*/qemu/block-curl.so >/dev/null 2>&1 && have_curl=1

# 1. Local raw image; the first run under qemu's block trace (what the
# guest reads: the floor of any lazy fetch).
for ((r = 0; r < RUNS; r++)); do
	trace=()
	[ "$r" = 0 ] && trace=(-trace "enable=blk_co_preadv,file=$W/raw.trace")
	boot raw "$INITRD" "$vda" -drive "file=$SRV/os.img,format=raw,if=virtio,readonly=on" "${trace[@]}"
	keep raw 0
done
med raw
cov=$("$W/prefetchtool" readcov -index "$SRV/os.caibx" -store "$SRV/os.castr" -trace "$W/raw.trace")
covv() { echo "$cov" | tr ' ' '\n' | sed -n "s/^$1=//p"; }

# 2. qemu's curl driver on the raw image over the link.
if [ -n "$have_curl" ]; then
	for ((r = 0; r < RUNS; r++)); do
		reset_log
		boot curl "$INITRD" "$vda" -drive "file.driver=http,file.url=$URL/os.img,format=raw,if=virtio,readonly=on"
		keep curl "$(served_bytes)"
	done
	med curl
fi

# 3. casync extract of the whole image, then the local boot.
ex=()
for ((r = 0; r < RUNS; r++)); do
	reset_log
	ts=$(date +%s.%N)
	casync extract --store="$URL/os.castr" "$URL/os.caibx" "$W/extracted.img" >/dev/null 2>&1
	te=$(date +%s.%N)
	ex+=("$(echo "$te - $ts" | bc -l)")
	B[casync]=$(served_bytes)
	rm -f "$W/extracted.img"
done
extract=$(MEDIAN_DIGITS=1 median "${ex[@]}")

# 4, 5. camount nbd on the host, qemu's NBD client.
camount_nbd_boot() { # NAME FLAGS...
	local name=$1 uri
	shift
	rm -f "$W/$name.uri" # (a earlier run's: the shell truncates it only once camount starts)
	"$CAMOUNT" nbd --listen=tcp://127.0.0.1:0 --name=os --store="$URL/os.castr" \
		--stats-json="$W/$name.stats" "$@" "$URL/os.caibx" >"$W/$name.uri" 2>"$W/$name.log" &
	local pid=$!
	for ((i = 0; i < 200; i++)); do [ -s "$W/$name.uri" ] && break; sleep 0.1; done
	uri=$(head -1 "$W/$name.uri")
	[ -n "$uri" ] || { echo "bench/boot.sh: camount nbd did not start:" >&2; cat "$W/$name.log" >&2; exit 1; }
	boot "$name" "$INITRD" "$vda" -drive "file=$uri,format=raw,if=virtio,readonly=on"
	kill "$pid"
	wait "$pid" || true
	keep "$name" "$(sed -n 's/.*"fetched_bytes": *\([0-9]*\).*/\1/p' "$W/$name.stats")"
	C[$name]="${C[$name]:-} $(sed -n 's/.*"fetched_chunks": *\([0-9]*\).*/\1/p' "$W/$name.stats")"
}
declare -A C
for ((r = 0; r < RUNS; r++)); do
	rm -f "$W/nbd.profile"
	camount_nbd_boot nbd1 --record-profile="$W/nbd.profile"
	camount_nbd_boot nbd2 --prefetch-profile="$W/nbd.profile"
done
med nbd1
med nbd2

# 6, 7. /dev/nbd0 in the guest: an initramfs with camount (static).
CGO_ENABLED=0 GOFLAGS= go build -C "$REPO" -o "$W/camount-static" ./cmd/camount
conf=$W/initramfs-conf
mkdir -p "$conf/conf.d" "$conf/hooks" "$conf/scripts/local-top"
printf 'MODULES=list\nBUSYBOX=y\nCOMPRESS=gzip\nCOMPRESSLEVEL=1\n' >"$conf/initramfs.conf"
printf 'virtio_pci\nvirtio_net\nvirtio_blk\next4\ncrc32c_generic\n' >"$conf/modules" # nbd, virtio_rng: the hook
echo CAMOUNT=y >"$conf/conf.d/camount"
cp "$REPO/contrib/initramfs-tools/hooks/camount" "$conf/hooks/"
cp "$REPO/contrib/initramfs-tools/scripts/local-top/camount" "$conf/scripts/local-top/"
CAMOUNT_BINARY=$W/camount-static mkinitramfs -d "$conf" -o "$W/initrd-camount.img" "$kver"
# The guest's address is static (qemu's user network always gives
# 10.0.2.15/24 with the host at 10.0.2.2), as in a fleet with fixed
# addresses; one more first boot with ip=dhcp shows what DHCP adds (klibc's
# ipconfig, whose first request goes unanswered for 2 s under TCG).
static_ip=ip=10.0.2.15::10.0.2.2:255.255.255.0:::off
nbd0="root=camount:$GURL/os.caibx camount.store=$GURL/os.castr panic=-1"
net=(-netdev user,id=n0 -device virtio-net-pci,netdev=n0)
for ((r = 0; r < RUNS; r++)); do
	reset_log
	boot nbd0d "$W/initrd-camount.img" "$nbd0 ip=dhcp" "${net[@]}"
	keep nbd0d "$(served_bytes)"
	reset_log
	rm -f "$W/nbd0a.console"
	boot nbd0a "$W/initrd-camount.img" "$nbd0 $static_ip camount.args=--record-profile=/camount-boot.profile" "${net[@]}"
	keep nbd0a "$(served_bytes)"
	# (only the profile's own lines: systemd may write status lines in between)
	sed -n '/CAMOUNT-PROFILE-BEGIN/,/CAMOUNT-PROFILE-END/p' "$W/nbd0a.console" | tr -d '\r' |
		grep -E '^(camount-profile 1|index sha256:[0-9a-f]{64}|chunks [0-9]+|[0-9]+)$' >"$W/nbd0.profile" || true
	# The profile goes into the initramfs as a second cpio archive.
	rm -rf "$W/extra"
	mkdir -p "$W/extra/etc/camount"
	cp "$W/nbd0.profile" "$W/extra/etc/camount/boot.profile"
	(cd "$W/extra" && find . | cpio -o -H newc --quiet | gzip -1) >"$W/extra.cpio.gz"
	cat "$W/initrd-camount.img" "$W/extra.cpio.gz" >"$W/initrd-camount-profile.img"
	reset_log
	boot nbd0b "$W/initrd-camount-profile.img" "$nbd0 $static_ip camount.profile=/etc/camount/boot.profile" "${net[@]}"
	keep nbd0b "$(served_bytes)"
done
med nbd0a
med nbd0b
med nbd0d
# guest_facts NAME: when the initramfs had /dev/nbd0 (guest uptime) and the
# CPU seconds camount had used in the guest by the marker (last run's).
guest_facts() {
	local at cpu
	at=$(tr -d '\r' <"$W/$1.console" | sed -n 's/^camount: .* at uptime \([0-9.]*\)s .*/\1/p' | tail -1)
	cpu=$(tr -d '\r' <"$W/$1.console" | sed -n 's/.*CAMOUNT-CHECK root-daemon pid=[0-9]* cpu=\([0-9.]*\)s.*/\1/p' | tail -1)
	echo "/dev/nbd0 attached at uptime ${at:-?}s, camount's CPU in the guest by the marker ${cpu:-?}s"
}

echo
echo "Debian bookworm (systemd) to multi-user.target under qemu TCG; image $(mib "$img_bytes") MiB raw, store $store_chunks chunks, $(mib "$store_bytes") MiB"
echo "HTTP over a proxy adding $DELAY per request; boots: $RUNS each (median); 'extract+boot' = casync extract wall + local boot wall"
printf '%-34s %10s %10s %12s\n' "boot" "uptime" "wall" "fetched"
printf '%-34s %10s %10s %12s\n' "----" "------" "----" "-------"
row() { printf '%-34s %9ss %9ss %9s MiB\n' "$1" "$2" "$3" "$4"; }
row "local raw image (the limit)" "${U[raw]}" "${WL[raw]}" 0
[ -n "${U[curl]:-}" ] && row "qemu curl driver, raw image" "${U[curl]}" "${WL[curl]}" "$(mib "${B[curl]}")"
row "casync extract, then boot" "-" "$(echo "$extract + ${WL[raw]}" | bc -l)" "$(mib "${B[casync]}")"
row "camount nbd, first boot" "${U[nbd1]}" "${WL[nbd1]}" "$(mib "${B[nbd1]}")"
row "camount nbd, profiled boot" "${U[nbd2]}" "${WL[nbd2]}" "$(mib "${B[nbd2]}")"
row "camount /dev/nbd0, first boot" "${U[nbd0a]}" "${WL[nbd0a]}" "$(mib "${B[nbd0a]}")"
row "camount /dev/nbd0, profiled boot" "${U[nbd0b]}" "${WL[nbd0b]}" "$(mib "${B[nbd0b]}")"
row "camount /dev/nbd0, first, ip=dhcp" "${U[nbd0d]}" "${WL[nbd0d]}" "$(mib "${B[nbd0d]}")"
pct() { echo "scale=1; 100 * $1 / $2" | bc -l | awk '{printf "%.1f", $1}'; }
echo
echo "Fetched against the store: the store is its $store_chunks chunk files, $(mib "$store_bytes") MiB as stored (zstd),"
echo "  $(mib "$(covv all_chunk_bytes)") MiB uncompressed (each distinct chunk once)."
echo "What the guest reads (the local raw boot under qemu's block trace): $(covv reads) reads, $(mib "$(covv distinct_bytes)") MiB of"
echo "  distinct 4 KiB blocks; the chunks holding them: $(covv chunks) chunks, $(mib "$(covv chunk_bytes)") MiB uncompressed, $(mib "$(covv stored_bytes)") MiB stored"
echo "  = $(pct "$(covv stored_bytes)" "$store_bytes")% of the store (the floor of any lazy reader of this index)."
echo "camount nbd, first boot: $(mib "${B[nbd1]}") MiB = $(pct "${B[nbd1]}" "$store_bytes")% of the store ($(mib "${B[nbd1]}") MiB against the uncompressed $(mib "$(covv all_chunk_bytes)") MiB: $(pct "${B[nbd1]}" "$(covv all_chunk_bytes)")%)."
echo "camount /dev/nbd0, first boot: $(mib "${B[nbd0a]}") MiB (nginx's bytes, index included) = $(pct "${B[nbd0a]}" "$store_bytes")% of the store."
echo "camount /dev/nbd0 (last run's): first boot: $(guest_facts nbd0a);"
echo "  profiled boot: $(guest_facts nbd0b); first boot with ip=dhcp: $(guest_facts nbd0d)."

table_header "qemu NBD client boot, wall seconds to the marker ($RUNS run(s) each)" "peer"
table_row "first lazy boot vs local raw boot" "${WL[raw]}" "${WL[nbd1]}"
table_row "profiled boot vs local raw boot" "${WL[raw]}" "${WL[nbd2]}"
[ -n "${WL[curl]:-}" ] && table_row "first lazy boot vs qemu curl driver" "${WL[curl]}" "${WL[nbd1]}"
table_row "first lazy boot vs casync extract+boot" "$(echo "$extract + ${WL[raw]}" | bc -l)" "${WL[nbd1]}"
table_row "MiB fetched, first boot vs whole store" "$(mib "$store_bytes")" "$(mib "${B[nbd1]}")" " MiB"
table_header "/dev/nbd0 boot (initramfs; static address unless ip=dhcp), wall seconds to the marker ($RUNS run(s) each)" "peer"
table_row "first lazy boot vs local raw boot" "${WL[raw]}" "${WL[nbd0a]}"
table_row "profiled boot vs local raw boot" "${WL[raw]}" "${WL[nbd0b]}"
table_row "first lazy boot, ip=dhcp, vs local raw boot" "${WL[raw]}" "${WL[nbd0d]}"
table_row "MiB fetched, first boot vs whole store" "$(mib "$store_bytes")" "$(mib "${B[nbd0a]}")" " MiB"
[ -z "$FAILED" ] || { echo "bench/boot.sh: a boot failed (see above)" >&2; exit 1; }
