#!/bin/bash
# Runs inside the HIL guest, chrooted into the host's root (read-only; /tmp and /run are tmpfs).
# Brings up the virtual line-side devices and runs each scenario, printing its PASS/FAIL lines.
set -uo pipefail
# shellcheck disable=SC1090
. "$1"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp TMPDIR=/tmp LANG=C.UTF-8
cd /tmp

fail_all() {
  echo "FAIL guest setup: $*"
  exit 1
}

echo "HIL setup $(cut -d" " -f1 /proc/uptime)"
# vivid: one capture-only virtual camera at /dev/video0 (webcam input: 320x180..1280x720).
modprobe -d "$MODROOT" vivid n_devs=1 node_types=0x1 vid_cap_nr=0 || fail_all "modprobe vivid"
# gpio-sim: one chip, 8 lines, labelled, through configfs.
modprobe -d "$MODROOT" gpio-sim-all || fail_all "insmod gpio-sim"
C=/sys/kernel/config/gpio-sim/hil
mkdir "$C" "$C/bank0" || fail_all "gpio-sim configfs (is configfs mounted?)"
echo 8 >"$C/bank0/num_lines"
echo linesight-hil >"$C/bank0/label"
mkdir "$C/bank0/line0" && echo photo-eye >"$C/bank0/line0/name"
mkdir "$C/bank0/line1" && echo divert >"$C/bank0/line1/name"
echo 1 >"$C/live" || fail_all "gpio-sim: live"
CHIP="$(cat "$C/bank0/chip_name")"
export HIL_GPIO_LABEL=linesight-hil
export HIL_GPIO_DEV="/dev/$CHIP"
export HIL_GPIO_SIM="/sys/devices/platform/$(cat "$C/dev_name")/$CHIP"
export HIL_GPIO_LINES=8
export HIL_VIDEO=/dev/video0
export HIL_ROOT="$ROOT"
export HIL_AGENT="$OUT/agent/cli.js"
# tracefs: scenarios record GPIO writes with the kernel's gpio_value event (CLOCK_MONOTONIC stamps).
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
[ -d /sys/kernel/tracing/events/gpio ] && export HIL_TRACEFS=/sys/kernel/tracing
for i in $(seq 1 50); do [ -e "$HIL_GPIO_DEV" ] && [ -e "$HIL_VIDEO" ] && break; sleep 0.1; done
[ -e "$HIL_GPIO_DEV" ] || fail_all "$HIL_GPIO_DEV did not appear"
[ -e "$HIL_VIDEO" ] || fail_all "$HIL_VIDEO did not appear"
echo "HIL devices at $(cut -d" " -f1 /proc/uptime) s: $HIL_GPIO_DEV ($HIL_GPIO_LABEL, sim $HIL_GPIO_SIM) $HIL_VIDEO; lo flags $(cat /sys/class/net/lo/flags); $(uname -r)"

for s in $SCENARIOS; do
  echo "HIL scenario $s start $(cut -d' ' -f1 /proc/uptime)"
  out="/tmp/$s.out"
  timeout -k 5 "$SCEN_TIMEOUT" node --enable-source-maps --test-reporter="$HIL/reporter.mjs" --test-reporter-destination=stdout \
    "$OUT/$s.mjs" 2>"/tmp/$s.err" | tee "$out"
  rc=${PIPESTATUS[0]}
  if ! grep -qE '^(PASS|FAIL) ' "$out"; then
    echo "FAIL $s: printed no result (exit $rc)"
  elif [ "$rc" != 0 ] && ! grep -q '^FAIL ' "$out"; then
    echo "FAIL $s: exited with $rc after its results"
  fi
  if [ "$rc" != 0 ]; then
    [ "$rc" = 124 ] && echo "    (killed after ${SCEN_TIMEOUT} s)"
    tail -n 15 "/tmp/$s.err" | sed 's/^/    | /'
  fi
  echo "HIL scenario $s end $(cut -d' ' -f1 /proc/uptime) exit $rc"
done
