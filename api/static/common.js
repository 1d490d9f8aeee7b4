// Helpers shared by the page's modules: elements, status lines, the key, API requests.

export const $ = (id) => document.getElementById(id);
const KEY_STORE = "cxr.apiKey";

// ---- elements and status lines ---------------------------------------------------------

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name === "text") node.textContent = value;
    else if (name === "className") node.className = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

export const pct = (x) => (typeof x === "number" ? `${(x * 100).toFixed(1)}%` : "n/a");
export const num = (x) => (typeof x === "number" ? x.toFixed(3) : "n/a");

export function sentence(text) {
  const s = String(text || "").trim();
  if (!s) return "The request failed.";
  const first = s.charAt(0).toUpperCase() + s.slice(1);
  return /[.!?]$/.test(first) ? first : `${first}.`;
}

export function say(node, text, kind = "info") {
  // The same words again would be announced again: leave them.
  if (node.textContent === text && node.className === `status ${kind}`) return;
  node.className = `status ${kind}`;
  node.replaceChildren(text);
}

// An error in plain words, its stable code small beside it, and for key problems a way
// to the key field.
export function sayError(node, error) {
  node.className = "status error";
  const parts = [el("strong", { text: "Error: " }), error.message];
  if (error.status === 401 || error.status === 403) {
    parts.push(" ", el("a", { href: "#api-key", text: "Enter a key" }));
  }
  if (error.code) parts.push(" ", el("small", { className: "code", text: `(${error.code})` }));
  node.replaceChildren(...parts);
}

// ---- the API key: kept in this tab only ------------------------------------------------

const keyInput = $("api-key");
export const apiKey = () => keyInput.value.trim();

export function initKey() {
  keyInput.value = sessionStorage.getItem(KEY_STORE) || "";
  keyInput.addEventListener("input", () => {
    if (apiKey()) sessionStorage.setItem(KEY_STORE, apiKey());
    else sessionStorage.removeItem(KEY_STORE);
  });
  $("api-key-reveal").addEventListener("click", (event) => {
    const shown = keyInput.type === "password";
    keyInput.type = shown ? "text" : "password";
    event.currentTarget.setAttribute("aria-pressed", String(shown));
    event.currentTarget.textContent = shown ? "Hide" : "Show";
  });
  $("api-key-forget").addEventListener("click", () => {
    keyInput.value = "";
    sessionStorage.removeItem(KEY_STORE);
    keyInput.focus();
  });
}

// ---- requests --------------------------------------------------------------------------

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function fieldName(loc) {
  const parts = (loc || []).filter((p) => !["body", "query", "path"].includes(p));
  return parts.join(".").replace(/_/g, " ") || "request";
}

function plainMessage(status, code, message, details) {
  if (status === 401) {
    return apiKey()
      ? "This service does not know the API key entered at the top of the page."
      : "This needs an API key: enter one in the API key field at the top of the page.";
  }
  if (status === 403) {
    return "This needs an admin API key; the key entered does not have that role.";
  }
  if (code === "validation_error" && Array.isArray(details) && details.length) {
    return details.map((d) => sentence(`${fieldName(d.loc)}: ${d.msg}`)).join(" ");
  }
  if (status === 413) return sentence(message) + " Choose a smaller file.";
  return sentence(message);
}

async function errorOf(response) {
  let code = `http_${response.status}`;
  let message = response.statusText || "the request failed";
  let details;
  try {
    const body = await response.json();
    if (body && body.error) ({ code, message, details } = body.error);
  } catch {
    // not JSON (a proxy's page, say): keep the status text
  }
  return new ApiError(response.status, code, plainMessage(response.status, code, message,
                                                          details));
}

export async function api(path, { method = "GET", body, json, headers: extra = {} } = {}) {
  const headers = { Accept: "application/json", ...extra };
  if (apiKey()) headers["X-API-Key"] = apiKey();
  let payload = body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload, cache: "no-store" });
  } catch {
    throw new ApiError(0, "network_error",
                       "The service could not be reached. Is it running?");
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

export const getJson = async (path, options) => (await api(path, options)).json();
