// Small SVG line charts for the metrics tab: no library, a few hundred points.

import { h, svg } from "./dom.js";

const W = 640;
const H = 180;
const PAD = { left: 64, right: 12, top: 12, bottom: 28 };

function niceMax(value, binary) {
  if (!(value > 0)) return 1;
  if (binary && value >= 1024) {
    const k = 1024 ** Math.floor(Math.log(value) / Math.log(1024));
    return niceMax(value / k, false) * k;
  }
  const exp = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (value <= step * exp) return step * exp;
  }
  return 10 * exp;
}

// series: [{name, values: [number|null], className}], times: [ms], format(v) → text;
// binary: round the axis in powers of 1024 (bytes).
export function lineChart({ title, times, series, format, binary = false }) {
  const all = series.flatMap((s) => s.values).filter((v) => v !== null && v !== undefined);
  const top = niceMax(Math.max(0, ...all), binary);
  const t0 = times.length ? times[0] : 0;
  const t1 = times.length > 1 ? times[times.length - 1] : t0 + 1;
  const x = (t) => PAD.left + ((t - t0) / (t1 - t0 || 1)) * (W - PAD.left - PAD.right);
  const y = (v) => PAD.top + (1 - v / top) * (H - PAD.top - PAD.bottom);

  const grid = [0, 0.5, 1].map((f) =>
    svg(
      "g",
      {},
      svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(top * f), y2: y(top * f), class: "grid" }),
      svg("text", { x: PAD.left - 6, y: y(top * f) + 4, "text-anchor": "end", class: "axis" }, format(top * f)),
    ),
  );
  const short = t1 - t0 < 10 * 60 * 1000;
  const label = (t) =>
    new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: short ? "2-digit" : undefined });
  const xLabels = times.length
    ? [
        svg("text", { x: PAD.left, y: H - 8, class: "axis" }, label(t0)),
        svg("text", { x: W - PAD.right, y: H - 8, "text-anchor": "end", class: "axis" }, label(t1)),
      ]
    : [];
  const lines = series.map((s) => {
    const points = [];
    s.values.forEach((v, i) => {
      if (v !== null && v !== undefined) points.push(`${x(times[i]).toFixed(1)},${y(v).toFixed(1)}`);
    });
    return svg("polyline", { points: points.join(" "), class: `line ${s.className || ""}`, fill: "none" });
  });
  const latest = series
    .map((s) => {
      const last = [...s.values].reverse().find((v) => v !== null && v !== undefined);
      return `${s.name} ${last === undefined ? "no data" : format(last)}`;
    })
    .join(", ");
  const chart = svg(
    "svg",
    { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${title}: latest ${latest}`, class: "chart" },
    ...grid,
    ...xLabels,
    ...lines,
  );
  const legend = h(
    "ul",
    { class: "legend" },
    series.map((s) => h("li", {}, h("span", { class: `swatch ${s.className || ""}`, "aria-hidden": "true" }), s.name)),
  );
  return h("figure", { class: "chart-box" }, h("figcaption", { text: title }), chart, legend);
}
