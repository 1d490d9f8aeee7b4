// A shadow version against the active one on the same live images: how it kept up, how often
// the two agree, and on labelled images which was right more often. Also the confirmation
// that activating the shadow asks for.

import { $, el, getJson, pct } from "./common.js";
import { ask } from "./dialog.js";
import { proportion } from "./live.js";

export const shadowReport = (version) =>
  getJson(`/models/${encodeURIComponent(version)}/shadow`);

// Whether a report holds anything to show: a version shadowed now, or one that was.
export const hasFigures = (report) =>
  Boolean(report && (report.current || report.images || report.seen));

// Percentage points, signed with a true minus sign: "+3.1", "−1.2".
function points(x) {
  const value = (x * 100).toFixed(1);
  if (Number(value) === 0) return "0.0";
  return x > 0 ? `+${value}` : `−${value.slice(1)}`;
}

// The paired difference on labelled images, in the words the decision needs.
export function pairedLine(report) {
  const paired = report.paired;
  if (!report.labelled || !paired || !paired.images) {
    return "No labelled images yet: label answers to compare accuracy.";
  }
  if (typeof paired.difference !== "number") {
    return `Shadow minus active: no difference can be computed on ${paired.images} labelled ` +
      "images.";
  }
  const bounds = paired.difference_ci;
  const ci = Array.isArray(bounds)
    ? ` (95% interval ${points(bounds[0])} to ${points(bounds[1])})` : "";
  return `Shadow minus active: ${points(paired.difference)} points${ci} on ${paired.images} ` +
    "labelled images.";
}

export function agreementLine(report) {
  if (!report.images) return "No image answered by both versions yet.";
  return `Agrees with the active version on ${pct(report.agreement)} of ${report.images} ` +
    "images.";
}

function keptUp(report) {
  const line = el("p", { className: "small" }, `Images seen ${report.seen}, dropped ` +
    `${report.dropped} (its queue was full), failed ${report.failed}.`);
  if (report.last_error) line.append(` Last failure: ${report.last_error}`);
  return line;
}

let matrices = 0; // ids for the matrices' titles: a panel may show twice

// Its title is a paragraph, not a caption: a caption is as narrow as this small table.
function matrixTable(report) {
  const rows = Object.keys(report.matrix || {});
  const columns = [...new Set(rows.flatMap((a) => Object.keys(report.matrix[a])))];
  if (!rows.length) return null;
  const id = `shadow-matrix-${++matrices}`;
  return el("div", {}, el("p", { id, className: "small", text: "Images by the active " +
      "version's label (rows) and the shadow's (columns); the diagonal is where they agree." }),
    el("table", { className: "compact matrix", "aria-labelledby": id },
    el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "Active \\ shadow" }),
      ...columns.map((c) => el("th", { scope: "col", className: "num", text: c })))),
    el("tbody", {}, ...rows.map((a) => el("tr", {}, el("th", { scope: "row", text: a }),
      ...columns.map((s) => el("td", { className: a === s ? "num agree" : "num",
                                       text: String(report.matrix[a][s] || 0) })))))));
}

function sideRow(name, side) {
  const labels = Object.entries(side.labels || {}).map(([c, n]) => `${c} ${n}`).join(", ");
  const accuracy = side.accuracy && side.accuracy.total ? proportion(side.accuracy)
                                                        : "no labelled images";
  return el("tr", {},
    el("th", { scope: "row" }, name, el("span", { className: "small block",
      text: (side.versions || []).join(", ") })),
    el("td", { text: labels || "none" }),
    el("td", { className: "num", text: pct(side.reliable_rate) }),
    el("td", { className: "num", text: pct(side.shifted_rate) }),
    el("td", { text: accuracy }));
}

function sidesTable(report) {
  if (!report.active || !report.shadow) return null;
  return el("table", { className: "compact" },
    el("caption", { text: "Each version on the same images: its answers per class, how " +
                          "often it marked them reliable and the image shifted, and how often " +
                          "it was right on the labelled ones." }),
    el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "Side" }),
      el("th", { scope: "col", text: "Answers per class" }),
      el("th", { scope: "col", className: "num", text: "Reliable" }),
      el("th", { scope: "col", className: "num", text: "Shifted" }),
      el("th", { scope: "col", text: "Right on labelled images" }))),
    el("tbody", {}, sideRow("Active", report.active), sideRow("Shadow", report.shadow)));
}

function balanced(report) {
  const paired = report.paired;
  if (!paired || typeof paired.first_balanced_accuracy !== "number") return null;
  const p = typeof paired.mcnemar_p === "number"
    ? `; McNemar p = ${paired.mcnemar_p.toFixed(3)}` : "";
  return el("span", { className: "small block", text: "The points are of balanced accuracy: " +
    `shadow ${pct(paired.first_balanced_accuracy)}, active ` +
    `${pct(paired.second_balanced_accuracy)}${p}.` });
}

// The panel of a shadow report, for the shadow now or, in its details, one that was.
export function shadowPanel(report) {
  const panel = el("div", { className: "shadow-figures", "data-version": report.version });
  panel.append(el("p", { className: "small", text: report.current
    ? "Scores every image the active version answers, after the answer is sent; it changes " +
      "no answer."
    : "Shadowed earlier: its figures from the prediction log." }));
  if (report.load_error) {
    panel.append(el("p", { className: "shift flagged load-error" },
      el("strong", { text: "The shadow is not scoring: " }), report.load_error));
  } else if (report.current && !report.loaded) {
    panel.append(el("p", { className: "small", text: "Not loaded in this API process yet." }));
  }
  panel.append(keptUp(report), el("p", { className: "agreement", text: agreementLine(report) }),
    ...[matrixTable(report), sidesTable(report)].filter(Boolean),
    el("p", { className: "paired" }, pairedLine(report), balanced(report)));
  return panel;
}

// The panel above the table: the shadow now, read afresh with every list.
let shadowRun = 0;
let shownReport = "";

export async function showShadow(list) {
  const panel = $("shadow-panel");
  const run = ++shadowRun;
  if (!list.shadow) {
    panel.hidden = true;
    shownReport = "";
    return;
  }
  let content;
  try {
    const report = await shadowReport(list.shadow);
    if (run !== shadowRun) return;
    const key = JSON.stringify(report);
    if (key === shownReport && !panel.hidden) return;
    shownReport = key;
    content = shadowPanel(report);
  } catch (error) {
    if (run !== shadowRun) return;
    shownReport = "";
    content = el("p", { className: "status error", text: `The shadow's figures could not ` +
                                                         `be read: ${error.message}` });
  }
  $("shadow-title").textContent = `Shadow: version ${list.shadow}`;
  $("shadow-body").replaceChildren(content);
  panel.hidden = false;
}

// Activating the shadow makes it answer everything: ask, with its figures, first.
// Resolves true when the user accepts.
export function confirmActivation(version, report, error) {
  const figures = report
    ? [el("p", { text: agreementLine(report) }), el("p", { text: pairedLine(report) })]
    : [el("p", { className: "status error", text: `Its shadow figures could not be read: ` +
                                                  `${error ? error.message : "unknown error"}` })];
  return ask({
    title: `Activate version ${version}, the shadow?`,
    body: [...figures, el("p", { text: `Activating it makes version ${version} answer every ` +
                                       "prediction, and ends the shadow." })],
    accept: `Activate version ${version}`,
  });
}
