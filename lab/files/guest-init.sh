#!/bin/busybox sh
# Lab guest /init: fill RAM with random data, then keep dirtying it. Besides, a region
# of random data that is never rewritten, with its checksum taken at boot: the guest's
# own memory check, run on request (an NMI: `virsh inject-nmi`) and told on the console.
/bin/busybox mkdir -p /bin /proc /sys /dev /fill /tmp
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
fill=64
dirty=4
check=8
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        labfill=*) fill="${arg#labfill=}" ;;
        labdirty=*) dirty="${arg#labdirty=}" ;;
        labcheck=*) check="${arg#labcheck=}" ;;
    esac
done
[ "$dirty" -gt "$fill" ] && dirty="$fill"
up() { cut -d' ' -f1 /proc/uptime; }
echo "LAB-GUEST userspace uptime=$(up)s"
mount -t tmpfs -o size=$((fill + check + 1))m tmpfs /fill
if [ "$fill" -gt 0 ]; then
    dd if=/dev/urandom of=/fill/data bs=1M count="$fill" 2>/dev/null
fi
dd if=/dev/urandom of=/fill/check bs=1M count="$check" 2>/dev/null
sum=$(md5sum /fill/check)
sum="${sum%% *}"
echo "LAB-GUEST filled $fill MiB uptime=$(up)s dirty=${dirty}MiB/s check=${check}MiB md5=$sum"
# NMIs so far (only an injected one counts up: no NMI watchdog under TCG).
nmis() {
    while read -r name count _; do
        [ "$name" = "NMI:" ] && { echo "$count"; return; }
    done </proc/interrupts
    echo 0
}
seen=$(nmis)
off=0
n=0
while true; do
    t=$(date +%s)
    now=$(nmis)
    if [ "$now" != "$seen" ]; then
        seen="$now"
        got=$(md5sum /fill/check)
        got="${got%% *}"
        verdict=ok
        [ "$got" = "$sum" ] || verdict=FAILED
        echo "LAB-GUEST memory check nmi=$now $verdict md5=$got uptime=$(up)s"
    fi
    if [ "$dirty" -gt 0 ]; then
        [ $((off + dirty)) -gt "$fill" ] && off=0
        dd if=/dev/urandom of=/fill/data bs=1M count="$dirty" seek="$off" conv=notrunc 2>/dev/null
        off=$((off + dirty))
    fi
    n=$((n + 1))
    [ $((n % 60)) -eq 0 ] && echo "LAB-GUEST alive uptime=$(up)s"
    while [ "$(date +%s)" = "$t" ]; do usleep 100000; done
done
