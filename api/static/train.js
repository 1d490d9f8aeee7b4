// Retrain: start a job, follow it every second (state, epochs, chart), cancel it.

import { drawChart } from "./chart.js";
import { $, ApiError, api, el, getJson, num, pct, say, sayError, sentence } from "./common.js";
import { loadModels } from "./models.js";
import { initForm, readParams } from "./train_form.js";

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
                              "info"];
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
    await sayFinished(status.job_id, status.model_version);
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

// Green only for a version that now answers: one published but not activated is a
// candidate, and its line says why in the warning colour.
async function sayFinished(id, v) {
  const list = await loadModels(true);
  const summary = list && list.versions.find((m) => m.version === v);
  if (list && list.active === v) {
    say(jobStatus, `Finished: published version ${v}. It is the active version.`, "ok");
    say(retrainStatus, `Job ${id} succeeded: published version ${v}. It is the active ` +
        "version.", "ok");
    return;
  }
  const reason = summary && summary.promotion && summary.promotion.reason;
  const why = reason ? `${reason}${/[.!?]$/.test(reason) ? "" : "."}` : "it is a candidate.";
  say(jobStatus, `Finished: published version ${v}. Not activated: ${why} See Models.`, "warn");
  say(retrainStatus, `Job ${id} succeeded: published version ${v}. Not activated: it is a ` +
      "candidate.", "warn");
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

export function initTrain() {
  initForm();
  $("retrain-form").addEventListener("submit", start);
  $("job-cancel").addEventListener("click", cancel);
  drawChart([], 0);
  const running = sessionStorage.getItem(JOB_STORE);
  if (running) watch(running);
}
