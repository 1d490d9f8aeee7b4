// Models: every published version, its metrics, curves and card; activate one.

import { $, api, el, getJson, pct, say, sayError, sentence } from "./common.js";

const modelsStatus = $("models-status");
const expanded = new Set();
const boxes = new Map();
let reloadChecks = 0;
let reloadTimer = null;

function metric(summary, name) {
  const test = summary.metrics && summary.metrics.test;
  const value = test && typeof test === "object" ? test[name] : summary.metrics[name];
  return el("td", { className: "num", text: typeof value === "number" ? pct(value) : "n/a" });
}

// A version whose test balanced accuracy interval reaches down to chance (1 / classes).
function chanceLevel(summary) {
  if (summary.better_than_chance === false) return true;
  const test = summary.metrics && summary.metrics.test;
  const ci = test && test.balanced_accuracy_ci;
  return Array.isArray(ci) && ci[0] <= 1 / summary.classes.length;
}

function balancedCell(summary) {
  const cell = metric(summary, "balanced_accuracy");
  const test = summary.metrics && summary.metrics.test;
  const ci = test && test.balanced_accuracy_ci;
  if (Array.isArray(ci)) {
    cell.append(el("span", { className: "small block",
      text: `95% CI ${pct(ci[0])}–${pct(ci[1])}; chance ${pct(1 / summary.classes.length)}` }));
  }
  if (test && typeof test.images === "number") {
    cell.append(el("span", { className: "small block", text: `${test.images} test images` }));
  }
  return cell;
}

function statusCell(summary, list) {
  const cell = el("td");
  if (summary.version === list.active) {
    cell.append(el("span", { className: "badge active" },
      el("span", { "aria-hidden": "true", text: "★ " }), "Active"));
  } else if (summary.promotion && summary.promotion.activated === false) {
    cell.append(el("span", { className: "badge", text: "Candidate" }));
  }
  if (chanceLevel(summary)) {
    cell.append(el("span", { className: "badge warn", text: "No better than chance" }));
  }
  if (summary.version === list.serving.version) {
    cell.append(el("span", { className: "small block", text: "served by this process" }));
  }
  if (summary.promotion && summary.promotion.reason && summary.version !== list.active) {
    cell.append(el("span", { className: "small block", text: sentence(summary.promotion.reason) }));
  }
  return cell;
}

async function openDetails(version, box) {
  box.replaceChildren(el("p", { className: "small", text: "Loading…" }));
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
  box.replaceChildren(curves, card);
}

function versionRows(summary, list, index) {
  const v = summary.version;
  const detailsId = `model-details-${index}`;
  const toggle = el("button", { type: "button", "aria-expanded": String(expanded.has(v)),
                                "aria-controls": detailsId, text: "Details" });
  const isActive = v === list.active;
  // The active version has no button: its badge says so.
  const activate = isActive ? null : el("button", {
    type: "button", className: "primary", "aria-label": `Activate version ${v}`,
    text: "Activate" });
  if (activate) activate.addEventListener("click", () => activateVersion(v));
  const created = new Date(summary.created_at);
  const row = el("tr", { className: isActive ? "active" : "", "data-version": v },
    el("th", { scope: "row" }, el("code", { className: "nowrap", text: v })),
    el("td", {}, el("time", { datetime: summary.created_at, text: created.toLocaleString(
      undefined, { dateStyle: "medium", timeStyle: "short" }) })),
    el("td", { text: summary.dataset }),
    el("td", {}, el("span", { className: "nowrap", text: `${summary.image_size} px` }),
       el("span", { className: "small block", text: summary.classes.join(", ") })),
    metric(summary, "accuracy"), balancedCell(summary),
    metric(summary, "macro_f1"),
    statusCell(summary, list),
    el("td", { className: "actions" }, toggle, activate));
  // A version's details are fetched once and kept across redraws of the table.
  if (!boxes.has(v)) boxes.set(v, el("div", { className: "details-box" }));
  const box = boxes.get(v);
  const details = el("tr", { id: detailsId, className: "details", hidden: !expanded.has(v) },
                     el("td", { colspan: "9" }, box));
  toggle.addEventListener("click", () => {
    const open = toggle.getAttribute("aria-expanded") !== "true";
    toggle.setAttribute("aria-expanded", String(open));
    details.hidden = !open;
    if (open) {
      expanded.add(v);
      if (!box.childElementCount) openDetails(v, box);
    } else {
      expanded.delete(v);
    }
  });
  if (expanded.has(v) && !box.childElementCount) openDetails(v, box);
  return [row, details];
}

let rendered = "";

// The active version is loaded in the background: look again until it is served.
function scheduleReloadCheck(list) {
  const serving = list.serving || {};
  clearTimeout(reloadTimer);
  if (list.active && serving.version !== list.active && !serving.load_error &&
      reloadChecks < 30) {
    reloadChecks += 1;
    reloadTimer = setTimeout(() => loadModels(true), 1000);
  } else {
    reloadChecks = 0;
  }
}

function renderModels(list) {
  scheduleReloadCheck(list);
  // Unchanged lists are not redrawn: that would reload every open model card.
  const key = JSON.stringify(list);
  if (key === rendered) return;
  rendered = key;
  const body = $("models-body");
  const restore = focusedButton(body);
  body.replaceChildren();
  if (!list.versions.length) {
    body.append(el("tr", {}, el("td", { colspan: "9",
      text: "No version published yet: train one below." })));
  }
  list.versions.forEach((summary, index) => body.append(...versionRows(summary, list, index)));
  const serving = list.serving || {};
  const parts = [serving.version ? `This API process serves version ${serving.version}.`
                                 : "This API process serves no version yet."];
  if (serving.load_error) parts.push(`The active version failed to load: ${serving.load_error}`);
  $("serving").textContent = parts.join(" ");
  restore();
}

// A redraw replaces the buttons: keyboard focus goes back to the same button of the same
// version, or to its row's first one (Activate is gone once the version is active).
function focusedButton(body) {
  const focused = document.activeElement;
  const row = focused && body.contains(focused) && focused.closest("tr[data-version]");
  if (!row) return () => {};
  const [version, label] = [row.dataset.version, focused.textContent];
  return () => {
    const again = body.querySelector(`tr[data-version="${CSS.escape(version)}"]`);
    if (!again) return;
    const buttons = [...again.querySelectorAll("button")];
    (buttons.find((b) => b.textContent === label) || buttons[0]).focus();
  };
}

export async function loadModels(quiet = false) {
  if (!quiet) say(modelsStatus, "Loading the versions…", "busy");
  try {
    const list = await getJson("/models");
    renderModels(list);
    if (!quiet) say(modelsStatus, `${list.versions.length} version(s); active: ` +
                    `${list.active || "none"}.`);
    return list;
  } catch (error) {
    sayError(modelsStatus, error);
    return null;
  }
}

async function activateVersion(version) {
  say(modelsStatus, `Activating version ${version}…`, "busy");
  try {
    const list = await getJson(`/models/${encodeURIComponent(version)}/activate`,
                               { method: "POST" });
    renderModels(list);
    say(modelsStatus, `Version ${version} is now the active version; new predictions use ` +
        "it once it is loaded.", "ok");
  } catch (error) {
    sayError(modelsStatus, error);
  }
}

export function initModels() {
  $("models-refresh").addEventListener("click", () => loadModels());
  loadModels();
}
