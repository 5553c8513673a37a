#!/bin/busybox sh
# Lab guest /init: fill RAM with random data, then keep dirtying it.
/bin/busybox mkdir -p /bin /proc /sys /dev /fill /tmp
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
fill=64
dirty=4
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        labfill=*) fill="${arg#labfill=}" ;;
        labdirty=*) dirty="${arg#labdirty=}" ;;
    esac
done
[ "$dirty" -gt "$fill" ] && dirty="$fill"
up() { cut -d' ' -f1 /proc/uptime; }
echo "LAB-GUEST userspace uptime=$(up)s"
mount -t tmpfs -o size=$((fill + 1))m tmpfs /fill
if [ "$fill" -gt 0 ]; then
    dd if=/dev/urandom of=/fill/data bs=1M count="$fill" 2>/dev/null
fi
echo "LAB-GUEST filled $fill MiB uptime=$(up)s dirty=${dirty}MiB/s"
off=0
n=0
while true; do
    t=$(date +%s)
    if [ "$dirty" -gt 0 ]; then
        [ $((off + dirty)) -gt "$fill" ] && off=0
        dd if=/dev/urandom of=/fill/data bs=1M count="$dirty" seek="$off" conv=notrunc 2>/dev/null
        off=$((off + dirty))
    fi
    n=$((n + 1))
    [ $((n % 60)) -eq 0 ] && echo "LAB-GUEST alive uptime=$(up)s"
    while [ "$(date +%s)" = "$t" ]; do usleep 100000; done
done
