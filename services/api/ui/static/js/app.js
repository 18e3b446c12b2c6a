// The dashboard shell: sign-in, the hash router and the views. Each view is a function
// (main, route) -> cleanup; the cleanup aborts its requests, streams and timers when the user leaves.

import { api, clearKey, getKey, onUnauthorized, setKey } from "./api.js";
import { $, fill, h } from "./dom.js";
import { applyView } from "./views/apply.js";
import { compareView } from "./views/compare.js";
import { ganFormView } from "./views/gan_form.js";
import { jobView } from "./views/job.js";
import { jobsView } from "./views/jobs.js";
import { modelsView } from "./views/models.js";
import { styleView } from "./views/style.js";
import { styleTrainView } from "./views/style_train.js";
import { sweepView, sweepsView } from "./views/sweeps.js";

const main = $("#main");
const banner = $("#banner");
const signOut = $("#sign-out");
let cleanup = null;
let signInMessage = "";

const ROUTES = [
  [/^\/?$/, () => jobsView, "jobs"],
  [/^\/jobs$/, () => jobsView, "jobs"],
  [/^\/jobs\/([0-9a-f-]{36})$/, () => jobView, "jobs"],
  [/^\/new\/gan$/, () => ganFormView, "gan"],
  [/^\/new\/style$/, () => styleView, "style"],
  [/^\/new\/style-model$/, () => styleTrainView, "models"],
  [/^\/models$/, () => modelsView, "models"],
  [/^\/apply$/, () => applyView, "apply"],
  [/^\/compare$/, () => compareView, "compare"],
  [/^\/sweeps$/, () => sweepsView, "sweeps"],
  [/^\/sweeps\/([0-9a-f-]{36})$/, () => sweepView, "sweeps"],
];

export function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/jobs";
  const [path, qs = ""] = raw.split("?");
  return { path, query: new URLSearchParams(qs) };
}

export function showBanner(message) {
  banner.textContent = message;
  banner.hidden = !message;
}

function signInView(target) {
  const input = h("input", {
    id: "api-key",
    name: "api-key",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    "aria-describedby": "api-key-help api-key-error",
  });
  const error = h("p", { id: "api-key-error", class: "field-error", role: "alert" }, signInMessage);
  const button = h("button", { type: "submit" }, "Sign in");
  const form = h(
    "form",
    {
      class: "card narrow",
      onsubmit: async (e) => {
        e.preventDefault();
        const key = input.value.trim();
        if (!key) {
          error.textContent = "Enter your API key.";
          return;
        }
        button.disabled = true;
        error.textContent = "";
        setKey(key);
        try {
          await api.jobs({ limit: 1 });
          signInMessage = "";
          route();
        } catch (err) {
          clearKey();
          error.textContent =
            err.status === 401
              ? "That API key was not accepted (401). Check it and try again."
              : `Could not reach the API: ${err.message}`;
          button.disabled = false;
          input.focus();
        }
      },
    },
    h("h1", {}, "Sign in"),
    h("label", { for: "api-key" }, "API key"),
    input,
    h(
      "p",
      { id: "api-key-help", class: "hint" },
      "Kept in this tab only (sessionStorage) and sent as an Authorization header. Create one with ",
      h("code", {}, "atelier-admin create-key"),
      ".",
    ),
    error,
    button,
  );
  fill(main, form);
  input.focus();
  return () => {};
}

function setNav(section) {
  document.querySelectorAll("[data-nav]").forEach((a) => {
    if (a.dataset.nav === section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
}

export function route() {
  if (cleanup) cleanup();
  cleanup = null;
  showBanner("");
  const current = parseHash();
  signOut.hidden = !getKey();
  if (!getKey()) {
    setNav(null);
    cleanup = signInView(current);
    return;
  }
  for (const [pattern, view, section] of ROUTES) {
    const match = current.path.match(pattern);
    if (match) {
      setNav(section);
      main.replaceChildren();
      cleanup = view()(main, { ...current, params: match.slice(1) });
      const heading = main.querySelector("h1");
      if (heading) heading.setAttribute("tabindex", "-1");
      return;
    }
  }
  setNav(null);
  fill(main, h("section", { class: "card" }, h("h1", {}, "Not found"), h("p", {}, "No page here. "), h("a", { href: "#/jobs" }, "Back to jobs")));
}

onUnauthorized(() => {
  if (main.querySelector("#api-key")) return; // the sign-in form says it itself
  clearKey();
  signInMessage = "Your API key was not accepted (401): it may have been revoked. Sign in again.";
  route();
});

signOut.addEventListener("click", () => {
  clearKey();
  signInMessage = "";
  location.hash = "#/jobs";
  route();
});

window.addEventListener("hashchange", route);
route();
