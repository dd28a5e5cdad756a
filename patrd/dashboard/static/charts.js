// Small SVG line charts for the metrics tab: no library, a few hundred points.
// Readable on a phone (the drawing is as wide as the screen allows, so text
// stays near its CSS size), values on hover and on keyboard focus (arrow
// keys), a legend with each series' latest value, and optionally a choice of
// scale (memory: zoomed to the usage, or up to the limit).

import { h, svg } from "./dom.js";

const H = 200;
const PAD = { left: 66, right: 14, top: 14, bottom: 30 };

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

function lastOf(values) {
  return [...values].reverse().find((v) => v !== null && v !== undefined);
}

// series: [{name, values: [number|null], className}], times: [ms], format(v) → text;
// binary: round the axis in powers of 1024 (bytes); scales: optional
// [{label, by: [series names]}] the user can switch between (first is the default).
// state: an object kept by the caller across redraws (the chosen scale).
export function lineChart({ title, times, series, format, binary = false, scales = null, state = {} }) {
  // About the card's width in CSS pixels (two cards a row on wide screens), so text keeps its size.
  const wide = (window.innerWidth || 640) >= 1000;
  const W = wide ? 520 : Math.round(Math.max(320, Math.min(640, (window.innerWidth || 640) - 70)));
  const readout = h("p", { class: "chart-readout", "aria-live": "polite", text: "Hover or focus the chart for values." });
  const holder = h("div", { class: "chart-holder" });
  let scaleIndex = scales && state.scale < scales.length ? state.scale : 0;
  let cursor = -1;

  const short = times.length > 1 && times[times.length - 1] - times[0] < 10 * 60 * 1000;
  const label = (t) =>
    new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: short ? "2-digit" : undefined });

  function draw() {
    const by = scales ? scales[scaleIndex].by : series.map((s) => s.name);
    const inScale = series.filter((s) => by.includes(s.name)).flatMap((s) => s.values).filter((v) => v !== null && v !== undefined);
    const top = niceMax(Math.max(0, ...inScale) * (scales ? 1.1 : 1), binary);
    const t0 = times.length ? times[0] : 0;
    const t1 = times.length > 1 ? times[times.length - 1] : t0 + 1;
    const x = (t) => PAD.left + ((t - t0) / (t1 - t0 || 1)) * (W - PAD.left - PAD.right);
    const y = (v) => PAD.top + (1 - Math.min(v, top) / top) * (H - PAD.top - PAD.bottom);

    const grid = [0, 0.25, 0.5, 0.75, 1].map((f) =>
      svg(
        "g",
        {},
        svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(top * f), y2: y(top * f), class: "grid" }),
        f * 4 % 2 === 0 ? svg("text", { x: PAD.left - 6, y: y(top * f) + 4, "text-anchor": "end", class: "axis" }, format(top * f)) : null,
      ),
    );
    const xLabels = times.length
      ? [
          svg("text", { x: PAD.left, y: H - 9, class: "axis" }, label(t0)),
          times.length > 2 ? svg("text", { x: (PAD.left + W - PAD.right) / 2, y: H - 9, "text-anchor": "middle", class: "axis" }, label(times[Math.floor(times.length / 2)])) : null,
          svg("text", { x: W - PAD.right, y: H - 9, "text-anchor": "end", class: "axis" }, label(t1)),
        ]
      : [];
    const offScale = [];
    const lines = series.map((s) => {
      const last = lastOf(s.values);
      if (!by.includes(s.name) && last !== undefined && last > top) {
        offScale.push(`${s.name} ${format(last)} is above this scale`);
        return null;
      }
      const points = [];
      s.values.forEach((v, i) => {
        if (v !== null && v !== undefined) points.push(`${x(times[i]).toFixed(1)},${y(v).toFixed(1)}`);
      });
      return svg("polyline", { points: points.join(" "), class: `line ${s.className || ""}`, fill: "none" });
    });
    const guide = cursor >= 0 && times[cursor] !== undefined ? svg("line", { x1: x(times[cursor]), x2: x(times[cursor]), y1: PAD.top, y2: H - PAD.bottom, class: "guide" }) : null;
    const dots =
      cursor >= 0
        ? series.map((s) => {
            const v = s.values[cursor];
            return v === null || v === undefined || (!by.includes(s.name) && v > top) ? null : svg("circle", { cx: x(times[cursor]), cy: y(v), r: 4, class: `dot ${s.className || ""}` });
          })
        : [];
    const latest = series.map((s) => `${s.name} ${lastOf(s.values) === undefined ? "no data" : format(lastOf(s.values))}`).join(", ");
    const chart = svg(
      "svg",
      { viewBox: `0 0 ${W} ${H}`, role: "img", tabindex: "0", "aria-label": `${title}: latest ${latest}. Arrow keys read the values.`, class: "chart" },
      ...grid,
      ...xLabels,
      ...lines.filter(Boolean),
      guide,
      ...dots,
      offScale.length ? svg("text", { x: W - PAD.right, y: PAD.top + 12, "text-anchor": "end", class: "axis note" }, `${offScale.join("; ")} ↑`) : null,
    );
    const pick = (clientX) => {
      const box = chart.getBoundingClientRect();
      const at = ((clientX - box.left) / box.width) * W;
      let best = -1;
      let bestGap = Infinity;
      times.forEach((t, i) => {
        const gap = Math.abs(x(t) - at);
        if (gap < bestGap) {
          best = i;
          bestGap = gap;
        }
      });
      return best;
    };
    chart.addEventListener("mousemove", (event) => point(pick(event.clientX)));
    chart.addEventListener("focus", () => {
      if (cursor < 0) point(times.length - 1); // redraws and focuses the new drawing: once
    });
    chart.addEventListener("keydown", (event) => {
      if (event.key === "ArrowLeft") point(Math.max(0, cursor - 1));
      else if (event.key === "ArrowRight") point(Math.min(times.length - 1, cursor + 1));
      else return;
      event.preventDefault();
    });
    return chart;
  }

  function point(i, refocus = true) {
    if (i < 0 || !times.length) return;
    cursor = i;
    const values = series.map((s) => `${s.name} ${s.values[i] === null || s.values[i] === undefined ? "–" : format(s.values[i])}`);
    readout.textContent = `${new Date(times[i]).toLocaleString()}: ${values.join(", ")}`;
    const focused = holder.contains(document.activeElement);
    const chart = draw();
    holder.replaceChildren(chart);
    if (focused && refocus) chart.focus({ preventScroll: true });
  }

  holder.replaceChildren(draw());
  const legend = h(
    "ul",
    { class: "legend" },
    series.map((s) => {
      const last = lastOf(s.values);
      return h("li", {}, h("span", { class: `swatch ${s.className || ""}`, "aria-hidden": "true" }), `${s.name} ${last === undefined ? "" : `(now ${format(last)})`}`);
    }),
  );
  const switcher = scales
    ? h(
        "div",
        { class: "chart-scale", role: "group", "aria-label": `${title} scale` },
        scales.map((sc, i) =>
          h("button", {
            type: "button",
            class: "small secondary",
            "aria-pressed": String(i === scaleIndex),
            text: sc.label,
            onclick: (event) => {
              scaleIndex = i;
              state.scale = i;
              for (const b of event.target.parentElement.children) b.setAttribute("aria-pressed", String(b === event.target));
              holder.replaceChildren(draw());
            },
          }),
        ),
      )
    : null;
  return h("figure", { class: "chart-box" }, h("figcaption", { text: title }), switcher, holder, legend, readout);
}
