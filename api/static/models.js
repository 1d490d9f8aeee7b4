// Models: every published version, its metrics, curves and card; activate one.

import { $, api, el, getJson, pct, say, sayError } from "./common.js";

const modelsStatus = $("models-status");
const expanded = new Set();
const boxes = new Map();
let reloadChecks = 0;
let reloadTimer = null;
let latest = null; // the last list fetched: predictions read their version's record from it

function metric(summary, name) {
  const test = summary.metrics && summary.metrics.test;
  const value = test && typeof test === "object" ? test[name] : summary.metrics[name];
  return el("td", { className: "num", text: typeof value === "number" ? pct(value) : "n/a" });
}

// The balanced accuracy with what reading it needs: its 95% interval against chance, and
// how many test images it rests on.
function balancedCell(summary) {
  const cell = metric(summary, "balanced_accuracy");
  const ci = summary.balanced_accuracy_ci;
  if (Array.isArray(ci)) {
    const reaches = summary.better_than_chance === false;
    cell.append(el("span", { className: reaches ? "small block includes-chance" : "small block",
      text: `95% interval ${pct(ci[0])}–${pct(ci[1])}${reaches ? ", includes chance" : ""}` }));
  }
  cell.append(el("span", { className: "small block", text: `chance ${pct(summary.chance)}` }),
    el("span", { className: "small block test-size",
      text: typeof summary.test_images === "number" ? `${summary.test_images} test images`
                                                    : "test images not recorded" }));
  return cell;
}

// Why a version's probabilities are not calibrated, or null when nothing says so.
export function calibrationWarning(summary) {
  const calibration = summary && summary.calibration;
  if (!calibration || !calibration.at_bound) return null;
  return `Temperature ${calibration.temperature.toFixed(2)} at the ${calibration.at_bound} ` +
    "bound of its fit: this version's probabilities are not calibrated.";
}

// What the gate decided when the version was published: a past event, labelled as such.
function publication(promotion) {
  return el("span", { className: "small block publication" },
    el("span", { className: "label", text: "At publication: " }),
    `${promotion.activated ? "activated" : "not activated"} (${promotion.reason}).`);
}

// The version's state now, its warnings, and what the gate said at publication.
function statusCell(summary, list) {
  const cell = el("td", {}, summary.version === list.active
    ? el("span", { className: "badge active" },
         el("span", { "aria-hidden": "true", text: "★ " }), "Active")
    : el("span", { className: "state", text: "Not active" }));
  if (summary.better_than_chance === false) {
    cell.append(el("span", { className: "badge warn", text: "No better than chance" }));
  }
  const uncalibrated = calibrationWarning(summary);
  if (uncalibrated) {
    cell.append(el("span", { className: "badge warn", text: "Not calibrated" }),
                el("span", { className: "small block calibration", text: uncalibrated }));
  }
  if (summary.version === list.serving.version) {
    cell.append(el("span", { className: "small block", text: "served by this process" }));
  }
  if (summary.promotion) cell.append(publication(summary.promotion));
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
  latest = list;
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
  renderSummary(list);
  fillBaseVersions(list);
  restore();
}

// The retrain form's "Start from": a new training, the active version, or any version.
function fillBaseVersions(list) {
  const choice = $("retrain-base-version");
  const keep = choice.value;
  choice.replaceChildren(
    el("option", { value: "", text: "the base weights (a new training)" }),
    el("option", { value: "active", text: "the active version (fine-tune it on this dataset)" }),
    ...list.versions.map((summary) => el("option", { value: summary.version,
      text: `version ${summary.version} (fine-tune it)` })));
  choice.value = [...choice.options].some((o) => o.value === keep) ? keep : "";
}

// The lines above the table, redrawn with it.
function renderSummary(list) {
  const count = list.versions.length;
  $("models-summary").textContent = `${count} version${count === 1 ? "" : "s"} published; ` +
    `active: ${list.active || "none"}.`;
  const serving = list.serving || {};
  const parts = [serving.version ? `This API process serves version ${serving.version}.`
                                 : "This API process serves no version yet."];
  if (serving.load_error) parts.push(`The active version failed to load: ${serving.load_error}`);
  $("serving").textContent = parts.join(" ");
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
    if (!quiet) say(modelsStatus, "List loaded.", "ok");
    return list;
  } catch (error) {
    sayError(modelsStatus, error);
    return null;
  }
}

// A version's summary, from the last list or, for a version newer than it, a fresh one.
export async function versionSummary(version) {
  const known = (list) => list && list.versions.find((summary) => summary.version === version);
  return known(latest) || known(await loadModels(true));
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
