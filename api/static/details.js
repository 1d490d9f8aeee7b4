// A version's details, opened under its row: its live figures, its figures as a shadow when
// it was one, its training curves and its model card.

import { api, el } from "./common.js";
import { liveDetails } from "./live.js";
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

// Opened once and kept across redraws of the table (fillFigures redraws its figures).
export async function openDetails(summary, list, box) {
  const version = summary.version;
  box.replaceChildren(el("p", { className: "small", text: "Loading…" }));
  const figures = el("div", { className: "figures" });
  figureBoxes.set(version, figures);
  fillFigures(summary, list);
  const curves = el("figure", { className: "curves" });
  try {
    const blob = await (await api(`/models/${encodeURIComponent(version)}/curves.png`)).blob();
    curves.append(el("img", { src: URL.createObjectURL(blob),
                              alt: `Loss and accuracy per epoch of version ${version}` }),
                  el("figcaption", { text: "Training curves" }));
  } catch (error) {
    curves.append(el("p", { className: "small",
      text: error.status === 404 ? "No training curves were recorded for this version."
                                 : error.message }));
  }
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
  box.replaceChildren(figures, curves, card);
}
