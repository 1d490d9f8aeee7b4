// One answer's words: its headline, each class's bar, why it is not reliable, how unusual
// the image is, and what the heat map's grid can show.

import { $, el, pct } from "./common.js";

// Each reason an answer is not reliable, in words.
const REASONS = {
  not_a_chest_xray: "the image does not look like a chest radiograph",
  shifted: "the image is unlike the ones this model was trained on",
  low_confidence: "the model is not confident enough",
  version_not_better_than_chance: "this model version is no better than chance on its test images",
};

// The label as the answer, or for an unreliable answer, plainly: never bold.
export function labelOf(answer, id) {
  return answer.reliable === false
    ? el("span", { id, className: "unreliable-label", text: answer.label })
    : el("strong", { id, text: answer.label });
}

export const reasonsOf = (answer) => (answer.reasons || []).map((code) => REASONS[code] || code);

export function renderBars(probabilities, label) {
  const list = $("probabilities");
  list.replaceChildren();
  Object.entries(probabilities).forEach(([name, p], index) => {
    const id = `prob-${index}`;
    const item = el("li", { className: name === label ? "predicted" : "" },
      el("label", { for: id, text: name }),
      el("meter", { id, min: "0", max: "1", value: String(p) }, pct(p)),
      el("span", { className: "pct", text: pct(p) }));
    list.append(item);
  });
}

// "No finding" is a normal study to a radiologist: an unreliable answer is not assessable,
// and says so, rather than reading as a normal report.
export function renderLabel(answer) {
  const line = $("label-line");
  const box = $("unreliable");
  if (answer.reliable !== false) {
    line.replaceChildren("Predicted class: ", labelOf(answer, "predicted-label"));
    box.hidden = true;
    return;
  }
  // The probabilities stay visible, but the label is not presented as the answer.
  line.replaceChildren("No reliable answer. Most probable class: ",
                       labelOf(answer, "predicted-label"));
  box.hidden = false;
  box.replaceChildren(el("strong", { text: "Not reliable: " }),
    `${reasonsOf(answer).join("; ")}. Do not read this answer as a diagnosis.`);
}

// Enough decimals, two at least, that the printed score stands on the same side of the
// printed threshold as the score itself: a flagged 1.503 never reads as 1.50 against 1.50.
export function shiftNumbers(score, threshold) {
  const side = Math.sign(score - threshold);
  let [s, t] = [String(score), String(threshold)];
  for (let digits = 2; digits <= 8; digits += 1) {
    const [a, b] = [score.toFixed(digits), threshold.toFixed(digits)];
    if (Math.sign(Number(a) - Number(b)) === side) {
      [s, t] = [a, b];
      break;
    }
  }
  const where = side > 0 ? "above" : side < 0 ? "below" : "at";
  return `shift score ${s}, ${where} the threshold ${t}`;
}

// An image like the training ones is reassurance only for an answer that is otherwise
// reliable: a version at chance, say, is no better on familiar images.
export function renderShift(shift, reliable) {
  const box = $("shift");
  if (!shift) {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  const numbers = shiftNumbers(shift.score, shift.threshold);
  if (shift.flagged) {
    box.className = "shift flagged";
    box.replaceChildren(el("strong", { text: "Unusual image. " }),
      "It lies outside what this model was trained on: do not trust these " +
      `probabilities (${numbers}).`);
  } else if (reliable) {
    box.className = "shift ok";
    box.replaceChildren(`Similar to the training images (${numbers}).`);
  } else {
    box.className = "shift ok";
    box.replaceChildren(`Not flagged as unusual (${numbers}), but that does not make this ` +
                        "answer reliable: see above.");
  }
}

// The map is known on the layer's grid only (4x4 at 64 px on block5): the smooth overlay
// between its cells is drawn, and the page says so under it.
export function gridWords(explanation) {
  const grid = explanation.grid || [];
  const [rows, cols] = Array.isArray(explanation.grid_shape)
    ? explanation.grid_shape : [grid.length, (grid[0] || []).length];
  return {
    caption: `Heat map: ${explanation.layer}, ${rows}x${cols} grid, for ${explanation.class_name}`,
    note: `The model's attention is known for ${rows * cols} blocks of the image only ` +
          `(${rows} rows, ${cols} columns); the smooth shading between them is drawn, not ` +
          "measured.",
  };
}
