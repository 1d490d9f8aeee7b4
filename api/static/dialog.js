// The page's one modal question: a title, what to read first, a button that says what it
// does and one that changes nothing (focused first, so Enter or Escape changes nothing).

import { $ } from "./common.js";

// Resolves true when the user presses the accept button, false otherwise.
export function ask({ title, body, accept, cancel = "Keep the active version", danger = false }) {
  const dialog = $("activate-dialog");
  const [yes, no] = [$("activate-confirm"), $("activate-cancel")];
  $("activate-dialog-title").textContent = title;
  $("activate-dialog-body").replaceChildren(...body);
  yes.textContent = accept;
  yes.className = danger ? "danger" : "primary";
  no.textContent = cancel;
  return new Promise((resolve) => {
    const done = (answer) => () => {
      yes.onclick = null;
      no.onclick = null;
      dialog.onclose = null;
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    yes.onclick = done(true);
    no.onclick = done(false);
    dialog.onclose = done(false); // Escape
    dialog.showModal();
    no.focus();
  });
}
