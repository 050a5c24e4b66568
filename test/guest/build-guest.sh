#!/usr/bin/env bash
# Builds a tiny guest for end-to-end tests: Debian's cloud kernel plus a busybox initramfs whose
# /init reads/writes a text marker in sector 0 of /dev/vda and powers off. Output (in
# $VMPOOLS_GUEST_DIR, default /var/cache/vmpools-test-guest): vmlinuz, initrd.cpio.gz, stamp.
#
# Idempotent: a stamp holding this script's hash marks a finished build, so a rebuild happens
# only when the script changes (or with --force), and a cached run needs neither apt nor network.
# Packages are fetched with `apt-get download` and unpacked with `dpkg-deb -x` into a temp
# folder: installing linux-image-* would run initramfs/grub hooks on this machine, and the
# busybox-static package is only needed inside the guest, so neither is installed.
set -euo pipefail

OUT="${VMPOOLS_GUEST_DIR:-/var/cache/vmpools-test-guest}"
SELF="$(readlink -f "${BASH_SOURCE[0]}")"
HASH="$(sha256sum "$SELF" | cut -d' ' -f1)"
FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

built() {
  [ -s "$OUT/vmlinuz" ] && [ -s "$OUT/initrd.cpio.gz" ] && [ -f "$OUT/stamp" ] &&
    [ "$(head -n1 "$OUT/stamp")" = "$HASH" ]
}

mkdir -p "$OUT"
# Guest files are read by qemu running as libvirt-qemu, so the cache must be world-readable.
chmod 755 "$OUT"
# Parallel test workers may call this at once; one builds, the others wait and reuse.
exec 9>"$OUT/.lock"
flock 9
if [ "$FORCE" = 0 ] && built; then
  exit 0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

# The package lists may be missing on a fresh machine; refresh them only then.
if ! apt-cache show --no-all-versions linux-image-cloud-amd64 >/dev/null 2>&1; then
  apt-get update -qq
fi
# linux-image-cloud-amd64 is a metapackage: download the versioned image it depends on.
KPKG="$(apt-cache show --no-all-versions linux-image-cloud-amd64 |
  sed -n 's/^Depends: \(linux-image-[^ ,]*\).*/\1/p' | head -n1)"
[ -n "$KPKG" ] || { echo "build-guest: cannot resolve linux-image-cloud-amd64" >&2; exit 1; }
# The sandbox user _apt cannot write into a root-only temp folder; we only download here.
apt-get download -qq -o APT::Sandbox::User=root "$KPKG" busybox-static >/dev/null
dpkg-deb -x ./"$KPKG"_*.deb kernel
dpkg-deb -x ./busybox-static_*.deb busybox

KVER="$(ls kernel/lib/modules | head -n1)"
MODDIR="kernel/lib/modules/$KVER/kernel"
BB="$WORK/busybox/bin/busybox"
[ -x "$BB" ] || { echo "build-guest: busybox binary missing" >&2; exit 1; }

ROOT="$WORK/root"
mkdir -p "$ROOT"/{bin,dev,proc,sys,modules}
cp "$BB" "$ROOT/bin/busybox"
for applet in sh mount dd tr sync insmod poweroff sleep cat echo printf grep sed; do
  ln -s busybox "$ROOT/bin/$applet"
done

# Load order matters: busybox insmod does not resolve dependencies. Modules that this kernel
# builds in (or lacks, e.g. older kernels without virtio_pci_*_dev) are skipped; the order is
# written to /modules/order for /init.
: >"$ROOT/modules/order"
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk; do
  f="$(find "$MODDIR" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" -o -name "$m.ko.gz" |
    head -n1)"
  if [ -z "$f" ]; then
    # Built in (=y) is fine; anything else means the guest will not find its disk.
    if grep -q "^$m\$" "kernel/lib/modules/$KVER/modules.builtin" 2>/dev/null ||
      grep -q "/$m.ko\$" "kernel/lib/modules/$KVER/modules.builtin" 2>/dev/null; then
      continue
    fi
    case "$m" in virtio_pci_legacy_dev | virtio_pci_modern_dev) continue ;; esac
    echo "build-guest: module $m not found in $KPKG" >&2
    exit 1
  fi
  # Decompress here so the guest's insmod needs no compression support.
  case "$f" in
    *.xz) xz -dc "$f" >"$ROOT/modules/$m.ko" ;;
    *.zst) zstd -qdc "$f" >"$ROOT/modules/$m.ko" ;;
    *.gz) gzip -dc "$f" >"$ROOT/modules/$m.ko" ;;
    *) cp "$f" "$ROOT/modules/$m.ko" ;;
  esac
  echo "$m" >>"$ROOT/modules/order"
done

cat >"$ROOT/init" <<'INIT'
#!/bin/sh
# Guest protocol (all on the serial console):
#   VMPOOLS-GUEST-READY              booted, disk driver loaded
#   MARKER[<text>]                   sector 0 of /dev/vda before any write (NULs stripped)
#   MARKER-WRITTEN[<text>]           after vmpools.action=write-marker:<text>, flushed
#   VMPOOLS-GUEST-ERROR <why>        something failed; the guest still powers off
#   VMPOOLS-GUEST-STAYING            vmpools.after=stay: up until destroyed, instead of powering off
#   HEARTBEAT <n> <uptime s>         vmpools.after=heartbeat: as stay, printing n = 1, 2, ... about
#                                    every 100 ms (a live migration continues n; a reboot restarts it)
#   VMPOOLS-GUEST-POWEROFF           about to power off
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1

fail() { echo "VMPOOLS-GUEST-ERROR $*"; off; }
off() {
  echo "VMPOOLS-GUEST-POWEROFF"
  sync
  # -f: no init system to ask; the kernel powers off through ACPI.
  poweroff -f
  while :; do sleep 1; done
}

while read -r m; do
  insmod "/modules/$m.ko" || fail "insmod $m"
done </modules/order

# virtio_blk probes asynchronously; give the device node a moment to appear.
n=0
while [ ! -b /dev/vda ]; do
  n=$((n + 1))
  [ "$n" -gt 100 ] && fail "no /dev/vda"
  sleep 0.05
done
echo "VMPOOLS-GUEST-READY"

action=""
after=""
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    vmpools.action=*) action="${arg#vmpools.action=}" ;;
    vmpools.after=*) after="${arg#vmpools.after=}" ;;
  esac
done

readmarker() { dd if=/dev/vda bs=512 count=1 2>/dev/null | tr -d '\000\n'; }

case "$action" in
  read-marker)
    echo "MARKER[$(readmarker)]"
    ;;
  write-marker:*)
    text="${action#write-marker:}"
    echo "MARKER[$(readmarker)]"
    # conv=sync pads to a full 512-byte sector with NULs, wiping any older, longer marker; fsync
    # flushes the disk, so the host sees the write in the image while the guest is still up.
    printf '%s' "$text" | dd of=/dev/vda bs=512 count=1 conv=sync,fsync 2>/dev/null || fail "dd"
    sync
    echo "MARKER-WRITTEN[$(readmarker)]"
    ;;
  "") ;;
  *) fail "unknown action $action" ;;
esac
if [ "$after" = "stay" ]; then
  echo "VMPOOLS-GUEST-STAYING"
  while :; do sleep 1; done
fi
if [ "$after" = "heartbeat" ]; then
  echo "VMPOOLS-GUEST-STAYING"
  n=0
  while :; do
    n=$((n + 1))
    read -r up _ </proc/uptime
    echo "HEARTBEAT $n $up"
    sleep 0.1
  done
fi
off
INIT
chmod 755 "$ROOT/init"

# busybox's own cpio writes the newc archive, so the host needs no cpio package.
(cd "$ROOT" && find . | "$BB" cpio -o -H newc -R 0:0 2>/dev/null) | gzip -9 >initrd.cpio.gz
cp "kernel/boot/vmlinuz-$KVER" vmlinuz

install -m 644 vmlinuz "$OUT/vmlinuz.tmp"
install -m 644 initrd.cpio.gz "$OUT/initrd.cpio.gz.tmp"
mv -f "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
mv -f "$OUT/initrd.cpio.gz.tmp" "$OUT/initrd.cpio.gz"
printf '%s\n%s\n' "$HASH" "$KVER" >"$OUT/stamp"
echo "build-guest: built $KVER into $OUT"
