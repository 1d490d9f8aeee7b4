// The retrain form: every TrainingParams field is a control with data-param, read the same
// way; a control that does not apply to the choices made is disabled, and not sent.
//   data-scope="new"        a new training only (a fine-tune inherits it from its parent)
//   data-scope="tuned"      a new training from real base weights (block 5 fine-tuning)
//   data-scope="fine-tune"  a fine-tune of a published version only
//   data-fine-tune="V"      the value a fine-tune defaults to, filled in when one is chosen

import { $, ApiError } from "./common.js";

const form = $("retrain-form");
const controls = () => [...form.querySelectorAll("[data-param]")];
const labelOf = (control) => document.querySelector(`label[for="${control.id}"]`).textContent;

function applies(control, fineTune, realWeights) {
  switch (control.dataset.scope) {
    case "new": return !fineTune;
    case "tuned": return !fineTune && realWeights;
    case "fine-tune": return fineTune;
    default: return true;
  }
}

// A number within the control's bounds: whole where its step is 1; empty when optional.
function numberOf(control) {
  const value = Number(control.value);
  const whole = control.step === "1";
  if (control.value === "" && !control.required) return undefined;
  // The service checks the open bounds (a learning rate above 0) and says so in words.
  if (control.value === "" || !Number.isFinite(value) || (whole && !Number.isInteger(value)) ||
      !control.checkValidity()) {
    control.focus();
    const kind = whole ? "a whole number" : "a number";
    throw new ApiError(0, "", `${labelOf(control)} must be ${kind} from ${control.min} to ` +
                              `${control.max}.`);
  }
  return value;
}

function valueOf(control) {
  if (control.type === "checkbox") return control.checked;
  if (control.type === "number") return numberOf(control);
  if (control.multiple) return [...control.selectedOptions].map((option) => option.value);
  return control.value.trim() || undefined; // an empty choice leaves the default
}

// The POST /retrain body: every control that applies.
export function readParams() {
  const params = {};
  for (const control of controls()) {
    if (control.disabled) continue;
    const value = valueOf(control);
    if (value !== undefined) params[control.dataset.param] = value;
  }
  if (!params.dataset) throw new ApiError(0, "", "Upload a dataset first.");
  return params;
}

// The base-weights note is a warning while ImageNet is chosen for a new training: without
// internet or the weights in the worker's cache, that job fails at once.
function showWeightsNote(fineTune) {
  const imagenet = $("retrain-base-weights").value === "imagenet";
  $("weights-help").className = imagenet && !fineTune ? "note warn" : "help note";
}

// Fields that do not apply are disabled; a fine-tune's own defaults are filled in when one
// is chosen, and the new training's put back when it is not.
export function showChoices() {
  const fineTune = Boolean($("retrain-base-version").value);
  const realWeights = $("retrain-base-weights").value !== "none";
  const mode = fineTune ? "fine-tune" : "new";
  for (const control of controls()) {
    control.disabled = !applies(control, fineTune, realWeights);
    if (!("fineTune" in control.dataset) || form.dataset.mode === mode) continue;
    if (fineTune) {
      control.dataset.newValue = control.value;
      control.value = control.dataset.fineTune;
    } else if ("newValue" in control.dataset) {
      control.value = control.dataset.newValue;
    }
  }
  for (const id of ["retrain-fine-tune-epochs", "retrain-fine-tune-learning-rate"]) {
    if (!$("retrain-fine-tune").checked) $(id).disabled = true;
  }
  form.dataset.mode = mode;
  showWeightsNote(fineTune);
}

export function initForm() {
  for (const id of ["retrain-base-version", "retrain-base-weights", "retrain-fine-tune"]) {
    $(id).addEventListener("change", showChoices);
  }
  showChoices();
}
