// Retrain: start a job, follow it every second (state, epochs, chart), cancel it.

import { drawChart } from "./chart.js";
import { $, ApiError, api, el, getJson, num, pct, say, sayError, sentence } from "./common.js";
import { loadModels } from "./models.js";

const JOB_STORE = "cxr.jobId";
const PHASES = {
  head: "training the head on the frozen base",
  fine_tune: "fine-tuning block 5",
  full: "training the whole network",
  site: "fine-tuning a published version on this dataset",
};

const retrainStatus = $("retrain-status");
const jobStatus = $("job-status");
let job = null; // { id, timer, fallback: Map(epoch -> metrics), announced, failures }

function readParams() {
  const params = { dataset: $("retrain-dataset").value };
  const base = $("retrain-base-version").value;
  if (base) {
    // A fine-tune inherits its size and preprocessing and has defaults of its own.
    if (!params.dataset) throw new ApiError(0, "", "Upload a dataset first.");
    return { ...params, base_version: base, activate: $("retrain-activate").value };
  }
  for (const id of ["retrain-epochs", "retrain-fine-tune-epochs", "retrain-image-size",
                    "retrain-batch-size"]) {
    const input = $(id);
    const label = document.querySelector(`label[for="${id}"]`).textContent;
    const value = Number(input.value);
    if (!input.value || !Number.isInteger(value) || !input.checkValidity()) {
      input.focus();
      throw new ApiError(0, "", `${label} must be a whole number from ${input.min} to ` +
                                `${input.max}.`);
    }
    params[input.name] = value;
  }
  params.base_weights = $("retrain-base-weights").value;
  params.activate = $("retrain-activate").value;
  if (!params.dataset) throw new ApiError(0, "", "Upload a dataset first.");
  return params;
}

async function start(event) {
  event.preventDefault();
  const button = $("retrain-start");
  try {
    const params = readParams();
    button.disabled = true;
    say(retrainStatus, "Queuing the job…", "busy");
    const accepted = await getJson("/retrain", { method: "POST", json: params });
    say(retrainStatus, `Job ${accepted.job_id} queued: waiting for a worker.`, "busy");
    watch(accepted.job_id);
  } catch (error) {
    sayError(retrainStatus, error);
  } finally {
    button.disabled = false;
  }
}

function watch(id) {
  if (job && job.timer) clearTimeout(job.timer);
  job = { id, timer: null, fallback: new Map(), announced: 0, failures: 0 };
  sessionStorage.setItem(JOB_STORE, id);
  $("job").hidden = false;
  $("job-id").textContent = id;
  $("job-state").textContent = "…";
  $("job-phase").textContent = "";
  $("job-cancel").hidden = false;
  say(jobStatus, "Waiting for a worker…", "busy");
  drawChart([], 0);
  poll(job);
}

async function poll(current) {
  if (current !== job) return;
  try {
    const status = await getJson(`/jobs/${encodeURIComponent(current.id)}`);
    current.failures = 0;
    if (current !== job) return;
    await renderJob(status, current);
    if (["succeeded", "failed", "cancelled"].includes(status.state)) {
      sessionStorage.removeItem(JOB_STORE);
      return;
    }
  } catch (error) {
    current.failures += 1;
    if (error.status === 404 || current.failures > 30) {
      sessionStorage.removeItem(JOB_STORE);
      sayError(jobStatus, error);
      $("job-cancel").hidden = true;
      return;
    }
    sayError(jobStatus, error);
  }
  current.timer = setTimeout(() => poll(current), 1000);
}

// The job's per-epoch history, or, from services that report only the last epoch, what
// this page has seen of it poll after poll.
function historyOf(progress, current) {
  if (Array.isArray(progress.history)) return progress.history;
  if (progress.last && progress.epoch > 0) {
    current.fallback.set(progress.epoch, { ...progress.last, epoch: progress.epoch,
                                           phase: progress.phase });
  }
  return [...current.fallback.values()].sort((a, b) => a.epoch - b.epoch);
}

function splitError(text) {
  const match = /^([a-z_]+): (.*)$/s.exec(text || "");
  return match ? new ApiError(0, match[1], sentence(match[2]))
               : new ApiError(0, "", sentence(text || "the job failed"));
}

// The form's line for a job that did not fail.
function formLine(status, progress) {
  const job = `Job ${status.job_id}`;
  switch (status.state) {
    case "queued": return [`${job} queued: waiting for a worker.`, "busy"];
    case "running": return [progress.epoch > 0
      ? `${job} running: epoch ${progress.epoch} of ${progress.epochs} done.`
      : `${job} running: the first epoch is under way.`, "busy"];
    case "succeeded": return [`${job} succeeded: published version ${status.model_version}.`,
                              "ok"];
    case "cancelled": return [`${job} cancelled: nothing was published.`, "warn"];
    default: return [`${job}: ${status.state}.`, "info"];
  }
}

// The form's line follows the job it started to its end; a failure's error, which names
// the alternatives (other base weights, say), is shown beside the form that can change them.
function sayFormStatus(status, progress) {
  if (status.state === "failed") sayError(retrainStatus, splitError(status.error));
  else say(retrainStatus, ...formLine(status, progress));
}

async function renderJob(status, current) {
  const progress = status.progress || { epoch: 0, epochs: 0 };
  const history = historyOf(progress, current);
  $("job-state").textContent = status.state;
  $("job-phase").textContent = progress.phase ? `(${PHASES[progress.phase] ||
                                                     progress.phase})` : "";
  $("job-epoch").textContent = `${progress.epoch} / ${progress.epochs}`;
  $("job-progress").max = Math.max(progress.epochs, 1);
  $("job-progress").value = progress.epoch;
  $("job-cancel").hidden = !["queued", "running"].includes(status.state);
  drawChart(history, progress.epochs);
  renderHistory(history);
  sayFormStatus(status, progress);
  if (status.state === "succeeded") {
    const list = await loadModels(true);
    const v = status.model_version;
    const summary = list && list.versions.find((m) => m.version === v);
    let note = "";
    if (list && list.active === v) note = " It is the active version.";
    else if (summary && summary.promotion && summary.promotion.reason) {
      note = ` Not activated: ${sentence(summary.promotion.reason)} See Models.`;
    }
    say(jobStatus, `Finished: published version ${v}.${note}`, "ok");
  } else if (status.state === "failed") {
    sayError(jobStatus, splitError(status.error));
  } else if (status.state === "cancelled") {
    say(jobStatus, "Cancelled: nothing was published.", "warn");
  } else if (status.state === "running" && history.length > current.announced) {
    current.announced = history.length;
    const last = history[history.length - 1];
    say(jobStatus, `Epoch ${last.epoch} of ${progress.epochs} done: validation accuracy ` +
        `${pct(last.val_accuracy)}.`, "busy");
  } else if (status.state === "running" && !current.announced) {
    say(jobStatus, "Running: the first epoch is under way.", "busy");
  }
}

function renderHistory(history) {
  $("history-body").replaceChildren(...history.map((h) => el("tr", {},
    el("td", { text: String(h.epoch) }), el("td", { text: h.phase || "" }),
    el("td", { className: "num", text: num(h.loss) }),
    el("td", { className: "num", text: pct(h.accuracy) }),
    el("td", { className: "num", text: num(h.val_loss) }),
    el("td", { className: "num", text: pct(h.val_accuracy) }))));
}

async function cancel() {
  if (!job) return;
  say(jobStatus, "Cancelling…", "busy");
  try {
    await api(`/jobs/${encodeURIComponent(job.id)}`, { method: "DELETE" });
    say(jobStatus, "Cancellation requested: the job stops at its next batch.", "warn");
  } catch (error) {
    sayError(jobStatus, error);
  }
}

// Fields a fine-tune does not take are shown as not applying.
function showBase() {
  const fineTune = Boolean($("retrain-base-version").value);
  for (const id of ["retrain-epochs", "retrain-fine-tune-epochs", "retrain-image-size",
                    "retrain-batch-size", "retrain-base-weights"]) {
    $(id).disabled = fineTune;
  }
}

export function initTrain() {
  $("retrain-base-version").addEventListener("change", showBase);
  $("retrain-form").addEventListener("submit", start);
  $("job-cancel").addEventListener("click", cancel);
  drawChart([], 0);
  const running = sessionStorage.getItem(JOB_STORE);
  if (running) watch(running);
}
