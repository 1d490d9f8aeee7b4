// With no version served, the predict area says so before any image is chosen, and after
// one is, in the page's own words: its Train section, not the API's routes or the CLI.

import { $, el } from "./common.js";

const trainLink = () => el("a", { href: "#train", text: "Train section below" });

// What stands in for an answer when nothing is active; null when a version is active, or
// when the list could not be read (a key needed, say) and nothing is known.
function nothingActive(list) {
  if (!list || list.active) return null;
  if (!list.versions.length) return ["No model yet: train one in the ", trainLink(), "."];
  return ["No version is active yet: activate one under ",
          el("a", { href: "#models", text: "Models" }), ", or train one in the ",
          trainLink(), "."];
}

// Above the drop zone, redrawn with the models list.
export function showNoModel(list) {
  const box = $("no-model");
  const words = nothingActive(list);
  box.hidden = !words;
  box.replaceChildren(...(words || []));
}

// The status line after a prediction that found no version to answer it.
export function sayNoModel(node, list) {
  let words = nothingActive(list);
  if (!words && list) {
    const failed = list.serving && list.serving.load_error;
    words = [`The active version ${list.active} ` + (failed
      ? `could not be loaded: ${failed}`
      : "is still being loaded: try again in a moment.")];
  }
  node.className = "status error";
  node.replaceChildren(el("strong", { text: "No answer: " }),
    ...(words || ["no model is served yet: train one in the ", trainLink(), "."]),
    " ", el("small", { className: "code", text: "(no_model)" }));
}
