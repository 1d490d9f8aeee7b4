// The training charts: two panels, loss and accuracy, training solid and validation dashed.
// Hand-written SVG with a title and a description that says the latest values.

import { $, num, pct } from "./common.js";

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

// A round step (1, 2 or 5 times a power of ten) that cuts ``span`` into about ``parts``.
function niceStep(span, parts) {
  const raw = span / parts;
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * power).find((step) => step >= raw);
}

function panel(x0, title, history, keys, epochs, yStep, format) {
  const group = svg("g", { class: "panel" });
  const [w, h, top, left] = [250, 170, 28, 44];
  const yMax = yStep * 4;
  const sx = (e) => x0 + left + (epochs <= 1 ? w / 2 : ((e - 1) / (epochs - 1)) * w);
  const sy = (v) => top + h - (Math.min(v, yMax) / yMax) * h;
  group.append(svg("text", { x: x0 + left, y: 16, class: "panel-title" }, title));
  for (let i = 0; i <= 4; i += 1) {
    const v = yStep * i;
    group.append(svg("line", { x1: x0 + left, x2: x0 + left + w, y1: sy(v), y2: sy(v),
                               class: i ? "gridline" : "axis" }),
                 svg("text", { x: x0 + left - 6, y: sy(v) + 4, class: "tick y" }, format(v)));
  }
  // Whole epochs only: a tick at epoch 1.5 names nothing that happened.
  const step = epochs <= 8 ? 1 : Math.max(1, Math.round(niceStep(epochs, 6)));
  const ticks = step >= 5 ? [1] : [];
  for (let e = step === 1 ? 1 : step; e <= epochs; e += step) ticks.push(e);
  for (const e of ticks) {
    group.append(svg("text", { x: sx(e), y: top + h + 16, class: "tick x" }, String(e)));
  }
  group.append(svg("text", { x: x0 + left + w / 2, y: top + h + 34, class: "tick x" },
                   "epoch"));
  keys.forEach((key, i) => {
    const points = history.filter((p) => typeof p[key] === "number");
    if (!points.length) return;
    const cls = i ? "series val" : "series train";
    group.append(svg("polyline", { class: cls, points: points.map(
      (p) => `${sx(p.epoch).toFixed(1)},${sy(p[key]).toFixed(1)}`).join(" ") }));
    for (const p of points) {
      group.append(svg("circle", { class: cls, cx: sx(p.epoch), cy: sy(p[key]), r: 3 }));
    }
  });
  return group;
}

// ``chart`` is an <svg> holding a <title> and a <desc>: the job's, or a version's details'.
export function drawChart(history, epochs, chart = $("chart")) {
  const [title, desc] = [chart.querySelector("title"), chart.querySelector("desc")];
  const total = Math.max(epochs, history.length ? history[history.length - 1].epoch : 0, 1);
  const losses = history.flatMap((p) => [p.loss, p.val_loss]).filter(Number.isFinite);
  const lossStep = niceStep(Math.max(0.5, ...losses), 4);
  chart.replaceChildren(title, desc,
    panel(0, "Loss", history, ["loss", "val_loss"], total, lossStep,
          (v) => String(Number(v.toPrecision(3)))),
    panel(320, "Accuracy", history, ["accuracy", "val_accuracy"], total, 0.25,
          (v) => `${Math.round(v * 100)}%`));
  if (!history.length) {
    desc.textContent = "No epoch finished yet.";
  } else {
    const last = history[history.length - 1];
    desc.textContent = `${history.length} epoch(s) of ${epochs} plotted. After epoch ` +
      `${last.epoch}: loss ${num(last.loss)}, accuracy ${pct(last.accuracy)}, validation ` +
      `loss ${num(last.val_loss)}, validation accuracy ${pct(last.val_accuracy)}.`;
  }
}

// A manifest's history (one list per metric) as the points the chart takes, epoch by epoch.
export function historyPoints(history) {
  const length = Math.max(0, ...Object.values(history || {}).map((values) => values.length));
  return Array.from({ length }, (_, i) => Object.fromEntries([["epoch", i + 1],
    ...Object.entries(history).map(([key, values]) => [key, values[i]])]));
}

// An empty chart for ``drawChart``, named for screen readers by ``title``.
export function newChart(title) {
  const chart = svg("svg", { viewBox: "0 0 640 240", role: "img", "aria-label": title });
  chart.append(svg("title", {}, title), svg("desc", {}, ""));
  return chart;
}
