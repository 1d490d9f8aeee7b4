// Activating a version: the shadow's figures first when it is the shadow, and for a version
// not proven better than chance, the service's refusal (409 confirmation_required) and a
// second, explicit button; only that button sends force=true.

import { el, getJson, say, sayError, sentence } from "./common.js";
import { ask } from "./dialog.js";
import { confirmActivation, shadowReport } from "./shadow.js";

// The second button's words: what serving it anyway means for this version.
function anywayWords(summary) {
  if (summary && Array.isArray(summary.balanced_accuracy_ci)) {
    return "Serve it anyway: its test interval includes chance";
  }
  return "Serve it anyway: nothing shows it is better than chance";
}

// The shadow answers everything once active: its figures first, and a second yes.
async function shadowAgreed(version, status) {
  say(status, `Reading the shadow figures of version ${version}…`, "busy");
  let report = null;
  let failure = null;
  try {
    report = await shadowReport(version);
  } catch (error) {
    failure = error;
  }
  say(status, "", "info");
  return confirmActivation(version, report, failure);
}

// The service's reason in its words, less how to confirm by API or CLI: here, the button.
const reasonOf = (error) => sentence(
  error.message.replace(/\.?\s*To serve it anyway\b.*$/s, ""));

function forcedAsk(version, list, error) {
  const summary = list && list.versions.find((s) => s.version === version);
  return ask({
    title: `Serve version ${version}, not shown to be better than chance?`,
    body: [el("p", { className: "guard-reason", text: reasonOf(error) })],
    accept: anywayWords(summary),
    cancel: list && list.active ? "Keep the active version" : "Do not activate it",
    danger: true,
  });
}

// POST /models/{v}/activate, asking again on 409; `render` draws the list it answers.
export async function activateVersion(version, list, status, render) {
  if (list && version === list.shadow && !(await shadowAgreed(version, status))) {
    say(status, `Version ${version} was not activated; it is still the shadow.`);
    return;
  }
  const url = `/models/${encodeURIComponent(version)}/activate`;
  say(status, `Activating version ${version}…`, "busy");
  let forced = false;
  try {
    let answer;
    try {
      answer = await getJson(url, { method: "POST" });
    } catch (error) {
      if (error.code !== "confirmation_required") throw error;
      say(status, `Version ${version} needs a confirmation: ${reasonOf(error)}`, "warn");
      if (!(await forcedAsk(version, list, error))) {
        say(status, `Version ${version} was not activated.`, "info");
        return;
      }
      forced = true;
      answer = await getJson(`${url}?force=true`, { method: "POST" });
    }
    render(answer);
    say(status, `Version ${version} is now the active version` +
        (forced ? ", served although it is not shown to be better than chance" : "") +
        "; new predictions use it once it is loaded.", forced ? "warn" : "ok");
  } catch (error) {
    sayError(status, error);
  }
}
