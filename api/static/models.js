// Models: every published version, its metrics, live figures, curves and card; activate one,
// or shadow one on live traffic first.

import { activateVersion } from "./activate.js";
import { $, api, el, getJson, pct, say, sayError } from "./common.js";
import { fillFigures, openDetails } from "./details.js";
import { liveLine } from "./live.js";
import { showNoModel } from "./no_model.js";
import { showShadow } from "./shadow.js";

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

// A version id or a dataset name may break after its hyphens, dots and underscores (a
// date, a time, a hash): the narrowest column in which each part still reads whole.
const breakable = (v) => v.split(/(?<=[-_.])/)
  .flatMap((part, i) => (i ? [el("wbr"), part] : [part]));

// The balanced accuracy with what reading it needs: its 95% interval against chance, and
// how many test images it rests on.
function balancedCell(summary) {
  const cell = metric(summary, "balanced_accuracy");
  const ci = summary.balanced_accuracy_ci;
  if (Array.isArray(ci)) {
    const reaches = summary.better_than_chance === false;
    // The bounds stay together; the words around them wrap, to keep the table in its column.
    const className = `small block interval${reaches ? " includes-chance" : ""}`;
    cell.append(el("span", { className },
      "95% interval ", el("span", { className: "nowrap", text: `${pct(ci[0])}–${pct(ci[1])}` }),
      reaches ? ", includes chance" : null));
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

// The version's state now, its warnings, its live figures, and what the gate said at
// publication.
function statusCell(summary, list) {
  const cell = el("td", {}, summary.version === list.active
    ? el("span", { className: "badge active" },
         el("span", { "aria-hidden": "true", text: "★ " }), "Active")
    : el("span", { className: "state", text: "Not active" }));
  if (summary.version === list.shadow) {
    cell.append(" ", el("span", { className: "badge shadow", text: "Shadow" }));
  }
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
  const live = liveLine(summary.live);
  if (live) cell.append(live);
  return cell;
}

// Each non-active version can shadow the active one on live traffic, one at a time.
function shadowButton(v, list) {
  const on = v === list.shadow;
  const button = el("button", { type: "button",
    "aria-label": on ? `End the shadow of version ${v}` : `Shadow version ${v} on live traffic`,
    text: on ? "End shadow" : "Shadow on live traffic" });
  button.addEventListener("click", () => setShadow(v, !on));
  return button;
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
  if (activate) {
    activate.addEventListener("click", () => activateVersion(v, latest, modelsStatus,
                                                            renderModels));
  }
  // A service without shadows says nothing of them in its list.
  const shadow = isActive || !("shadow" in list) ? null : shadowButton(v, list);
  const created = new Date(summary.created_at);
  const className = isActive ? "active" : v === list.shadow ? "shadow" : "";
  const row = el("tr", { className, "data-version": v },
    el("th", { scope: "row" }, el("code", {}, ...breakable(v))),
    el("td", {}, el("time", { datetime: summary.created_at, text: created.toLocaleString(
      undefined, { dateStyle: "medium", timeStyle: "short" }) })),
    el("td", { className: "dataset" }, ...breakable(summary.dataset)),
    el("td", {}, el("span", { className: "nowrap", text: `${summary.image_size} px` }),
       el("span", { className: "small block", text: summary.classes.join(", ") })),
    metric(summary, "accuracy"), balancedCell(summary),
    metric(summary, "macro_f1"),
    statusCell(summary, list),
    el("td", { className: "actions" }, el("div", {}, toggle, activate, shadow)));
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
      if (!box.childElementCount) openDetails(summary, list, box);
    } else {
      expanded.delete(v);
    }
  });
  if (expanded.has(v) && !box.childElementCount) openDetails(summary, list, box);
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
  showShadow(list);
  showNoModel(list);
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
  list.versions.filter((summary) => expanded.has(summary.version))
    .forEach((summary) => fillFigures(summary, list));
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

// One shadow at a time: starting one replaces the one before, and the line says so.
async function setShadow(version, on) {
  const before = latest && latest.shadow !== version ? latest.shadow : null;
  say(modelsStatus, on ? `Starting the shadow of version ${version}…`
                       : `Ending the shadow of version ${version}…`, "busy");
  try {
    await api(`/models/${encodeURIComponent(version)}/shadow`,
              { method: on ? "POST" : "DELETE" });
    await loadModels(true);
    say(modelsStatus, on
      ? `Version ${version} now shadows the active version: it scores every answered ` +
        "image after the answer is sent, and changes no answer." +
        (before ? ` Version ${before} no longer does.` : "")
      : `Version ${version} no longer shadows the active version.`, "ok");
  } catch (error) {
    sayError(modelsStatus, error);
  }
}

export function initModels() {
  $("models-refresh").addEventListener("click", () => loadModels());
  loadModels();
}
