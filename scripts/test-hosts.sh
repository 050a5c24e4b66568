#!/usr/bin/env bash
# Several real libvirt hosts on this machine, for the cluster tests (test/support/cluster-hosts.ts).
#
#   test-hosts.sh up NAME N               cleans up leftovers of NAME, starts hosts h1..hN
#   test-hosts.sh down NAME               destroys their guests, stops them, removes everything
#   test-hosts.sh stop-libvirtd NAME HOST SIGTERM to HOST's libvirtd only, waits until it is gone
#   test-hosts.sh start-libvirtd NAME HOST starts it again (same namespaces' folders), waits for it
#
# Each host is a libvirtd + virtlogd pair in its own network namespace (veth on the bridge
# vmpbr-NAME, 10.251.S.0/24 with S from NAME; the root namespace is .1, host i is .(10+i)), its
# own UTS namespace (hostname NAME-hI) and its own mount namespace, where its state folders are
# bound over /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt.
# Every host defines the same dir storage pool (vmpools-shared) on one shared folder, so live
# migration copies no storage. Daemons are found by their pid files only: the machine's own
# libvirtd (/run/libvirtd.pid) is never touched.
#
# `up` prints one line per host: "NAME ADDRESS URI HOST_UUID".
set -euo pipefail

SELF="$(readlink -f "${BASH_SOURCE[0]}")"
ROOT_DIR=/var/lib/vmpools-cluster
STORAGE_POOL=vmpools-shared
FIRST_HOST_OCTET=10
MAX_HOSTS=9
START_TIMEOUT_S=30

die() {
  echo "test-hosts: $*" >&2
  exit 1
}

check_name() {
  # Interface names are at most 15 characters: "vmpbr-NAME", "vmpv-NAME-9".
  [[ "$1" =~ ^[a-z0-9]{1,8}$ ]] || die "cluster name must be 1-8 of [a-z0-9], got '$1'"
}

# The third octet: from the name, so that clusters of different names can run at once.
subnet_octet() { echo $(($(printf '%s' "$1" | cksum | cut -d' ' -f1) % 250 + 1)); }

state_dir() { echo "$ROOT_DIR/$1"; }
host_dir() { echo "$ROOT_DIR/$1/$2"; }
netns_name() { echo "vmpools-$1-$2"; }
bridge_name() { echo "vmpbr-$1"; }
veth_name() { echo "vmpv-$1-${2#h}"; }
host_address() { echo "10.251.$(subnet_octet "$1").$((FIRST_HOST_OCTET + ${2#h}))"; }
host_uri() { echo "qemu+tcp://$(host_address "$1" "$2")/system"; }

# The pid in FILE if that process is alive and is COMM (a pid file can outlive its daemon).
live_pid() {
  local file="$1" comm="$2" pid
  pid="$(cat "$file" 2>/dev/null || true)"
  [ -n "$pid" ] && [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ] &&
    ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null && echo "$pid"
}

# Sends SIGNAL to the daemon of FILE and waits (up to 10 s) until it is gone.
stop_daemon() {
  local file="$1" comm="$2" signal="$3" pid
  pid="$(live_pid "$file" "$comm")" || return 0
  kill "-$signal" "$pid" 2>/dev/null || true
  for _ in $(seq 1 200); do
    live_pid "$file" "$comm" >/dev/null || return 0
    sleep 0.05
  done
  die "$comm (pid $pid, $file) did not exit after SIG$signal"
}

write_config() {
  local name="$1" host="$2" dir address uuid
  dir="$(host_dir "$name" "$host")"
  address="$(host_address "$name" "$host")"
  uuid="$(cat /proc/sys/kernel/random/uuid)"
  mkdir -p "$dir"/{etc/qemu,etc/storage,run,lib,cache/qemu,log/qemu}
  echo "$uuid" >"$dir/host-uuid"
  cat >"$dir/etc/libvirtd.conf" <<EOF
# Cluster test host $name/$host (scripts/test-hosts.sh).
host_uuid = "$uuid"
listen_tls = 0
listen_tcp = 1
auth_tcp = "none"
listen_addr = "$address"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF
  cat >"$dir/etc/qemu.conf" <<EOF
# Cluster test host $name/$host (scripts/test-hosts.sh).
# Incoming migrations listen on, and are announced as, this host's own address: every host
# would otherwise announce the same hostname.
migration_address = "$address"
migration_host = "$address"
# qemu runs as root and libvirt changes no file owner: the image folder is shared by all hosts,
# and a migration's source would otherwise chown a disk back while the destination uses it.
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
# Domain ids restart at 1 on every host, so their cgroups (machine/qemu-ID-NAME) would collide.
cgroup_controllers = [ ]
EOF
  cat >"$dir/etc/virtlogd.conf" <<EOF
log_outputs = "3:file:/var/log/libvirt/virtlogd.log"
EOF
  # The root daemon's qemu capability cache is valid here (same binaries, kernel and CPU);
  # copying it saves each host a probe of qemu that takes seconds.
  if [ -d /var/cache/libvirt/qemu/capabilities ]; then
    cp -a /var/cache/libvirt/qemu/capabilities "$dir/cache/qemu/"
  fi
}

# Runs inside the host's fresh mount + UTS namespace (see start_daemons): binds its folders,
# then starts virtlogd (unless it still runs) and libvirtd.
inner_start() {
  local name="$1" host="$2" dir
  dir="$(host_dir "$name" "$host")"
  hostname "$name-$host"
  mount --bind "$dir/etc" /etc/libvirt
  mount --bind "$dir/run" /run/libvirt
  mount --bind "$dir/lib" /var/lib/libvirt
  mount --bind "$dir/cache" /var/cache/libvirt
  mount --bind "$dir/log" /var/log/libvirt
  # Explicit pid files: the defaults (/run/virtlogd.pid, /run/libvirtd.pid) are the root daemons'.
  if ! live_pid "$dir/virtlogd.pid" virtlogd >/dev/null; then
    virtlogd -d -f /etc/libvirt/virtlogd.conf -p "$dir/virtlogd.pid"
  fi
  exec libvirtd -d --listen -f /etc/libvirt/libvirtd.conf -p "$dir/libvirtd.pid"
}

start_daemons() {
  local name="$1" host="$2"
  nsenter --net="/run/netns/$(netns_name "$name" "$host")" \
    unshare --mount --uts --propagation private bash "$SELF" _inner-start "$name" "$host"
}

wait_answer() {
  local uri="$1" deadline=$((SECONDS + START_TIMEOUT_S))
  until virsh -c "$uri" uri >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "$uri did not answer within ${START_TIMEOUT_S} s"
    sleep 0.05
  done
}

make_network() {
  local name="$1" count="$2" octet bridge i host ns veth
  octet="$(subnet_octet "$name")"
  bridge="$(bridge_name "$name")"
  if ip -4 -o addr show | grep -v " $bridge " | grep -q " 10\.251\.$octet\."; then
    die "10.251.$octet.0/24 is in use by another interface; pick another cluster name than '$name'"
  fi
  ip link add "$bridge" type bridge
  ip addr add "10.251.$octet.1/24" dev "$bridge"
  ip link set "$bridge" up
  for i in $(seq 1 "$count"); do
    host="h$i"
    ns="$(netns_name "$name" "$host")"
    veth="$(veth_name "$name" "$host")"
    ip netns add "$ns"
    ip link add "$veth" type veth peer name eth0 netns "$ns"
    ip link set "$veth" master "$bridge" up
    ip -n "$ns" addr add "$(host_address "$name" "$host")/24" dev eth0
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
  done
}

cmd_up() {
  local name="$1" count="$2" i host pids=()
  check_name "$name"
  [[ "$count" =~ ^[1-9]$ ]] || die "host count must be 1..$MAX_HOSTS, got '$count'"
  cmd_down "$name"
  mkdir -p "$(state_dir "$name")/images"
  chmod 755 "$ROOT_DIR" "$(state_dir "$name")" "$(state_dir "$name")/images"
  make_network "$name" "$count"
  for i in $(seq 1 "$count"); do
    write_config "$name" "h$i"
    start_daemons "$name" "h$i"
  done
  # The daemons start in parallel; define the shared pool on each as soon as it answers.
  for i in $(seq 1 "$count"); do
    (
      uri="$(host_uri "$name" "h$i")"
      wait_answer "$uri"
      virsh -q -c "$uri" pool-define-as "$STORAGE_POOL" dir --target "$(state_dir "$name")/images" >/dev/null
      virsh -q -c "$uri" pool-autostart "$STORAGE_POOL" >/dev/null
      virsh -q -c "$uri" pool-start "$STORAGE_POOL" >/dev/null
    ) &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || die "a host of '$name' did not come up (see $(state_dir "$name")/h*/log/libvirtd.log)"; done
  for i in $(seq 1 "$count"); do
    host="h$i"
    echo "$host $(host_address "$name" "$host") $(host_uri "$name" "$host") $(cat "$(host_dir "$name" "$host")/host-uuid")"
  done
}

# Every qemu that HOST of NAME runs, found by its mount namespace (for guests whose libvirtd is
# gone, e.g. after a killed run): its /run/libvirt is the host's run folder.
host_qemu_pids() {
  local name="$1" host="$2" dir p
  dir="$(host_dir "$name" "$host")"
  for p in /proc/[0-9]*; do
    [ "$(cat "$p/comm" 2>/dev/null)" = "qemu-system-x86" ] || continue
    [ "$(stat -Lc %d:%i "$p/root/run/libvirt" 2>/dev/null)" = "$(stat -c %d:%i "$dir/run")" ] && echo "${p#/proc/}"
  done
}

cmd_down() {
  local name="$1" dir host ns pid
  check_name "$name"
  dir="$(state_dir "$name")"
  if [ -d "$dir" ]; then
    for hostdir in "$dir"/h*; do
      [ -d "$hostdir" ] || continue
      host="$(basename "$hostdir")"
      # The guests first (a killed run's daemon may be gone), then the daemons.
      if pid="$(live_pid "$hostdir/libvirtd.pid" libvirtd)"; then
        local uri doms
        uri="$(host_uri "$name" "$host")"
        doms="$(timeout 10 virsh -q -c "$uri" list --all --name 2>/dev/null || true)"
        for d in $doms; do
          timeout 10 virsh -q -c "$uri" destroy "$d" >/dev/null 2>&1 || true
          timeout 10 virsh -q -c "$uri" undefine --nvram "$d" >/dev/null 2>&1 ||
            timeout 10 virsh -q -c "$uri" undefine "$d" >/dev/null 2>&1 || true
        done
      fi
      for p in $(host_qemu_pids "$name" "$host"); do kill -KILL "$p" 2>/dev/null || true; done
      stop_daemon "$hostdir/libvirtd.pid" libvirtd TERM
      stop_daemon "$hostdir/virtlogd.pid" virtlogd TERM
    done
  fi
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^vmpools-$name-h[0-9]\$" || true); do
    ip netns delete "$ns"
  done
  ip link show "$(bridge_name "$name")" >/dev/null 2>&1 && ip link delete "$(bridge_name "$name")"
  rm -rf "$dir"
}

cmd_stop_libvirtd() {
  local name="$1" host="$2"
  check_name "$name"
  stop_daemon "$(host_dir "$name" "$host")/libvirtd.pid" libvirtd TERM
}

cmd_start_libvirtd() {
  local name="$1" host="$2"
  check_name "$name"
  [ -d "$(host_dir "$name" "$host")" ] || die "no host $host in cluster '$name'; run: test-hosts.sh up $name N"
  if ! live_pid "$(host_dir "$name" "$host")/libvirtd.pid" libvirtd >/dev/null; then
    start_daemons "$name" "$host"
  fi
  wait_answer "$(host_uri "$name" "$host")"
}

case "${1:-}" in
  up) cmd_up "${2:?cluster name}" "${3:?host count}" ;;
  down) cmd_down "${2:?cluster name}" ;;
  stop-libvirtd) cmd_stop_libvirtd "${2:?cluster name}" "${3:?host, e.g. h2}" ;;
  start-libvirtd) cmd_start_libvirtd "${2:?cluster name}" "${3:?host, e.g. h2}" ;;
  _inner-start) inner_start "$2" "$3" ;;
  *) die "usage: test-hosts.sh up NAME N | down NAME | stop-libvirtd NAME HOST | start-libvirtd NAME HOST" ;;
esac
