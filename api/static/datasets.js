// Datasets: upload a zip, list what is stored, offer it to the retrain form.

import { $, el, getJson, say, sayError } from "./common.js";

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

const datasetStatus = $("dataset-status");

function counts(classes) {
  return Object.entries(classes).map(([name, n]) => `${name} ${n}`).join(", ");
}

// The retrain form's other dataset choices: several sources, other hospitals' sets, the
// source held out. What was chosen stays chosen across a refresh.
function fillChoices(datasets) {
  for (const id of ["retrain-datasets", "retrain-external-datasets", "retrain-holdout-source"]) {
    const choice = $(id);
    const kept = new Set([...choice.selectedOptions].map((option) => option.value));
    const none = choice.multiple ? [] : [el("option", { value: "", text: "none" })];
    choice.replaceChildren(...none, ...datasets.map((d) => el("option", {
      value: d.name, text: d.name, selected: kept.has(d.name) })));
  }
}

async function loadDatasets(select) {
  const body = $("datasets-body");
  const choice = $("retrain-dataset");
  try {
    const { datasets } = await getJson("/datasets");
    body.replaceChildren();
    const keep = select || choice.value;
    choice.replaceChildren();
    if (!datasets.length) {
      body.append(el("tr", {}, el("td", { colspan: "3", text: "No dataset yet." })));
      choice.append(el("option", { value: "", text: "Upload a dataset first" }));
    }
    for (const d of datasets) {
      body.append(el("tr", {}, el("th", { scope: "row" }, el("code", { text: d.name })),
                     el("td", { className: "num", text: String(d.images) }),
                     el("td", { text: counts(d.classes) })));
      choice.append(el("option", { value: d.name, text: d.name, selected: d.name === keep }));
    }
    fillChoices(datasets);
  } catch (error) {
    sayError(datasetStatus, error);
  }
}

async function upload(event) {
  event.preventDefault();
  const name = $("dataset-name").value.trim();
  const file = $("dataset-file").files[0];
  if (!NAME.test(name)) {
    say(datasetStatus, "Give the dataset a name of letters, digits, _ . or - (at most 64, " +
        "starting with a letter or digit).", "error");
    $("dataset-name").focus();
    return;
  }
  if (!file) {
    say(datasetStatus, "Choose a zip file to upload.", "error");
    $("dataset-file").focus();
    return;
  }
  const form = new FormData();
  form.append("name", name);
  form.append("file", file, file.name);
  const button = $("dataset-upload");
  button.disabled = true;
  say(datasetStatus, `Uploading ${file.name} and checking every image…`, "busy");
  try {
    const info = await getJson("/datasets", { method: "POST", body: form });
    say(datasetStatus, `Stored dataset ${info.name}: ${info.images} images ` +
        `(${counts(info.classes)}).`, "ok");
    await loadDatasets(info.name);
  } catch (error) {
    sayError(datasetStatus, error);
  } finally {
    button.disabled = false;
  }
}

export function initDatasets() {
  $("datasets-refresh").addEventListener("click", () => loadDatasets());
  $("dataset-form").addEventListener("submit", upload);
  loadDatasets();
}
