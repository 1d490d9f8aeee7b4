// Predict: choose or drop an X-ray, see each class's probability and the heat map; choose
// or drop several, see a table with a row for each.

import { gridWords, labelOf, reasonsOf, renderBars, renderLabel, renderShift } from "./answer.js";
import { $, ApiError, api, el, pct, say, sayError, sentence } from "./common.js";
import { offerLabel } from "./labelling.js";
import { calibrationWarning, loadModels, versionSummary } from "./models.js";
import { sayNoModel } from "./no_model.js";

const predictStatus = $("predict-status");
const preview = $("preview");
const previewNote = $("preview-note");
const heatToggle = $("heatmap-toggle");
const heatView = $("heatmap-view");
let chosen = null; // the File to predict
let several = []; // the Files to predict in one request, when more than one is chosen
let objectUrl = null;
let explanation = null;
let predictRun = 0; // answers to older requests are dropped
// The prediction log records where each image came from.
const FROM_PAGE = { "X-CXR-Source": "page" };
const HEAT_HELP = $("heatmap-help").textContent;

preview.addEventListener("error", () => {
  if (preview.hidden || !preview.getAttribute("src")) return;
  showNote("This browser cannot show the chosen file; the service may still read it.");
});

async function isDicom(file) {
  if (/\.(dcm|dicom)$/i.test(file.name) || file.type === "application/dicom") return true;
  const head = new Uint8Array(await file.slice(128, 132).arrayBuffer());
  return String.fromCharCode(...head) === "DICM";
}

function showImage(src, alt, caption) {
  preview.src = src;
  preview.alt = alt;
  preview.hidden = false;
  previewNote.hidden = true;
  $("preview-caption").textContent = caption;
}

function showNote(text) {
  preview.hidden = true;
  preview.removeAttribute("src");
  previewNote.hidden = false;
  previewNote.textContent = text;
  $("preview-caption").textContent = "";
}

async function choose(files) {
  if (!files || !files.length) return;
  if (files.length > 1) {
    await chooseSeveral(Array.from(files));
    return;
  }
  const file = files[0];
  several = [];
  $("batch").hidden = true;
  $("predict-result").hidden = false;
  chosen = file;
  explanation = null;
  heatToggle.checked = false;
  heatToggle.disabled = true;
  heatView.hidden = true;
  $("heatmap-help").textContent = HEAT_HELP;
  $("answer").hidden = true; // the last answer was about another image
  if (objectUrl) URL.revokeObjectURL(objectUrl);
  objectUrl = null;
  if (await isDicom(file)) {
    showNote("Browsers cannot show DICOM images: the preview appears after the " +
             "prediction, as the model saw it.");
  } else {
    objectUrl = URL.createObjectURL(file);
    showImage(objectUrl, `The chosen image, ${file.name}`, file.name);
  }
  await predict();
}

// The X-ray as the model saw it, and beside it the heat map over it with its colour scale.
function showExplanation() {
  showImage(`data:image/png;base64,${explanation.image_png}`,
            "The X-ray as the model saw it, in gray", "The X-ray as the model saw it");
  const heatmap = $("heatmap");
  heatmap.src = `data:image/png;base64,${explanation.overlay_png}`;
  heatmap.alt = `Heat map of the regions that drove the class ${explanation.class_name}, ` +
                "over the X-ray as the model saw it";
  const words = gridWords(explanation);
  $("heatmap-caption").textContent = words.caption;
  $("heatmap-grid").textContent = words.note;
  heatView.hidden = !heatToggle.checked;
}

function toggleHeatMap() {
  heatView.hidden = !(explanation && heatToggle.checked);
}

async function predict() {
  if (several.length) {
    await predictSeveral();
    return;
  }
  if (!chosen) {
    say(predictStatus, "Choose an image first.", "error");
    return;
  }
  const run = ++predictRun;
  const form = new FormData();
  form.append("file", chosen, chosen.name);
  say(predictStatus, `Predicting ${chosen.name}…`, "busy");
  $("predict-result").setAttribute("aria-busy", "true");
  try {
    const response = await api("/predict?explain=true", { method: "POST", body: form,
                                                          headers: FROM_PAGE });
    const answer = await response.json();
    const version = answer.model_version || response.headers.get("X-Model-Version");
    const summary = await versionSummary(version);
    if (run !== predictRun) return;
    renderPrediction(answer, version, summary);
  } catch (error) {
    if (run === predictRun) await sayPredictError(error);
  } finally {
    if (run === predictRun) requestDone();
  }
}

// With no version served, the page's own words and its Train section, not the API's routes.
async function sayPredictError(error) {
  if (error.code === "no_model") sayNoModel(predictStatus, await loadModels(true));
  else sayError(predictStatus, error);
}

// A request answered or failed: the button now offers to ask again.
function requestDone() {
  $("predict-result").removeAttribute("aria-busy");
  $("batch").removeAttribute("aria-busy");
  $("predict-button").textContent = "Predict again";
}

function renderPrediction(answer, version, summary) {
  $("answer").hidden = false;
  renderLabel(answer);
  // Only a finding's class stands out among the bars.
  renderBars(answer.probabilities, answer.reliable === false ? null : answer.label);
  const uncalibrated = calibrationWarning(summary);
  $("calibration-note").hidden = !uncalibrated;
  $("calibration-note").textContent = uncalibrated || "";
  renderShift(answer.distribution_shift, answer.reliable !== false);
  $("answer-version").textContent = version;
  offerLabel(answer, summary ? summary.classes : Object.keys(answer.probabilities));
  explanation = answer.explanation && answer.explanation.image_png ? answer.explanation : null;
  heatToggle.disabled = !explanation;
  if (explanation) {
    $("heatmap-help").textContent = `Where the model looked for ${explanation.class_name} ` +
      `(Grad-CAM on ${explanation.layer}).`;
    showExplanation();
  } else {
    heatToggle.checked = false;
    $("heatmap-help").textContent = "This server returned no heat map for this prediction.";
    if (!objectUrl) showNote("Browsers cannot show DICOM images, and this server returned " +
                             "no preview of it.");
  }
  if (answer.reliable === false) {
    say(predictStatus, `No reliable answer from model version ${version} ` +
        `(${(answer.reasons || []).join(", ")}).`, "warn");
  } else {
    say(predictStatus, `${answer.label}, ${pct(answer.probabilities[answer.label])}, from ` +
        `model version ${version}.`, "ok");
  }
}

// ---- several images: one request without heat maps, a table of their answers -----------

async function chooseSeveral(files) {
  several = files;
  chosen = null;
  $("predict-result").hidden = true; // the preview and heat map are for one image
  $("batch-body").replaceChildren();
  $("batch").hidden = true;
  await predictSeveral();
}

async function predictSeveral() {
  const run = ++predictRun;
  const form = new FormData();
  for (const file of several) form.append("file", file, file.name);
  say(predictStatus, `Predicting ${several.length} images…`, "busy");
  $("batch").setAttribute("aria-busy", "true");
  try {
    const response = await api("/predict", { method: "POST", body: form,
                                             headers: FROM_PAGE });
    const answer = await response.json();
    if (run !== predictRun) return;
    if (!Array.isArray(answer.images)) {
      throw new ApiError(0, null, "This service answers one image per request: " +
                         "choose one file.");
    }
    renderSeveral(answer);
  } catch (error) {
    if (run !== predictRun) return;
    if (error.code === "no_model") {
      await sayPredictError(error);
      return;
    }
    // common.js words every 413 as one file too large; this one is a count.
    sayError(predictStatus, error.code === "too_many_images"
      ? new ApiError(413, error.code, `${several.length} files are more than this service ` +
                     "takes in one request: choose fewer.")
      : error);
  } finally {
    if (run === predictRun) requestDone();
  }
}

function batchRow(entry) {
  const name = el("th", { scope: "row", text: entry.filename || `Image ${entry.index + 1}` });
  if (!entry.prediction) {
    const error = entry.error || {};
    const code = error.code ? [" ", el("small", { className: "code", text: `(${error.code})` })]
                            : [];
    return el("tr", { className: "failed" }, name,
      el("td", { colspan: "3" }, el("strong", { text: "Error: " }), sentence(error.message),
         ...code));
  }
  const answer = entry.prediction;
  return el("tr", {}, name,
    el("td", {}, labelOf(answer)),
    el("td", { className: "num", text: pct(answer.probabilities[answer.label]) }),
    el("td", { text: answer.reliable === false
      ? `Not reliable: ${reasonsOf(answer).join("; ")}.` : "Reliable" }));
}

function renderSeveral(answer) {
  const entries = answer.images;
  $("batch-body").replaceChildren(...entries.map(batchRow));
  $("batch-version").textContent = answer.model_version;
  $("batch").hidden = false;
  const failed = entries.filter((entry) => !entry.prediction).length;
  const unreliable = entries.filter((e) => e.prediction && e.prediction.reliable === false);
  const parts = [`${entries.length - failed} of ${entries.length} images answered by model ` +
                 `version ${answer.model_version}`];
  if (failed) parts.push(`${failed} failed`);
  if (unreliable.length) parts.push(`${unreliable.length} not reliable`);
  say(predictStatus, `${parts.join("; ")}.`, failed || unreliable.length ? "warn" : "ok");
}

export function initPredict() {
  $("predict-file").addEventListener("change", (event) => choose(event.target.files));
  heatToggle.addEventListener("change", toggleHeatMap);
  $("predict-form").addEventListener("submit", (event) => {
    event.preventDefault();
    predict();
  });
  const drop = $("drop-zone");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const files = event.dataTransfer && event.dataTransfer.files;
    if (files && files.length) {
      $("predict-file").files = files;
      choose(files);
    }
  });
}
