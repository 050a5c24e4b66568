#!/usr/bin/env bash
# Starts Debian's libvirtd (and virtlogd) on this machine if it is not running. The daemon needs
# the libvirt-qemu user, the kvm group and its runtime folders, which a container lacks.
set -euo pipefail
getent group kvm >/dev/null || groupadd -r kvm
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
getent group libvirt >/dev/null || groupadd -r libvirt
id -u libvirt-qemu >/dev/null 2>&1 || useradd -r -g libvirt-qemu -G kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
mkdir -p /var/log/libvirt /var/run/libvirt /var/lib/libvirt/images
# libvirt probes qemu with KVM and checks /dev/kvm as libvirt-qemu; a container's root-only
# /dev/kvm makes it re-probe qemu on every call (seconds per virsh command). Debian's udev
# normally gives the device to the kvm group.
if [ -e /dev/kvm ]; then chgrp kvm /dev/kvm && chmod 0660 /dev/kvm; fi
# By pid file, not by name: the cluster tests' hosts (scripts/test-hosts.sh) run their own
# libvirtd and virtlogd, which are not this machine's daemons.
running() {
  local pid
  pid="$(cat "$1" 2>/dev/null)" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] &&
    ! grep -qs '^State:.*Z' "/proc/$pid/status"
}
running /run/virtlogd.pid virtlogd || virtlogd -d
running /run/libvirtd.pid libvirtd || libvirtd -d
for _ in $(seq 1 50); do
  virsh -c test+unix:///default uri >/dev/null 2>&1 && exit 0
  sleep 0.2
done
echo "libvirt-up: libvirtd did not answer" >&2
exit 1
