// Jobs: the caller's jobs, newest first, a page at a time (the API's cursor), filtered by state
// and type. While the tab is visible the page re-reads itself every POLL_MS, so states, progress
// and losses move without a reload; a page is one small query however many jobs exist.

import { api } from "../api.js";
import {
  TERMINAL, fill, fmtAgo, fmtNumber, h, jobSubject, progressBar, progressText, shortId, stateBadge,
} from "../dom.js";

const PAGE_SIZE = 25;
const POLL_MS = 2000;
const STATES = ["", "queued", "running", "succeeded", "failed", "cancelled", "stopped_early"];
const TYPES = ["", "gan.train", "style.transfer", "style.train", "style.apply", "gan.sample"];
const SHOWN_METRICS = ["d_loss", "g_loss", "loss", "total_loss", "fd", "modes"];
const COMPARE_MAX = 8;

function latestLosses(job) {
  const metrics = job.metrics || {};
  const names = SHOWN_METRICS.filter((n) => n in metrics);
  const shown = names.length ? names : Object.keys(metrics).slice(0, 2);
  return shown.slice(0, 3).map((n) => h("span", { class: "metric" }, `${n} ${fmtNumber(metrics[n])}`));
}

function select(id, label, options, value, onchange) {
  return [
    h("label", { for: id }, label),
    h(
      "select",
      { id, onchange },
      options.map((o) => h("option", { value: o, selected: o === value }, o || "any")),
    ),
  ];
}

export function jobsView(main, route) {
  const controller = new AbortController();
  const state = route.query.get("state") || "";
  const type = route.query.get("type") || "";
  const cursors = [null]; // cursor of each page seen, for "Newer"
  let page = 0;
  let nextCursor = null;
  let timer = null;
  let firstRender = true;
  const chosen = new Set();

  const body = h("tbody", {});
  const status = h("p", { class: "hint", "aria-live": "polite" });
  const newer = h("button", { type: "button", disabled: true, onclick: () => go(page - 1) }, "← Newer");
  const older = h("button", { type: "button", disabled: true, onclick: () => go(page + 1) }, "Older →");
  const pageLabel = h("span", { class: "hint" });
  const compare = h("a", {
    class: "button",
    href: "#/compare",
    "aria-disabled": "true",
    id: "compare-selected",
    onclick: (e) => {
      if (compare.getAttribute("aria-disabled") === "true") {
        e.preventDefault();
        status.textContent = `Select 2 to ${COMPARE_MAX} jobs to compare.`;
      }
    },
  }, "Compare selected");

  function setFilter(name, value) {
    const q = new URLSearchParams(route.query);
    if (value) q.set(name, value);
    else q.delete(name);
    location.hash = `#/jobs${q.toString() ? `?${q}` : ""}`;
  }

  function updateCompare() {
    const ids = [...chosen];
    const ok = ids.length >= 2 && ids.length <= COMPARE_MAX;
    compare.textContent = `Compare selected (${ids.length})`;
    compare.setAttribute("aria-disabled", ok ? "false" : "true");
    compare.setAttribute("href", ok ? `#/compare?ids=${ids.join(",")}` : "#/compare");
  }

  function row(job) {
    const id = `pick-${job.id}`;
    return h(
      "tr",
      { dataset: { jobId: job.id, state: job.state } },
      h("td", {}, h("input", {
        type: "checkbox",
        id,
        checked: chosen.has(job.id),
        "aria-label": `Select job ${shortId(job.id)} to compare`,
        onchange: (e) => {
          if (e.target.checked) chosen.add(job.id);
          else chosen.delete(job.id);
          updateCompare();
        },
      })),
      h("td", {}, h("a", { href: `#/jobs/${job.id}`, class: "mono" }, shortId(job.id))),
      h("td", {}, job.type),
      h("td", { class: "subject" }, jobSubject(job)),
      h("td", {}, stateBadge(job.state, job.cancel_requested)),
      h("td", { class: "progress-cell" }, progressBar(job.progress, `Progress of ${shortId(job.id)}`), h("span", { class: "hint" }, progressText(job))),
      h("td", { class: "metrics" }, latestLosses(job)),
      h("td", {}, job.warnings && job.warnings.length
        ? h("span", { class: "badge warn", title: job.warnings.join("\n") }, `⚠ ${job.warnings.length}`)
        : ""),
      h("td", { class: "hint" }, fmtAgo(job.created_at)),
    );
  }

  async function load() {
    clearTimeout(timer);
    try {
      const result = await api.jobs({ limit: PAGE_SIZE, state, type, cursor: cursors[page] }, controller.signal);
      nextCursor = result.next_cursor;
      fill(body, result.items.map(row));
      if (!result.items.length) {
        fill(body, h("tr", {}, h("td", { colspan: 9, class: "empty" }, page ? "No older jobs." : "No jobs yet. ", page ? "" : h("a", { href: "#/new/gan" }, "Train a GAN"))));
      }
      newer.disabled = page === 0;
      older.disabled = !nextCursor;
      pageLabel.textContent = `Page ${page + 1}`;
      status.textContent = "";
      if (firstRender) {
        firstRender = false;
        performance.mark("atelier:jobs-ready");
        document.documentElement.dataset.ready = "jobs";
      }
      const live = result.items.some((j) => !TERMINAL.has(j.state));
      if (!document.hidden && (live || page === 0)) timer = setTimeout(load, POLL_MS);
    } catch (error) {
      if (controller.signal.aborted) return;
      status.textContent = `Could not load jobs: ${error.message}. Retrying…`;
      timer = setTimeout(load, POLL_MS * 2);
    }
  }

  function go(n) {
    if (n > page) cursors[n] = nextCursor;
    page = n;
    load();
  }

  const onVisible = () => {
    if (!document.hidden) load();
  };
  document.addEventListener("visibilitychange", onVisible);

  fill(
    main,
    h(
      "section",
      { class: "card" },
      h("div", { class: "title-row" }, h("h1", {}, "Jobs"), h("a", { class: "button", href: "#/new/gan" }, "New GAN job"), h("a", { class: "button", href: "#/new/style" }, "New style transfer"), h("a", { class: "button", href: "#/new/style-model" }, "Train a style model")),
      h("div", { class: "filters" },
        select("filter-state", "State", STATES, state, (e) => setFilter("state", e.target.value)),
        select("filter-type", "Type", TYPES, type, (e) => setFilter("type", e.target.value)),
        compare,
      ),
      h("div", { class: "table-wrap" }, h(
        "table",
        { class: "jobs", id: "jobs-table" },
        h("caption", { class: "visually-hidden" }, "Your jobs, newest first"),
        h("thead", {}, h("tr", {}, ["", "Job", "Type", "Dataset / pictures", "State", "Progress", "Latest", "Warnings", "Created"].map((c) => h("th", { scope: "col" }, c)))),
        body,
      )),
      h("div", { class: "pager" }, newer, pageLabel, older),
      status,
    ),
  );
  updateCompare();
  load();
  return () => {
    controller.abort();
    clearTimeout(timer);
    document.removeEventListener("visibilitychange", onVisible);
  };
}
