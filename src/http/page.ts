// The operator page: served by the agent itself (no toolchain on the device), readable on a small
// touchscreen beside the line, updated live over server-sent events (/events).
export function operatorPage(): string {
  return PAGE;
}

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>linesight — operator</title>
<style>
  :root { --bg:#111418; --card:#1c2128; --fg:#e8eaed; --dim:#9aa3ad; --ok:#2ecc71; --warn:#f5b301; --bad:#ff4d4f; }
  * { box-sizing: border-box; }
  body { margin:0; font: 16px/1.35 system-ui, sans-serif; background:var(--bg); color:var(--fg); }
  header { display:flex; align-items:center; gap:16px; padding:10px 16px; background:var(--card); flex-wrap:wrap; }
  header h1 { font-size:20px; margin:0; }
  .dim { color:var(--dim); }
  .light { display:flex; gap:6px; margin-left:auto; align-items:center; }
  .lamp { width:26px; height:26px; border-radius:50%; background:#333; border:2px solid #000; }
  .lamp.on.green { background:var(--ok); box-shadow:0 0 14px var(--ok); }
  .lamp.on.amber { background:var(--warn); box-shadow:0 0 14px var(--warn); }
  .lamp.on.red { background:var(--bad); box-shadow:0 0 14px var(--bad); }
  main { padding:12px 16px; display:grid; gap:12px; }
  .counters { display:grid; grid-template-columns: repeat(auto-fit, minmax(118px, 1fr)); gap:8px; }
  .card { background:var(--card); border-radius:10px; padding:10px 12px; }
  .big { font-size:28px; font-weight:700; white-space:nowrap; }
  .pass { color:var(--ok); } .reject { color:var(--bad); } .fs { color:var(--warn); }
  #rejects { display:grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap:10px; }
  .reject-card { background:var(--card); border-radius:10px; padding:8px; }
  .reject-card .frame { position:relative; width:100%; background:#000; border-radius:6px; overflow:hidden; }
  .reject-card img, .reject-card canvas { width:100%; display:block; }
  .reject-card canvas { position:absolute; left:0; top:0; height:100%; }
  .tag { display:inline-block; padding:1px 8px; border-radius:10px; font-size:13px; background:#333; }
  .tag.fs { background:#4a3a00; color:var(--warn); } .tag.rj { background:#4a1416; color:var(--bad); }
  #alarms li { margin:2px 0; } #alarms .critical { color:var(--bad); } #alarms .warning { color:var(--warn); }
  #spark { width:100%; height:60px; }
  #conn { font-size:13px; }
</style>
</head>
<body>
<header>
  <h1>linesight <span id="station" class="dim"></span></h1>
  <span>state <b id="state" data-testid="state">…</b></span>
  <span>model <b id="model" data-testid="model">…</b></span>
  <span id="conn" class="dim">connecting…</span>
  <div class="light" title="stack light" data-testid="stacklight">
    <div id="lamp-red" class="lamp red"></div><div id="lamp-amber" class="lamp amber"></div><div id="lamp-green" class="lamp green"></div>
  </div>
</header>
<main>
  <section class="counters">
    <div class="card"><div class="dim">parts</div><div class="big" id="parts" data-testid="parts">0</div></div>
    <div class="card"><div class="dim">pass</div><div class="big pass" id="pass" data-testid="pass">0</div></div>
    <div class="card"><div class="dim">reject</div><div class="big reject" id="reject" data-testid="reject">0</div></div>
    <div class="card"><div class="dim">yield</div><div class="big" id="yield" data-testid="yield">–</div></div>
    <div class="card"><div class="dim">fail-safe</div><div class="big fs" id="failsafe" data-testid="failsafe">0</div></div>
    <div class="card"><div class="dim">latency p50 / p99</div><div class="big" id="latency" style="font-size:18px;white-space:normal">–</div></div>
  </section>
  <section class="card"><div class="dim">latency per part (ms)</div><canvas id="spark" width="600" height="60"></canvas></section>
  <section class="card"><div class="dim">stack light notes</div><div id="reasons" data-testid="reasons">–</div>
    <div class="dim" style="margin-top:6px">alarms</div><ul id="alarms" data-testid="alarms"></ul></section>
  <section><h2 style="font-size:18px;margin:4px 0">last diverted parts</h2><div id="rejects" data-testid="rejects"></div></section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const lat = [];
const rejects = [];
function fmt(n, d) { return n === null || n === undefined ? "–" : Number(n).toFixed(d); }
function stats(s) {
  const st = s.stats;
  $("station").textContent = (s.line || "") + " / " + (s.station || "");
  $("state").textContent = s.state;
  $("model").textContent = s.model ? s.model.name + "@" + s.model.version + " (" + (s.provider || "?") + ")" : "–";
  $("parts").textContent = st.parts; $("pass").textContent = st.pass; $("reject").textContent = st.reject;
  $("failsafe").textContent = st.failSafe;
  $("yield").textContent = st.parts ? (100 * st.pass / st.parts).toFixed(1) + " %" : "–";
  $("latency").textContent = fmt(st.latencyMs.p50, 1) + " / " + fmt(st.latencyMs.p99, 1) + " ms";
  const sl = s.stackLight || { light: s.state === "running" ? "green" : "red", reasons: [] };
  for (const c of ["red", "amber", "green"]) $("lamp-" + c).classList.toggle("on", sl.light === c);
  $("reasons").textContent = sl.reasons && sl.reasons.length ? sl.reasons.join("; ") : "none";
  document.body.dataset.light = sl.light;
}
function spark() {
  const c = $("spark"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  if (lat.length < 2) return;
  const max = Math.max(...lat, 1);
  g.strokeStyle = "#4aa3ff"; g.lineWidth = 2; g.beginPath();
  lat.forEach((v, i) => { const x = i * c.width / (lat.length - 1), y = c.height - 4 - v / max * (c.height - 8); i ? g.lineTo(x, y) : g.moveTo(x, y); });
  g.stroke(); g.fillStyle = "#9aa3ad"; g.fillText(max.toFixed(0) + " ms", 4, 12);
}
function overlay(canvas, p) {
  const f = p.frame; if (!f) return;
  canvas.width = f.width; canvas.height = f.height;
  const g = canvas.getContext("2d");
  if (p.map && p.map.data && p.map.data.length) {
    const m = p.map, thr = p.threshold || 1, cw = f.width / m.width, ch = f.height / m.height;
    for (let y = 0; y < m.height; y++) for (let x = 0; x < m.width; x++) {
      // Only cells near or above the threshold: the background's texture response stays clear.
      const a = Math.max(0, Math.min(1, (m.data[y * m.width + x] - 0.75 * thr) / (0.75 * thr)));
      if (a > 0) { g.fillStyle = "rgba(255,40,40," + (0.55 * a).toFixed(2) + ")"; g.fillRect(x * cw, y * ch, cw + 0.5, ch + 0.5); }
    }
  }
  g.strokeStyle = "#ff2d2d"; g.lineWidth = Math.max(2, f.width / 160); g.font = Math.max(12, f.width / 25) + "px sans-serif"; g.fillStyle = "#ff2d2d";
  for (const d of p.defects) if (d.box) { g.strokeRect(d.box[0], d.box[1], d.box[2], d.box[3]); g.fillText(d.class, d.box[0], Math.max(12, d.box[1] - 3)); }
}
function renderRejects() {
  const root = $("rejects"); root.textContent = "";
  for (const p of rejects) {
    const card = document.createElement("div"); card.className = "reject-card"; card.dataset.part = p.id;
    const frame = document.createElement("div"); frame.className = "frame";
    if (p.image) { const img = document.createElement("img"); img.alt = p.id; img.src = p.image; frame.appendChild(img); }
    const cv = document.createElement("canvas"); cv.className = "overlay"; frame.appendChild(cv); overlay(cv, p);
    card.appendChild(frame);
    const info = document.createElement("div");
    const tag = p.failSafe ? '<span class="tag fs">fail-safe: ' + p.reason + '</span>' : '<span class="tag rj">reject</span>';
    info.innerHTML = tag + " <span class=dim>score " + fmt(p.score, 3) + "</span><br><small class=dim></small>";
    info.querySelector("small").textContent = p.id + " · " + new Date(p.time).toLocaleTimeString() + (p.defects.length ? " · " + p.defects.map((d) => d.class).join(", ") : "") + (p.detail ? " · " + p.detail : "");
    card.appendChild(info); root.appendChild(card);
  }
}
function connect() {
  const es = new EventSource("/events");
  es.onopen = () => { $("conn").textContent = "live"; };
  es.onerror = () => { $("conn").textContent = "reconnecting…"; };
  es.addEventListener("stats", (e) => stats(JSON.parse(e.data)));
  es.addEventListener("rejects", (e) => { rejects.splice(0, rejects.length, ...JSON.parse(e.data)); renderRejects(); });
  es.addEventListener("part", (e) => {
    const p = JSON.parse(e.data);
    if (p.latencyMs !== null) { lat.push(p.latencyMs); if (lat.length > 120) lat.shift(); spark(); }
    if (p.action === "divert") { rejects.unshift(p); rejects.length = Math.min(rejects.length, 12); renderRejects(); }
  });
  es.addEventListener("alarm", (e) => {
    const a = JSON.parse(e.data), li = document.createElement("li");
    li.className = a.severity; li.textContent = new Date(a.time).toLocaleTimeString() + " " + a.kind + ": " + a.message;
    const ul = $("alarms"); ul.insertBefore(li, ul.firstChild); while (ul.children.length > 8) ul.removeChild(ul.lastChild);
  });
}
connect();
</script>
</body>
</html>
`;
