// A version's details, opened under its row: its live figures, its figures as a shadow when
// it was one, its training curves, how its answers marked reliable did, and its model card.

import { drawChart, historyPoints, newChart } from "./chart.js";
import { api, el, getJson } from "./common.js";
import { liveDetails } from "./live.js";
import { reliableSection } from "./reliable.js";
import { hasFigures, shadowPanel, shadowReport } from "./shadow.js";

const figureBoxes = new Map(); // version -> the live and shadow figures atop its details

// Above a version's curves: its live figures, and its shadow figures when it has some (the
// shadow's own are in the panel above the table).
export async function fillFigures(summary, list) {
  const box = figureBoxes.get(summary.version);
  if (!box) return;
  // A service without a prediction log says nothing of live figures or shadows.
  const parts = "live" in summary ? [liveDetails(summary.live, summary.version)] : [];
  if (summary.version !== list.shadow && "shadow" in list) {
    try {
      const report = await shadowReport(summary.version);
      if (hasFigures(report)) {
        parts.push(el("h3", { text: "Figures from its shadow" }), shadowPanel(report));
      }
    } catch (error) {
      // 404: never shadowed, nothing to show
      if (error.status !== 404) parts.push(el("p", { className: "small", text: error.message }));
    }
  }
  box.replaceChildren(...parts);
}

// Its curves drawn from the manifest's history, whole epochs on the axis; the server's
// picture where a manifest has no history.
async function curvesOf(version, manifest) {
  const title = `Loss and accuracy per epoch of version ${version}`;
  const history = historyPoints(manifest && manifest.history);
  const curves = el("figure", { className: "curves chart" });
  if (history.length) {
    const chart = newChart(title);
    drawChart(history, history.length, chart);
    curves.append(chart, el("figcaption", { className: "legend" },
      el("span", { className: "key-line train", text: "training" }),
      el("span", { className: "key-line val", text: "validation" })));
    return curves;
  }
  try {
    const blob = await (await api(`/models/${encodeURIComponent(version)}/curves.png`)).blob();
    curves.append(el("img", { src: URL.createObjectURL(blob), alt: title }),
                  el("figcaption", { text: "Training curves" }));
  } catch (error) {
    curves.append(el("p", { className: "small",
      text: error.status === 404 ? "No training curves were recorded for this version."
                                 : error.message }));
  }
  return curves;
}

// The manifest and the external evaluations; what cannot be read is left out, with a line.
async function readRecords(version) {
  const path = `/models/${encodeURIComponent(version)}`;
  const [manifest, reports] = await Promise.allSettled([getJson(path),
                                                        getJson(`${path}/evaluations`)]);
  const problems = [manifest, reports].filter((r) => r.status === "rejected")
    .map((r) => el("p", { className: "small", text: r.reason.message }));
  return { manifest: manifest.value || null, reports: reports.value || [], problems };
}

async function cardOf(version) {
  const cardUrl = `/models/${encodeURIComponent(version)}/card`;
  const card = el("div", { className: "model-card" });
  try {
    await api(cardUrl);
    card.append(el("p", {}, el("a", { href: cardUrl, target: "_blank", rel: "noopener" },
                               "Open the model card in a new tab")),
                el("iframe", { src: cardUrl, title: `Model card of version ${version}`,
                               loading: "lazy" }));
  } catch (error) {
    card.append(el("p", { className: "small",
      text: error.status === 404 ? "No model card was written for this version."
                                 : error.message }));
  }
  return card;
}

// Opened once and kept across redraws of the table (fillFigures redraws its figures).
export async function openDetails(summary, list, box) {
  const version = summary.version;
  box.replaceChildren(el("p", { className: "small", text: "Loading…" }));
  const figures = el("div", { className: "figures" });
  figureBoxes.set(version, figures);
  fillFigures(summary, list);
  const { manifest, reports, problems } = await readRecords(version);
  const reliable = manifest ? reliableSection(manifest, reports) : null;
  box.replaceChildren(figures, await curvesOf(version, manifest),
                      ...[reliable, ...problems].filter(Boolean), await cardOf(version));
}
