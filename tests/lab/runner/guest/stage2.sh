#!/bin/bash
# Lab stage 2, inside the overlay root: system mounts, udevd, then the command
# from /xfer/cmd.  Its output and exit status go back to the host through /xfer.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
. /xfer/lab.env
mount -t proc proc /proc
mount -t sysfs sys /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
modprobe configfs 2>/dev/null; mount -t configfs configfs /sys/kernel/config
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mkdir -p "$LAB_PROJECT" && mount --bind /mnt/lab-project "$LAB_PROJECT"
mkdir -p /run/udev /run/lock /etc/target/pr /etc/target/alua /var/target/pr /var/target/alua
hostname lab
ip link set lo up
echo "lab: kernel $(uname -r) ready in $(cut -d' ' -f1 /proc/uptime)s" > /dev/console
cut -d' ' -f1 /proc/uptime > /xfer/ready
/lib/systemd/systemd-udevd --daemon --resolve-names=never
udevadm trigger --action=add >/dev/null 2>&1
udevadm settle -t 10
cd "$LAB_PROJECT"
export FENCE_PR_LAB=1 HOME=/root
bash /xfer/cmd > /xfer/stdout 2> /xfer/stderr < /dev/null
echo $? > /xfer/rc
dmesg > /xfer/dmesg
sync
echo o > /proc/sysrq-trigger
poweroff -f
