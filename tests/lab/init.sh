#!/bin/sh
# /init of a soft-RoCE lab node. Loads the RDMA and virtio modules, brings up eth0 with the
# address from the kernel command line, mounts the host's / (read-only, 9p) and runs the
# lab's guest agent there, in a chroot, so every host binary runs on the guest's kernel.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

for arg in $(cat /proc/cmdline); do
  case "$arg" in
  rdmaq.ip=*) IP=${arg#rdmaq.ip=} ;;
  rdmaq.name=*) NAME=${arg#rdmaq.name=} ;;
  rdmaq.guest=*) GUEST=${arg#rdmaq.guest=} ;;
  esac
done

while read -r mod; do
  insmod "$mod" || echo "lab-init: insmod $mod failed"
done </modules.load

hostname "$NAME"
ip link set lo up
ip link set eth0 up
ip addr add "$IP" dev eth0

mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 hostroot /host || {
  echo "lab-init: cannot mount the host's root"; exit 1; }
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t devtmpfs devtmpfs /host/dev
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts
mount -t tmpfs tmpfs /host/dev/shm
# /tmp stays the host's /tmp (a checkout there must stay visible: tests run binaries from
# the build tree) but becomes writable: an overlay with the node's own changes in memory.
mkdir -p /ovl
mount -t tmpfs tmpfs /ovl
mkdir -p /ovl/upper /ovl/work
mount -t overlay overlay -o lowerdir=/host/tmp,upperdir=/ovl/upper,workdir=/ovl/work /host/tmp || {
  echo "lab-init: overlay on /tmp failed; /tmp is an empty tmpfs"
  mount -t tmpfs tmpfs /host/tmp
}
mount -t tmpfs tmpfs /host/run
mount -t tracefs tracefs /host/sys/kernel/tracing
mount -t debugfs debugfs /host/sys/kernel/debug
mount -t bpf bpf /host/sys/fs/bpf
mount -t cgroup2 cgroup2 /host/sys/fs/cgroup

HOSTPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
chroot /host /usr/bin/env PATH=$HOSTPATH rdma link add rxe0 type rxe netdev eth0 ||
  echo "lab-init: rdma link add failed"
echo "lab-init: starting $GUEST as $NAME ($IP)"
exec chroot /host /usr/bin/env -i PATH=$HOSTPATH HOME=/tmp "$GUEST" --name "$NAME"
