#!/usr/bin/env bash
# make demo-boot: boot a real Debian (systemd) from a lazily fetched image.
#  1. build the Debian image once (scripts/bootimage.sh; kept in
#     ${XDG_CACHE_HOME:-~/.cache}/camount-bench/boot) and make its .caibx + store
#  2. serve the store with a local HTTP server (nginx), `camount nbd` on top
#  3. qemu (TCG) boots Debian's kernel with the image as its read-only root disk
#     through its NBD client; print time to multi-user.target and bytes fetched
# Needs root, mmdebstrap, nginx and qemu (make deps).
set -euo pipefail
cd "$(dirname "$0")/.."
CAMOUNT=${CAMOUNT:-$PWD/bin/camount}
IMGDIR=${BOOT_IMAGE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/camount-bench/boot}
W=$(mktemp -d /tmp/camount-demo-boot.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

step "1. The Debian image (bookworm minbase + systemd), made once into $IMGDIR"
mkdir -p "$IMGDIR"
if [ ! -s "$IMGDIR/os.img" ]; then
	BOOTIMAGE_ROOTFS_CACHE=$IMGDIR scripts/bootimage.sh "$IMGDIR/os.img.tmp"
	mv "$IMGDIR/os.img.tmp" "$IMGDIR/os.img"
fi
mkdir -p "$W/srv"
echo "\$ camount make --store=srv/os.castr srv/os.caibx os.img"
"$CAMOUNT" make --store="$W/srv/os.castr" "$W/srv/os.caibx" "$IMGDIR/os.img" >/dev/null
echo "image $(($(stat -c %s "$IMGDIR/os.img") >> 20)) MiB, store $(find "$W/srv/os.castr" -name '*.cacnk' | wc -l) chunks, $(du -sm "$W/srv/os.castr" | cut -f1) MiB"

step "2. nginx serves the store; camount nbd serves the image from it"
np=$(port)
mkdir -p "$W/ngx"
cat >"$W/ngx/nginx.conf" <<NGINX
user root;
daemon off;
pid $W/ngx/nginx.pid;
error_log $W/ngx/error.log warn;
events {}
http {
  access_log off;
  client_body_temp_path $W/ngx/client; proxy_temp_path $W/ngx/proxy; fastcgi_temp_path $W/ngx/fastcgi;
  uwsgi_temp_path $W/ngx/uwsgi; scgi_temp_path $W/ngx/scgi;
  server { listen 127.0.0.1:$np; root $W/srv; }
}
NGINX
nginx -p "$W/ngx" -c "$W/ngx/nginx.conf" -e "$W/ngx/error.log" &
pids+=($!)
sleep 0.5
URL=http://127.0.0.1:$np
echo "\$ camount nbd --listen=tcp://127.0.0.1:0 --name=os --store=$URL/os.castr $URL/os.caibx"
"$CAMOUNT" nbd --listen=tcp://127.0.0.1:0 --name=os --store="$URL/os.castr" --stats-json="$W/stats.json" \
	"$URL/os.caibx" >"$W/uri" 2>"$W/nbd.log" &
nbd=$!
pids+=($nbd)
for ((i = 0; i < 100; i++)); do [ -s "$W/uri" ] && break; sleep 0.1; done
uri=$(head -1 "$W/uri")
echo "serving $uri"

step "3. qemu boots it (TCG: expect one to a few minutes)"
kver=$(ls /boot/vmlinuz-* | sed 's|.*/vmlinuz-||' | sort -V | tail -1)
s=$(date +%s.%N)
timeout 900 qemu-system-x86_64 -accel tcg -smp 2 -m 1024 -nographic -no-reboot -nodefaults -serial stdio \
	-device virtio-rng-pci -kernel "/boot/vmlinuz-$kver" -initrd "/boot/initrd.img-$kver" -append "console=ttyS0 no_timer_check root=/dev/vda ro quiet" \
	-drive "file=$uri,format=raw,if=virtio,readonly=on" 2>&1 | tee "$W/console" | grep --line-buffered -E 'Welcome to|Reached target.*Multi-User|CAMOUNT-BOOT-MARKER|reboot: Power down' || true
e=$(date +%s.%N)
kill "$nbd"
wait "$nbd" 2>/dev/null || true
grep -q CAMOUNT-BOOT-MARKER "$W/console" || { echo "no boot marker; the console's end:"; tail -30 "$W/console"; exit 1; }
up=$(sed -n 's/.*CAMOUNT-BOOT-MARKER uptime=\([0-9.]*\).*/\1/p' "$W/console" | tr -d '\r')
fb=$(sed -n 's/.*"fetched_bytes": *\([0-9]*\).*/\1/p' "$W/stats.json")
fc=$(sed -n 's/.*"fetched_chunks": *\([0-9]*\).*/\1/p' "$W/stats.json")
printf '\nmulti-user.target at %ss of guest uptime (%.0fs wall, poweroff included); fetched %s chunks, %s MiB of a %s MiB store\n' \
	"$up" "$(echo "$e - $s" | bc -l)" "$fc" "$((fb >> 20))" "$(du -sm "$W/srv/os.castr" | cut -f1)"
