#!/bin/busybox sh
# /init of the HIL guest's initramfs (busybox): load virtio + 9p, mount the host's root read-only,
# give it /proc /sys /dev and writable tmpfs, chroot into it and run test/hil/guest.sh, power off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "HIL boot $(cut -d' ' -f1 /proc/uptime)"
while read -r ko; do
  insmod "/m/$ko" 2>/dev/null || grep -q "^${ko%.ko} " /proc/modules || echo "HIL insmod $ko failed"
done </m/order
ifconfig lo 127.0.0.1 up 2>/dev/null

off() { sync; echo "HIL poweroff"; reboot -f; sleep 5; echo o >/proc/sysrq-trigger; }
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /host 2>/dev/null ||
  mount -t 9p -o trans=virtio,version=9p2000.L,ro hostroot /host || { echo "FAIL guest: cannot mount the host root over 9p"; off; }

plan=$(sed -n 's/.*linesight\.plan=\([^ ]*\).*/\1/p' /proc/cmdline)
[ -f "/host$plan" ] || { echo "FAIL guest: no run plan at $plan"; off; }
. "/host$plan"

mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t devtmpfs devtmpfs /host/dev
mkdir -p /host/dev/shm /host/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /host/dev/shm
mount -t devpts devpts /host/dev/pts 2>/dev/null
mount -t tmpfs -o mode=1777,size=75% tmpfs /host/tmp
mount -t tmpfs -o mode=755 tmpfs /host/run
mount -t configfs configfs /host/sys/kernel/config
echo "HIL userspace $(cut -d' ' -f1 /proc/uptime)"
chroot /host /bin/bash "$HIL/guest.sh" "$plan"
echo "HIL done $(cut -d' ' -f1 /proc/uptime)"
off
