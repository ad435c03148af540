#!/usr/bin/env bash
# Install linesight as a systemd service on a Raspberry Pi, a Jetson or a Debian box.
#   sudo systemd/install.sh            (run from a checkout; Node.js 20 must be installed)
# Idempotent: re-running upgrades the code and keeps /etc/linesight and /var/lib/linesight.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root (sudo)"; exit 1; }
src=$(cd "$(dirname "$0")/.." && pwd)
prefix=${PREFIX:-/opt/linesight}
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
[ "$node_major" -ge 20 ] || { echo "install.sh: Node.js 20 or newer is needed (found: $(node --version 2>/dev/null || echo none))"; exit 1; }

echo "== user and groups"
for g in gpio video; do getent group "$g" >/dev/null || groupadd --system "$g"; done
getent group linesight >/dev/null || groupadd --system linesight
id linesight >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /var/lib/linesight --shell /usr/sbin/nologin -g linesight linesight
usermod -aG gpio,video linesight

echo "== GPIO character devices readable by the gpio group"
cat > /etc/udev/rules.d/60-linesight-gpio.rules <<'RULES'
SUBSYSTEM=="gpio", KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"
SUBSYSTEM=="gpio", ACTION=="add", PROGRAM="/bin/sh -c 'chgrp -R gpio /sys/class/gpio /sys/devices/platform/*/gpiochip* 2>/dev/null; chmod -R g+w /sys/class/gpio 2>/dev/null; true'"
RULES
udevadm control --reload-rules 2>/dev/null || true
udevadm trigger --subsystem-match=gpio 2>/dev/null || true

echo "== code in $prefix"
mkdir -p "$prefix"
tar -C "$src" --exclude=./node_modules --exclude=./.git --exclude=./var --exclude=./runs -cf - . | tar -C "$prefix" -xf -
(cd "$prefix" && npm ci --no-audit --no-fund && npm prune --omit=dev --no-audit --no-fund)

echo "== configuration in /etc/linesight"
install -d -m 0750 -g linesight /etc/linesight
[ -f /etc/linesight/config.yaml ] || install -m 0640 -g linesight "$src/config/example.yaml" /etc/linesight/config.yaml
[ -f /etc/linesight/env ] || install -m 0640 -g linesight /dev/stdin /etc/linesight/env <<'ENV'
# Secrets and per-device overrides: LINESIGHT_<SECTION>__<KEY>=value
# LINESIGHT_MQTT__PASSWORD=
# LINESIGHT_HTTP__TOKEN=
ENV
install -m 0644 "$src/systemd/linesight.service" /etc/systemd/system/linesight.service
sed -i "s|/opt/linesight|$prefix|g" /etc/systemd/system/linesight.service

echo "== check the config, then start"
sudo -u linesight node "$prefix/bin/linesight.js" config check /etc/linesight/config.yaml || {
  echo "install.sh: fix /etc/linesight/config.yaml (errors above), then: systemctl enable --now linesight"; exit 2; }
systemctl daemon-reload
systemctl enable --now linesight
systemctl --no-pager status linesight || true
echo "linesight installed: journalctl -u linesight -f"
