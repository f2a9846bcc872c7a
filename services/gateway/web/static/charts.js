// Small SVG charts for the admin panel: bars (stacked), lines, and a gauge. No third-party code.

const NS = "http://www.w3.org/2000/svg";
const W = 600;
const H = 220;
const M = { top: 12, right: 12, bottom: 30, left: 52 };

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** 1, 2 or 5 times a power of ten, at least v: round axis maxima. */
export function niceMax(v) {
  if (!(v > 0)) return 1;
  const exp = 10 ** Math.floor(Math.log10(v));
  const f = v / exp;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * exp;
}

function frame(container, summary, title) {
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": summary });
  root.append(svg("title", {}, title ? `${title}: ${summary}` : summary));
  container.replaceChildren(root);
  return root;
}

function yAxis(root, yMax, fmt) {
  const plotH = H - M.top - M.bottom;
  for (let i = 0; i <= 4; i++) {
    const v = (yMax * i) / 4;
    const y = M.top + plotH - (plotH * i) / 4;
    root.append(svg("line", { class: i ? "grid" : "axis", x1: M.left, x2: W - M.right, y1: y, y2: y }));
    root.append(svg("text", { class: "tick", x: M.left - 6, y: y + 4, "text-anchor": "end" }, fmt(v)));
  }
}

function xLabels(root, labels, xOf) {
  const every = Math.max(1, Math.ceil(labels.length / 8));
  const last = labels.length - 1;
  labels.forEach((label, i) => {
    // Every `every`-th label, plus the last one (today) unless it would overlap its neighbour.
    const wanted = i % every === 0 || (i === last && last % every >= every / 2);
    if (!wanted) return;
    root.append(svg("text", { class: "tick", x: xOf(i), y: H - M.bottom + 16, "text-anchor": "middle" }, label));
  });
}

function legend(container, series) {
  const ul = document.createElement("ul");
  ul.className = "legend";
  for (const s of series) {
    const li = document.createElement("li");
    const sw = document.createElement("span");
    sw.className = `sw ${s.cls}`;
    li.append(sw, s.name);
    ul.append(li);
  }
  container.append(ul);
}

function empty(root, text) {
  root.append(svg("text", { class: "empty-note", x: W / 2, y: H / 2, "text-anchor": "middle" }, text));
}

/** Stacked bars per label; `cap` draws a dashed horizontal line (a budget, say). */
export function barChart(container, { labels, series, yFormat = String, title = "", cap = null, emptyText = "no data yet" }) {
  const totals = labels.map((_, i) => series.reduce((sum, s) => sum + (s.values[i] || 0), 0));
  const summary = labels.length
    ? series.map((s) => `${s.name}: ${yFormat(s.values.reduce((a, b) => a + (b || 0), 0))} in total`).join("; ")
      + ` over ${labels.length} days`
    : emptyText;
  const root = frame(container, summary, title);
  const yMax = niceMax(Math.max(...totals, cap || 0, 0));
  yAxis(root, yMax, yFormat);
  if (!labels.length) {
    empty(root, emptyText);
  } else {
    const plotW = W - M.left - M.right;
    const plotH = H - M.top - M.bottom;
    const slot = plotW / labels.length;
    const bw = Math.max(2, Math.min(40, slot * 0.7));
    const xOf = (i) => M.left + slot * i + slot / 2;
    labels.forEach((label, i) => {
      let base = 0;
      for (const s of series) {
        const v = s.values[i] || 0;
        if (v <= 0) continue;
        const h = (plotH * v) / yMax;
        const y = M.top + plotH - (plotH * base) / yMax - h;
        const rect = svg("rect", { class: s.cls, x: xOf(i) - bw / 2, y, width: bw, height: h });
        rect.append(svg("title", {}, `${label} · ${s.name}: ${yFormat(v)}`));
        root.append(rect);
        base += v;
      }
    });
    xLabels(root, labels, xOf);
    if (cap) {
      const y = M.top + plotH - (plotH * cap) / yMax;
      root.append(svg("line", { class: "cap", x1: M.left, x2: W - M.right, y1: y, y2: y }));
      root.append(svg("text", { class: "tick", x: W - M.right, y: y - 4, "text-anchor": "end" }, `cap ${yFormat(cap)}`));
    }
  }
  legend(container, series);
}

/** Lines per series; null values leave gaps. */
export function lineChart(container, { labels, series, yFormat = String, yMax = null, title = "", emptyText = "no data yet" }) {
  const all = series.flatMap((s) => s.values.filter((v) => v !== null && v !== undefined));
  const summary = all.length
    ? series.map((s) => {
      const vals = s.values.filter((v) => v !== null && v !== undefined);
      return vals.length ? `${s.name}: latest ${yFormat(vals[vals.length - 1])}` : `${s.name}: no data`;
    }).join("; ")
    : emptyText;
  const root = frame(container, summary, title);
  const top = yMax ?? niceMax(Math.max(...all, 0));
  yAxis(root, top, yFormat);
  if (!all.length) {
    empty(root, emptyText);
  } else {
    const plotW = W - M.left - M.right;
    const plotH = H - M.top - M.bottom;
    const slot = plotW / labels.length;
    const xOf = (i) => M.left + slot * i + slot / 2;
    const yOf = (v) => M.top + plotH - (plotH * Math.min(v, top)) / top;
    for (const s of series) {
      let d = "";
      let pen = false;
      s.values.forEach((v, i) => {
        if (v === null || v === undefined) { pen = false; return; }
        d += `${pen ? "L" : "M"}${xOf(i).toFixed(1)},${yOf(v).toFixed(1)} `;
        pen = true;
        const dot = svg("circle", { class: s.cls, cx: xOf(i), cy: yOf(v), r: 3 });
        dot.append(svg("title", {}, `${labels[i]} · ${s.name}: ${yFormat(v)}`));
        root.append(dot);
      });
      if (d) root.append(svg("path", { class: `line ${s.cls}`, d: d.trim(), fill: "none" }));
    }
    xLabels(root, labels, xOf);
  }
  legend(container, series);
}

/** A half-circle gauge: spent (solid) and reserved (light) out of the cap. */
export function gauge(container, { spent, reserved, cap, fmt = String }) {
  const summary = `${fmt(spent)} spent and ${fmt(reserved)} reserved of ${fmt(cap)}`;
  const root = svg("svg", { viewBox: "0 0 200 120", role: "img", "aria-label": summary });
  root.append(svg("title", {}, `Fallback budget: ${summary}`));
  const r = 80;
  const cx = 100;
  const cy = 100;
  const arc = (from, to) => {
    const a0 = Math.PI * (1 - from);
    const a1 = Math.PI * (1 - to);
    const p = (a) => `${(cx + r * Math.cos(a)).toFixed(2)},${(cy - r * Math.sin(a)).toFixed(2)}`;
    return `M${p(a0)} A${r},${r} 0 0 1 ${p(a1)}`;
  };
  const frac = (v) => (cap > 0 ? Math.max(0, Math.min(1, v / cap)) : 0);
  const s = frac(spent);
  const sr = frac(spent + reserved);
  root.append(svg("path", { class: "track", d: arc(0, 1), fill: "none", "stroke-width": 18 }));
  if (sr > s) root.append(svg("path", { class: "reserved", d: arc(s, sr), fill: "none", "stroke-width": 18 }));
  if (s > 0) root.append(svg("path", { class: "spent", d: arc(0, s), fill: "none", "stroke-width": 18 }));
  const used = cap > 0 ? ((spent + reserved) / cap) * 100 : 0;
  // One decimal below 10%: a budget barely touched should not read as untouched.
  const shown = used > 0 && used < 10 ? used.toFixed(1) : Math.round(used);
  root.append(svg("text", { class: "label", x: cx, y: cy - 12, "text-anchor": "middle" }, `${shown}%`));
  root.append(svg("text", { class: "sub", x: cx, y: cy + 8, "text-anchor": "middle" }, `of ${fmt(cap)} used`));
  container.replaceChildren(root);
}
