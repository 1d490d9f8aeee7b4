// How a version's answers marked reliable did, beside all of its answers: on its own test
// split and on each other hospital's set it was scored on. Coverage (the share marked
// reliable) first, since figures on a few answers say little; then per class, where a
// class the version rarely marks reliable hides behind a good overall figure.

import { el, pct } from "./common.js";

const num = (x, text) => el("td", { className: "num", text: text ?? pct(x) });

// Each set with its figures: {name, subset} where subset is a ReliableSubset, or an
// external set's figures as the manifest carries them (no per-class breakdown).
function sets(manifest, reports) {
  const found = [];
  const test = manifest.reliability && manifest.reliability.test;
  if (test) found.push({ name: "Its test split", subset: test });
  for (const report of reports) {
    if (!report.reliability) continue;
    const day = String(report.evaluated_at || "").slice(0, 10);
    found.push({ name: `${report.dataset.name} (evaluated ${day})`, subset: report.reliability });
  }
  for (const [name, figures] of Object.entries(manifest.external_evaluations || {})) {
    if (typeof figures.reliable_share !== "number") continue;
    found.push({ name: `${name} (scored at training)`, subset: {
      images: figures.images, coverage: figures.reliable_share,
      balanced_accuracy: figures.reliable_balanced_accuracy,
      accuracy_all: figures.accuracy, balanced_accuracy_all: figures.balanced_accuracy } });
  }
  return found;
}

function overallTable(found) {
  const head = ["Set", "Images", "Marked reliable", "Accuracy, reliable", "Accuracy, all",
                "Balanced accuracy, reliable", "Balanced accuracy, all"];
  return el("table", { className: "compact reliable-overall" },
    el("caption", { text: "Marked reliable: the share of answers the version calls reliable; " +
                          "the figures on those answers alone stand beside those on all." }),
    el("thead", {}, el("tr", {}, ...head.map((text, i) => el("th", {
      scope: "col", className: i ? "num" : "", text })))),
    el("tbody", {}, ...found.map(({ name, subset: s }) => el("tr", {},
      el("th", { scope: "row", text: name }), num(null, String(s.images)), num(s.coverage),
      num(s.accuracy), num(s.accuracy_all), num(s.balanced_accuracy),
      num(s.balanced_accuracy_all)))));
}

function classTable(name, perClass) {
  const head = ["Class", "Images", "Marked reliable", "Recall, reliable", "Recall, all"];
  return el("table", { className: "compact reliable-classes" },
    el("caption", { text: `Per class on ${name}: recall on the answers marked reliable ` +
                          "and on all of them." }),
    el("thead", {}, el("tr", {}, ...head.map((text, i) => el("th", {
      scope: "col", className: i ? "num" : "", text })))),
    el("tbody", {}, ...Object.entries(perClass).map(([label, c]) => el("tr", {},
      el("th", { scope: "row", text: label }), num(null, String(c.images)),
      num(c.images ? c.reliable / c.images : null,
          c.images ? `${pct(c.reliable / c.images)} (${c.reliable})` : "n/a"),
      num(c.reliable_recall), num(c.recall)))));
}

// The section, or null when no set records which answers were reliable (older versions).
export function reliableSection(manifest, reports) {
  const found = sets(manifest, reports);
  if (!found.length) return null;
  const perClass = found.filter(({ subset }) => Object.keys(subset.per_class || {}).length)
    .map(({ name, subset }) => classTable(name, subset.per_class));
  return el("section", { className: "reliable" },
    el("h3", { text: "Answers marked reliable" }), overallTable(found), ...perClass);
}
