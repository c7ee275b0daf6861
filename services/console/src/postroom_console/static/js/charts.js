// Charts drawn as inline SVG: a handful of rects and texts, no library, nothing to load, and
// sizes are SVG attributes (not style attributes), so the strict CSP holds.

import { h, s } from "./dom.js";

// Charts are drawn at the pixel width of their box (viewBox = real size), so text stays at
// its CSS size whatever the screen; the stats page draws them again when the window resizes.

function tick(v) {
  return Number.isInteger(v) ? v.toLocaleString("en") : v.toFixed(1);
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/**
 * Vertical bars over time: points = [{key, label, value, title}]. The svg scales to its box
 * (viewBox), so one chart fits a laptop and a wide screen.
 */
export function barChart(points, { id, width: W = 720, height = 180, unit = "mails", every = 1 } = {}) {
  const pad = { l: 40, r: 8, t: 10, b: 24 };
  const max = niceMax(Math.max(0, ...points.map((p) => p.value)));
  const innerW = W - pad.l - pad.r;
  const innerH = height - pad.t - pad.b;
  const step = points.length ? innerW / points.length : innerW;
  const bw = Math.max(1, step * 0.78);
  const svg = s("svg", {
    id, class: "chart bars", viewBox: `0 0 ${W} ${height}`, role: "img",
    width: W, height, "aria-label": `${unit} per bucket, max ${max}`,
  });
  for (const frac of [0, 0.5, 1]) {
    const y = pad.t + innerH - frac * innerH;
    svg.append(
      s("line", { class: "grid-line", x1: pad.l, x2: W - pad.r, y1: y, y2: y }),
      s("text", { class: "axis", x: pad.l - 6, y: y + 4, "text-anchor": "end" }, tick(max * frac)),
    );
  }
  points.forEach((p, i) => {
    const bh = max ? (p.value / max) * innerH : 0;
    const x = pad.l + i * step + (step - bw) / 2;
    svg.append(s("rect", {
      class: "bar", x: x.toFixed(1), y: (pad.t + innerH - bh).toFixed(1), width: bw.toFixed(1),
      height: Math.max(bh, p.value ? 1 : 0).toFixed(1), "data-key": p.key, "data-value": p.value,
    }, s("title", {}, p.title || `${p.label}: ${p.value} ${unit}`)));
    if (i % every === 0) {
      svg.append(s("text", { class: "axis", x: (pad.l + i * step + step / 2).toFixed(1), y: height - 6, "text-anchor": "middle" }, p.label));
    }
  });
  if (!points.length) svg.append(s("text", { class: "axis", x: W / 2, y: height / 2, "text-anchor": "middle" }, "no data"));
  return svg;
}

/** Horizontal bars for categories (labels): [{key, value}] largest first. */
export function hbarChart(points, { id, width: W = 360, unit = "mails" } = {}) {
  const row = 22;
  const pad = { l: 90, r: 60 };
  const height = Math.max(row, points.length * row) + 4;
  const max = Math.max(1, ...points.map((p) => p.value));
  const svg = s("svg", { id, class: "chart hbars", viewBox: `0 0 ${W} ${height}`, width: W, height, role: "img", "aria-label": `${unit} per label` });
  const innerW = W - pad.l - pad.r;
  points.forEach((p, i) => {
    const y = 2 + i * row;
    const bw = (p.value / max) * innerW;
    svg.append(
      s("text", { class: "axis cat", x: pad.l - 8, y: y + 15, "text-anchor": "end" }, p.key),
      s("rect", { class: `bar label-fill-${p.key}`, x: pad.l, y: y + 3, width: Math.max(bw, p.value ? 2 : 0).toFixed(1), height: row - 6, "data-key": p.key, "data-value": p.value },
        s("title", {}, `${p.key}: ${p.value} ${unit}`)),
      s("text", { class: "axis val", x: pad.l + bw + 6, y: y + 15 }, p.value.toLocaleString("en")),
    );
  });
  if (!points.length) svg.append(s("text", { class: "axis", x: W / 2, y: 16, "text-anchor": "middle" }, "no data"));
  return svg;
}

/** Big figure with a caption, for the tiles row. */
export function tile(id, value, caption, kind = "") {
  return h("div", { class: ["tile", kind], id }, h("div", { class: "tile-value" }, value), h("div", { class: "tile-caption" }, caption));
}
