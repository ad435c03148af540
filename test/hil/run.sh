#!/usr/bin/env bash
# Hardware-in-the-loop tests on a virtual line-side device.
#
# Boots Debian's own kernel in qemu (TCG: software emulation, no KVM needed) with the kernel's real
# GPIO simulator (gpio-sim, built out of tree from Debian's kernel sources) and the virtual V4L2
# camera (vivid). The guest mounts the host's root read-only over 9p and chroots into it, so the
# host's node, node_modules, ffmpeg and this checkout run unchanged against the real drivers.
#
# A scenario is a node script (test/hil/scenarios/*.ts, bundled here with esbuild) run in the guest;
# every line it prints as `PASS <name>` or `FAIL <name>: <why>` is a result (node:test scenarios get
# that from test/hil/reporter.mjs). The run ends with `N passed, N failed`; the exit status is 0
# only when something passed and nothing failed.
#
#   test/hil/run.sh                 all scenarios
#   test/hil/run.sh gpio-chardev    the scenarios whose file name contains a word
#
# Environment: LINESIGHT_HIL_CACHE (default /var/cache/linesight-hil: kernel, modules, gpio-sim,
# initramfs; reruns reuse them), LINESIGHT_HIL_KVER (kernel ABI, e.g. 6.1.0-56-amd64; default: the
# one matching Debian's linux-source-6.1), LINESIGHT_HIL_TIMEOUT (s, whole guest run, default 900),
# LINESIGHT_HIL_MEM (MiB, 2048), LINESIGHT_HIL_SMP (2), LINESIGHT_HIL_SCENARIO_TIMEOUT (s, 300).
# Needs root (apt-get for missing Debian packages: qemu-system-x86 busybox-static kmod cpio
# xz-utils, and linux-headers-<kver> + build tools for the gpio-sim build).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HIL="$ROOT/test/hil"
CACHE="${LINESIGHT_HIL_CACHE:-/var/cache/linesight-hil}"
TIMEOUT="${LINESIGHT_HIL_TIMEOUT:-900}"
MEM="${LINESIGHT_HIL_MEM:-2048}"
SMP="${LINESIGHT_HIL_SMP:-2}"
SCEN_TIMEOUT="${LINESIGHT_HIL_SCENARIO_TIMEOUT:-300}"
export DEBIAN_FRONTEND=noninteractive
T0=$(date +%s.%N)

say() { printf 'hil: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 2; }
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

[ "$(uname -m)" = x86_64 ] || die "the virtual device needs an x86-64 host (qemu-system-x86_64 with Debian's amd64 kernel)"
[ "$(id -u)" = 0 ] || die "run as root (apt-get, the cache under /var/cache, and the guest's view of the host root)"

# ── Debian packages ──────────────────────────────────────────────────────────────────────────────
APT_UPDATED=0
apt_update_once() {
  if [ "$APT_UPDATED" = 0 ]; then
    say "apt-get update"
    apt-get update -qq
    APT_UPDATED=1
  fi
}
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }
apt_install() {
  local need=() p
  for p in "$@"; do installed "$p" || need+=("$p"); done
  [ ${#need[@]} -eq 0 ] && return 0
  apt_update_once
  say "installing ${need[*]}"
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

apt_install qemu-system-x86 busybox-static kmod cpio xz-utils
command -v node >/dev/null || die "node is not installed"
[ -d "$ROOT/node_modules" ] || die "run npm ci first ($ROOT/node_modules is missing)"
# The guest sees the host's root over 9p but mounts its own tmpfs on /tmp and /run: a checkout
# there is invisible to it, and every scenario would silently be missing.
case "$(realpath "$ROOT")/" in
  /tmp/* | /run/*) die "the checkout is under /$(realpath "$ROOT" | cut -d/ -f2)/, which the guest replaces with its own tmpfs: clone it elsewhere (e.g. /root or /srv) to run the HIL suite" ;;
esac

# ── kernel choice ────────────────────────────────────────────────────────────────────────────────
mkdir -p "$CACHE"
KVER="${LINESIGHT_HIL_KVER:-}"
if [ -z "$KVER" ] && [ -s "$CACHE/kver" ] && [ -s "$CACHE/$(cat "$CACHE/kver")/ready" ]; then
  KVER="$(cat "$CACHE/kver")"
fi
if [ -z "$KVER" ]; then
  apt_update_once
  SRCVER="$(apt-cache policy linux-source-6.1 | awk '/Candidate:/ { print $2 }')"
  [ -n "$SRCVER" ] && [ "$SRCVER" != "(none)" ] || die "Debian's linux-source-6.1 is not available from apt"
  for pkg in $(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | awk '{ print $1 }' | sort -t- -k4,4n -r); do
    if apt-cache show "$pkg" | grep -qx "Version: $SRCVER"; then KVER="${pkg#linux-image-}"; break; fi
  done
  [ -n "$KVER" ] || die "no linux-image-6.1.0-*-amd64 with version $SRCVER (the version of linux-source-6.1)"
fi
K="$CACHE/$KVER"
MODROOT="$K/modroot"

if [ ! -s "$K/ready" ]; then
  say "preparing kernel $KVER in $K (once; later runs reuse it)"
  rm -rf "$K"
  mkdir -p "$K"
  WORK="$(mktemp -d "$CACHE/.work.XXXXXX")"
  trap 'rm -rf "$WORK"' EXIT
  chmod 755 "$WORK"
  apt_update_once

  # Kernel and its modules, straight out of the .deb.
  (cd "$WORK" && apt-get download -q "linux-image-$KVER" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2 || true)
  ls "$WORK"/linux-image-"$KVER"_*.deb >/dev/null 2>&1 || die "could not download linux-image-$KVER"
  IMGVER="$(dpkg-deb -f "$WORK"/linux-image-"$KVER"_*.deb Version)"
  dpkg-deb -x "$WORK"/linux-image-"$KVER"_*.deb "$WORK/img"
  cp "$WORK/img/boot/vmlinuz-$KVER" "$K/vmlinuz"
  depmod -b "$WORK/img" "$KVER"

  # gpio-sim, built out of tree from the same kernel's sources (not built in Debian 12's kernel).
  apt_install "linux-headers-$KVER" make gcc
  (cd "$WORK" && { apt-get download -q "linux-source-6.1=$IMGVER" 2>/dev/null || apt-get download -q linux-source-6.1; } 2>&1 |
    grep -v '^W: Download is performed unsandboxed' >&2 || true)
  ls "$WORK"/linux-source-6.1_*.deb >/dev/null 2>&1 || die "could not download linux-source-6.1"
  mkdir -p "$WORK/src"
  dpkg-deb --fsys-tarfile "$WORK"/linux-source-6.1_*.deb | tar -xOf - ./usr/src/linux-source-6.1.tar.xz |
    tar -xJf - -C "$WORK/src" --strip-components=1 \
      linux-source-6.1/drivers/gpio/gpio-sim.c linux-source-6.1/drivers/gpio/gpiolib.h linux-source-6.1/kernel/irq/irq_sim.c
  mkdir -p "$WORK/gpio-sim"
  cp "$WORK/src/drivers/gpio/gpio-sim.c" "$WORK/src/drivers/gpio/gpiolib.h" "$WORK/src/kernel/irq/irq_sim.c" "$WORK/gpio-sim/"
  # irq_to_desc() is not exported to modules.
  sed -i 's/handle_simple_irq(irq_to_desc(\([^)]*\)))/generic_handle_irq(\1)/' "$WORK/gpio-sim/irq_sim.c"
  grep -q 'generic_handle_irq(' "$WORK/gpio-sim/irq_sim.c" || die "irq_sim.c: the irq_to_desc patch did not apply"
  printf 'obj-m += gpio-sim-all.o\ngpio-sim-all-objs := gpio-sim.o irq_sim.o\n' >"$WORK/gpio-sim/Kbuild"
  make -s -C "/usr/src/linux-headers-$KVER" M="$WORK/gpio-sim" -j"$(nproc)" modules >"$WORK/gpio-sim/build.log" 2>&1 ||
    { cat "$WORK/gpio-sim/build.log" >&2; die "gpio-sim build failed"; }

  # Keep only the modules the guest needs (and their dependencies), plus gpio-sim.
  mkdir -p "$MODROOT/lib/modules/$KVER/extra"
  cp "$WORK/img/lib/modules/$KVER"/modules.{order,builtin,builtin.modinfo} "$MODROOT/lib/modules/$KVER/" 2>/dev/null || true
  for m in virtio_pci 9pnet_virtio 9p configfs vivid; do
    modprobe -d "$WORK/img" -S "$KVER" --show-depends "$m"
  done | awk '$1 == "insmod" { print $2 }' | awk '!seen[$0]++' >"$WORK/deps"
  while read -r ko; do
    rel="${ko#"$WORK/img/"}"
    mkdir -p "$MODROOT/$(dirname "$rel")"
    cp "$ko" "$MODROOT/$rel"
  done <"$WORK/deps"
  cp "$WORK/gpio-sim/gpio-sim-all.ko" "$MODROOT/lib/modules/$KVER/extra/"
  depmod -b "$MODROOT" "$KVER"

  # initramfs: busybox + the modules needed to reach the host root over 9p, in load order.
  IR="$WORK/initramfs"
  mkdir -p "$IR"/{bin,dev,proc,sys,host,m}
  cp /bin/busybox "$IR/bin/busybox"
  : >"$IR/m/order"
  for m in virtio_pci 9pnet_virtio 9p configfs; do
    modprobe -d "$MODROOT" -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" { print $2 }'
  done | awk '!seen[$0]++' | while read -r ko; do
    cp "$ko" "$IR/m/"
    basename "$ko" >>"$IR/m/order"
  done
  cp "$HIL/guest-init.sh" "$IR/init"
  chmod 755 "$IR/init" "$IR/bin/busybox"
  (cd "$IR" && find . | cpio -o -H newc --quiet | gzip -1 >"$K/initrd.img")
  echo "$IMGVER" >"$K/ready"
  echo "$KVER" >"$CACHE/kver"
  rm -rf "$WORK"
  trap - EXIT
  say "kernel $KVER ready ($(elapsed) s so far)"
fi
# The init script travels in the initramfs: rebuild that part when the script changed.
if ! cmp -s "$HIL/guest-init.sh" <(cd "$K" && gzip -dc initrd.img | cpio -i --quiet --to-stdout init 2>/dev/null); then
  say "guest-init.sh changed: refreshing the initramfs"
  IR="$(mktemp -d)"
  (cd "$IR" && gzip -dc "$K/initrd.img" | cpio -id --quiet)
  cp "$HIL/guest-init.sh" "$IR/init"
  chmod 755 "$IR/init"
  (cd "$IR" && find . | cpio -o -H newc --quiet | gzip -1 >"$K/initrd.img.new")
  mv "$K/initrd.img.new" "$K/initrd.img"
  rm -rf "$IR"
fi

# ── scenarios ────────────────────────────────────────────────────────────────────────────────────
OUT="$ROOT/.cache/hil"
rm -rf "$OUT"
mkdir -p "$OUT"
mapfile -t SCENARIOS < <(
  for f in "$HIL"/scenarios/*.ts; do
    name="$(basename "$f" .ts)"
    if [ $# -eq 0 ]; then echo "$f"; else for w in "$@"; do [[ "$name" == *"$w"* ]] && { echo "$f"; break; }; done; fi
  done
)
[ ${#SCENARIOS[@]} -gt 0 ] || die "no scenario matches: $*"
node "$HIL/bundle.mjs" "$OUT" "${SCENARIOS[@]}" || die "bundling the scenarios failed"
{
  echo "ROOT='$ROOT'"
  echo "HIL='$HIL'"
  echo "OUT='$OUT'"
  echo "MODROOT='$MODROOT'"
  echo "SCEN_TIMEOUT='$SCEN_TIMEOUT'"
  printf 'SCENARIOS="%s"\n' "$(for s in "${SCENARIOS[@]}"; do basename "$s" .ts; done | tr '\n' ' ')"
} >"$OUT/plan.sh"

# ── boot ─────────────────────────────────────────────────────────────────────────────────────────
LOG="$OUT/console.log"
BIOS=()
[ -f /usr/share/qemu/qboot.rom ] && BIOS=(-bios /usr/share/qemu/qboot.rom) # boots faster than SeaBIOS
say "booting $KVER under qemu TCG (${SMP} vCPU, ${MEM} MiB) at $(elapsed) s; scenarios: ${#SCENARIOS[@]}"
BOOT0=$(date +%s.%N)
set +e
timeout --kill-after=10 "$TIMEOUT" qemu-system-x86_64 \
  -accel tcg,thread=multi -cpu max -smp "$SMP" -m "$MEM" \
  -nodefaults -no-user-config -display none -no-reboot "${BIOS[@]}" \
  -serial stdio -monitor none \
  -kernel "$K/vmlinuz" -initrd "$K/initrd.img" \
  -append "console=ttyS0 quiet loglevel=3 panic=-1 linesight.plan=$OUT/plan.sh" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
  </dev/null 2>&1 | tr -d '\r' | tee "$LOG" | grep --line-buffered -E '^(PASS|FAIL|HIL|    )' | sed -u 's/^/  /'
QEMU_RC=${PIPESTATUS[0]}
BOOT1=$(date +%s.%N)
set -e
[ "$QEMU_RC" = 124 ] && say "the guest ran past ${TIMEOUT} s and was stopped"

PASSED=$(grep -c '^PASS ' "$LOG" || true)
FAILED=$(grep -c '^FAIL ' "$LOG" || true)
BOOT_S=$(sed -n 's/^HIL boot \([0-9.]*\)$/\1/p' "$LOG" | head -n1)
if ! grep -q '^HIL done' "$LOG"; then
  say "the guest did not finish (qemu exit $QEMU_RC); last console lines:"
  grep -vE '^(PASS|FAIL)' "$LOG" | tail -n 30 >&2
  FAILED=$((FAILED + 1))
fi
say "guest: kernel to /init ${BOOT_S:-?} s, qemu $(awk -v a="$BOOT0" -v b="$BOOT1" 'BEGIN { printf "%.1f", b - a }') s; whole run $(elapsed) s"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ] && [ "$PASSED" -gt 0 ]
