// The overview's CPU and memory sparklines: one small SVG line each, the
// figure it ends on in text beside it (the line shows the trend; the words
// carry the value, also for screen readers through aria-label).

import { h, svg } from "./dom.js";

const W = 120;
const H = 28;

// values: [number|null] oldest first; max: the top of the scale (>= the values).
export function sparkline(values, max, label) {
  const points = values.map((v, i) => [i, v]).filter(([, v]) => v !== null && v !== undefined);
  const top = max > 0 ? max : 1;
  const step = values.length > 1 ? W / (values.length - 1) : W;
  const path = points
    .map(([i, v], k) => `${k === 0 ? "M" : "L"}${(i * step).toFixed(1)},${(H - 2 - (Math.min(v, top) / top) * (H - 4)).toFixed(1)}`)
    .join(" ");
  return svg(
    "svg",
    { class: "sparkline", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": label, preserveAspectRatio: "none" },
    svg("path", { class: "line s1", d: path || `M0,${H - 2} L${W},${H - 2}`, fill: "none" }),
  );
}

// metrics: GET …/metrics?range=hour; bytes(v): the page's byte formatter.
// → the children of the overview's "CPU and memory" line.
export function usageLine(metrics, bytes) {
  const points = metrics.points || [];
  if (!points.length) return [h("span", { class: "empty", text: "No samples yet (running instances are sampled every few seconds)." })];
  const pick = (key) => points.map((p) => (p[key] === null || p[key] === undefined ? null : p[key]));
  const last = (key) => [...pick(key)].reverse().find((v) => v !== null) ?? null;
  const cpu = pick("cpu_cores");
  const mem = pick("memory_bytes");
  const cpuNow = last("cpu_cores");
  const cpuOf = last("cpu_allocation_cores");
  const memNow = last("memory_bytes");
  const memOf = last("memory_limit_bytes");
  const unit = cpuOf === 1 ? "core" : "cores";
  const cpuText = `CPU ${cpuNow === null ? "–" : cpuNow.toFixed(2)}${cpuOf ? ` of ${cpuOf} ${unit}` : " cores"}`;
  const memText = `memory ${bytes(memNow)}${memOf ? ` of ${bytes(memOf)}` : ""}`;
  // Memory on its usage scale (a 512 MiB limit would flatten a few MiB to the axis).
  const memTop = Math.max(...mem.filter((v) => v !== null), 1) * 1.1;
  const cpuTop = Math.max(...cpu.filter((v) => v !== null), 0.01) * 1.1;
  return [
    h("span", { class: "usage", id: "overview-cpu" }, sparkline(cpu, cpuTop, `${cpuText}, last hour`), ` ${cpuText}`),
    h("span", { class: "usage", id: "overview-memory" }, sparkline(mem, memTop, `${memText}, last hour`), ` ${memText}`),
  ];
}
