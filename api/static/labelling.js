// The reading room's label for the answer shown: recorded on the prediction, which gives the
// versions' live figures, and filed into a dataset where the service kept the image.

import { $, ApiError, api, el, say, sayError } from "./common.js";
import { loadModels } from "./models.js";

const form = $("confirm-form");
const choice = $("confirm-label");
const button = $("confirm-button");
const status = $("confirm-status");
let predictionId = null; // the answer shown; a label for an older one is not reported

// Offer the control for an answer; a service without a prediction log gives no id to label.
export function offerLabel(answer, classes) {
  predictionId = answer.prediction_id || null;
  form.hidden = !predictionId;
  button.disabled = false;
  status.className = "status";
  status.replaceChildren();
  // No class is chosen for the reader: a label is what the reading room confirmed, not the
  // answer agreed with by default.
  choice.replaceChildren(el("option", { value: "", text: "choose the confirmed class" }),
    ...classes.map((name) => el("option", { value: name, text: name })));
  choice.value = "";
}

// The dataset a kept image was filed into, whichever shape the service names it in.
function datasetOf(filed) {
  if (!filed) return null;
  return typeof filed === "string" ? filed : filed.dataset || filed.name || null;
}

async function record(event) {
  event.preventDefault();
  const id = predictionId;
  const label = choice.value;
  if (!id) return;
  if (!label) {
    say(status, "Choose the class the reading room confirmed first.", "error");
    choice.focus();
    return;
  }
  say(status, `Recording ${label}…`, "busy");
  button.disabled = true;
  try {
    const response = await api(`/predictions/${encodeURIComponent(id)}/label`,
                               { method: "POST", json: { label } });
    const body = await response.json();
    if (id !== predictionId) return;
    const dataset = datasetOf(body.filed_into);
    const recorded = (body.confirmed && body.confirmed.label) || label;
    say(status, `Recorded as ${recorded}${dataset ? `, filed into dataset ${dataset}` : ""}.`,
        "ok");
    loadModels(true); // the version's live figures now count it
  } catch (error) {
    if (id !== predictionId) return;
    // common.js words a 403 for the admin-only routes; a labeler key may do this one.
    sayError(status, error.status === 403
      ? new ApiError(403, error.code, "Recording a label needs a labeler or admin API key; " +
                     "the key entered may only predict and read.")
      : error);
  } finally {
    if (id === predictionId) button.disabled = false;
  }
}

export function initLabelling() {
  form.addEventListener("submit", record);
}
