// A version's live figures: how often its answers in service were right, on the answers the
// reading room labelled, with counts and 95% intervals.

import { el } from "./common.js";

// Whole percentages: a few dozen labels do not support a decimal.
export const whole = (x) => (typeof x === "number" ? `${Math.round(x * 100)}%` : "n/a");

// "74–88%", or null while the proportion has no interval (nothing counted yet).
export function interval(p) {
  if (!p || typeof p.low !== "number" || typeof p.high !== "number") return null;
  return `${Math.round(p.low * 100)}–${Math.round(p.high * 100)}%`;
}

// "82% of 120 (95% interval 74–88%)"
export function proportion(p) {
  if (!p || !p.total) return "none counted yet";
  const ci = interval(p);
  return `${whole(p.value)} of ${p.total}${ci ? ` (95% interval ${ci})` : ""}`;
}

// The row's line: right on how many labelled answers, and how its reliable ones fared.
// Null for a service that keeps no prediction log.
export function liveLine(live) {
  if (!live) return null;
  const line = el("span", { className: "small block live" },
                  el("span", { className: "label", text: "Live: " }));
  const accuracy = live.accuracy;
  if (!live.labelled || !accuracy || !accuracy.total) {
    line.append(`No labelled answers yet (${live.answers} answered).`);
    return line;
  }
  const ci = interval(accuracy);
  const reliable = live.reliable_right;
  line.append(`${whole(accuracy.value)} right on ${accuracy.total} labelled answers` +
    (ci ? ` (95% interval ${ci})` : "") +
    (reliable && reliable.total
      ? `; reliable answers right ${whole(reliable.value)} of ${reliable.total}.`
      : "; none of them was marked reliable."));
  return line;
}

// The details: recall per confirmed class, and how often it marked its answers reliable.
export function liveDetails(live, version) {
  const box = el("div", { className: "live-details" },
                 el("h3", { text: "Live figures on labelled answers" }));
  if (!live) {
    box.append(el("p", { className: "small", text: "No answers of this version logged yet." }));
    return box;
  }
  if (!live.labelled) {
    box.append(el("p", { className: "small", text: `No labelled answers yet: ${live.answers} ` +
      "answered. Record the reading room's label after a prediction to see how often it " +
      "was right." }));
    return box;
  }
  box.append(el("p", { className: "small", text: `${live.labelled} of its ${live.answers} ` +
    `answers labelled; right ${proportion(live.accuracy)}; marked reliable ` +
    `${proportion(live.reliable_rate)}, and right ${proportion(live.reliable_right)} of ` +
    "those." }));
  const rows = Object.entries(live.per_class || {}).map(([name, p]) => el("tr", {},
    el("th", { scope: "row", text: name }),
    el("td", { className: "num", text: whole(p.value) }),
    el("td", { className: "num", text: String(p.total) }),
    el("td", { text: interval(p) || "n/a" })));
  if (rows.length) {
    box.append(el("table", { className: "compact" },
      el("caption", { text: `Recall of version ${version} per confirmed class: of the ` +
                            "images the reading room put in a class, the share it called so." }),
      el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "Confirmed class" }),
        el("th", { scope: "col", className: "num", text: "Recall" }),
        el("th", { scope: "col", className: "num", text: "Labelled" }),
        el("th", { scope: "col", text: "95% interval" }))),
      el("tbody", {}, ...rows)));
  }
  return box;
}
