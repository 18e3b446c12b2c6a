// Sweeps: the caller's sweeps a page at a time, and one sweep's compare view: every trial's params,
// state, progress and objective in a table that sorts (best first by default; the best succeeded trial
// starred), why each stopped trial was stopped, the objective curves of the best trials overlaid by
// step, and a link that opens any 2 to 8 trials in the Compare view. While trials run the page re-reads
// the sweep every POLL_MS; the curves follow every CURVES_EVERY polls.

import { api } from "../api.js";
import { MetricChart, chartControls } from "../charts.js";
import { fill, fmtAgo, fmtNumber, h, shortId, stateBadge } from "../dom.js";
import { MAX_POINTS } from "./job.js";

const PAGE_SIZE = 25;
const POLL_MS = 2000;
const CURVES_EVERY = 5;
const CURVES_MAX = 12; // the objective curves of at most this many trials, the best first
const COMPARE_MIN = 2;
const COMPARE_MAX = 8;

export function sweepsView(main) {
  const controller = new AbortController();
  const cursors = [null];
  let page = 0;
  const body = h("tbody", {});
  const status = h("p", { class: "hint", "aria-live": "polite" });
  const newer = h("button", { type: "button", disabled: true, onclick: () => go(page - 1) }, "← Newer");
  const older = h("button", { type: "button", disabled: true, onclick: () => go(page + 1) }, "Older →");
  fill(main, h("section", { class: "card" },
    h("h1", {}, "Sweeps"),
    h("p", { class: "hint" }, "Start one with ", h("code", {}, "atelier sweep -f sweep.yaml"), " or POST /v1/sweeps."),
    status,
    h("div", { class: "table-wrap" }, h("table", { class: "jobs", id: "sweeps-table" },
      h("thead", {}, h("tr", {}, ["Sweep", "Type", "Objective", "Parallel", "Early stopping", "Created"].map((c) => h("th", { scope: "col" }, c)))),
      body)),
    h("div", { class: "pager" }, newer, older)));

  async function go(to) {
    page = to;
    try {
      const result = await api.sweeps({ limit: PAGE_SIZE, cursor: cursors[page] }, controller.signal);
      cursors[page + 1] = result.next_cursor;
      fill(body, result.items.length
        ? result.items.map((s) => h("tr", { dataset: { sweepId: s.id } },
          h("td", {}, h("a", { href: `#/sweeps/${s.id}`, class: "mono" }, shortId(s.id))),
          h("td", {}, s.type),
          h("td", {}, `${s.objective.metric} (${s.objective.mode})`),
          h("td", {}, String(s.max_parallel)),
          h("td", {}, s.early_stopping ? `${s.early_stopping.rule} from step ${fmtNumber(s.early_stopping.min_steps)}` : "none"),
          h("td", { class: "hint" }, fmtAgo(s.created_at))))
        : h("tr", {}, h("td", { colspan: 6, class: "empty" }, page ? "No older sweeps." : "No sweeps yet.")));
      newer.disabled = page === 0;
      older.disabled = !result.next_cursor;
      status.textContent = "";
      document.documentElement.dataset.ready = "sweeps";
    } catch (error) {
      if (!controller.signal.aborted) status.textContent = `Could not load sweeps: ${error.message}`;
    }
  }
  go(0);
  return () => controller.abort();
}

/** The early-stopping rule in words. */
export function ruleText(rule) {
  if (!rule) return "none: every trial runs to the end";
  const from = `from step ${fmtNumber(rule.min_steps)}`;
  const others = `once ${rule.min_trials} other trial${rule.min_trials === 1 ? "" : "s"} reached the tick`;
  if (rule.rule === "asha") {
    return `ASHA: at rungs ${from}, ×${rule.reduction_factor} each, the best 1/${rule.reduction_factor} go on (${others})`;
  }
  return `median: every ${fmtNumber(rule.interval || rule.min_steps)} steps ${from}, a trial whose best is worse than the others' median running mean stops (${others})`;
}

/** Trials ranked by objective, best first; those without one last, in the order they were made. */
export function ranked(trials, mode) {
  const sign = mode === "min" ? 1 : -1;
  return trials
    .map((t, made) => ({ ...t, made }))
    .sort((a, b) => {
      const ha = typeof a.objective === "number";
      const hb = typeof b.objective === "number";
      if (ha && hb && a.objective !== b.objective) return sign * (a.objective - b.objective);
      if (ha !== hb) return ha ? -1 : 1;
      return a.made - b.made;
    });
}

function paramText(value) {
  return typeof value === "number" ? fmtNumber(value) : JSON.stringify(value);
}

export function sweepView(main, route) {
  const controller = new AbortController();
  const { signal } = controller;
  const sweepId = route.params[0];
  let sweep = null;
  let sortKey = "objective";
  let sortDir = 1;
  let timer = null;
  let polls = 0;
  let charts = [];
  const chosen = new Set();

  const heading = h("h1", {}, `Sweep ${shortId(sweepId)}`);
  const stateSlot = h("span", { id: "sweep-state" });
  const summary = h("dl", { class: "summary", id: "sweep-summary" });
  const status = h("p", { class: "hint", "aria-live": "polite" }, "Loading the sweep…");
  const actions = h("div", { class: "actions" });
  const head = h("thead", {});
  const body = h("tbody", {});
  const notes = h("ul", { class: "warnings", id: "sweep-stops", "aria-label": "Trials stopped early" });
  const chartsSlot = h("div", { class: "charts", id: "sweep-curves" });
  const curvesNote = h("p", { class: "hint" });
  const compare = h("a", { class: "button", id: "sweep-compare", href: "#/compare", "aria-disabled": "true" }, "Compare selected");
  fill(main,
    h("section", { class: "card" }, h("div", { class: "title-row" }, heading, stateSlot), status, summary, actions),
    h("section", { class: "card", "aria-labelledby": "sweep-trials-h" },
      h("div", { class: "title-row" }, h("h2", { id: "sweep-trials-h" }, "Trials"), compare),
      h("div", { class: "table-wrap" }, h("table", { class: "jobs", id: "sweep-trials" }, head, body)),
      notes),
    h("section", { class: "card", "aria-labelledby": "sweep-curves-h" },
      h("h2", { id: "sweep-curves-h" }, "Objective by step"), curvesNote, chartControls(() => charts), chartsSlot));

  function updateCompare() {
    const ids = [...chosen];
    const ok = ids.length >= COMPARE_MIN && ids.length <= COMPARE_MAX;
    compare.textContent = `Compare selected (${ids.length})`;
    compare.setAttribute("aria-disabled", ok ? "false" : "true");
    compare.setAttribute("href", ok ? `#/compare?ids=${ids.join(",")}` : "#/compare");
  }
  compare.addEventListener("click", (e) => {
    if (compare.getAttribute("aria-disabled") === "true") {
      e.preventDefault();
      status.textContent = `Select ${COMPARE_MIN} to ${COMPARE_MAX} trials to compare.`;
    }
  });

  function columns() {
    const names = [...new Set(sweep.trials.flatMap((t) => Object.keys(t.params)))].sort();
    return [
      { key: "rank", label: "#" },
      { key: "job", label: "Trial" },
      ...names.map((n) => ({ key: `param:${n}`, label: n })),
      { key: "state", label: "State" },
      { key: "step", label: "Steps" },
      { key: "objective", label: `${sweep.objective.metric} (${sweep.objective.mode})` },
    ];
  }

  function sorted(rows) {
    if (sortKey === "objective" || sortKey === "rank") {
      return sortDir === 1 ? rows : [...rows].reverse();
    }
    const value = (t) => {
      if (sortKey.startsWith("param:")) return t.params[sortKey.slice(6)];
      if (sortKey === "job") return t.job_id;
      return t[sortKey];
    };
    return [...rows].sort((a, b) => {
      const va = value(a);
      const vb = value(b);
      if (va === vb) return a.rank - b.rank;
      if (va === undefined || va === null) return 1;
      if (vb === undefined || vb === null) return -1;
      return (va < vb ? -1 : 1) * sortDir;
    });
  }

  function renderTable() {
    const cols = columns();
    fill(head, h("tr", {}, h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Select")), cols.map((c) => h("th", {
      scope: "col",
      "aria-sort": sortKey === c.key ? (sortDir === 1 ? "ascending" : "descending") : "none",
    }, h("button", {
      type: "button",
      class: "sort",
      dataset: { sort: c.key },
      onclick: () => {
        sortDir = sortKey === c.key ? -sortDir : 1;
        sortKey = c.key;
        renderTable();
      },
    }, c.label)))));
    const best = sweep.best ? sweep.best.job_id : null;
    const rows = ranked(sweep.trials, sweep.objective.mode).map((t, i) => ({ ...t, rank: i + 1 }));
    fill(body, sorted(rows).map((t) => h("tr", {
      class: t.job_id === best ? "best" : "",
      dataset: { jobId: t.job_id, state: t.state, rank: String(t.rank) },
    },
    h("td", {}, h("input", {
      type: "checkbox",
      checked: chosen.has(t.job_id),
      "aria-label": `Select trial ${shortId(t.job_id)} to compare`,
      onchange: (e) => {
        if (e.target.checked) chosen.add(t.job_id);
        else chosen.delete(t.job_id);
        updateCompare();
      },
    })),
    h("td", {}, String(t.rank), t.job_id === best ? h("span", { title: "The best succeeded trial", "aria-label": "best" }, " ★") : ""),
    h("td", {}, h("a", { href: `#/jobs/${t.job_id}`, class: "mono" }, shortId(t.job_id))),
    cols.filter((c) => c.key.startsWith("param:")).map((c) => h("td", { class: "mono" }, paramText(t.params[c.key.slice(6)]))),
    h("td", {}, stateBadge(t.state), t.error ? h("span", { class: "hint" }, ` ${t.error}`) : ""),
    h("td", {}, `${fmtNumber(t.step)} / ${fmtNumber(t.total)}`),
    h("td", { class: "objective" }, typeof t.objective === "number" ? fmtNumber(t.objective) : "—"))));
    const stopped = sweep.trials.filter((t) => t.early_stop);
    fill(notes, stopped.map((t) => h("li", { dataset: { jobId: t.job_id } },
      h("a", { href: `#/jobs/${t.job_id}`, class: "mono" }, shortId(t.job_id)), `: ${t.early_stop.message}`)));
  }

  function renderSummary() {
    fill(stateSlot, stateBadge(sweep.state));
    const counts = Object.entries(sweep.counts).map(([s, n]) => `${n} ${s}`).join(", ") || "no trials";
    const items = [
      ["Type", sweep.type],
      ["Trials", `${sweep.trials.length}: ${counts}`],
      ["Objective", `${sweep.objective.metric}, ${sweep.objective.mode === "min" ? "lower" : "higher"} is better`],
      ["Running at once", `at most ${sweep.max_parallel}`],
      ["Early stopping", ruleText(sweep.early_stopping)],
      ["Best", sweep.best ? `${shortId(sweep.best.job_id)} with ${sweep.objective.metric} ${fmtNumber(sweep.best.objective)}` : "none yet (the best is a succeeded trial)"],
      ["Created", fmtAgo(sweep.created_at)],
    ];
    fill(summary, items.map(([k, v]) => [h("dt", {}, k), h("dd", { dataset: { field: k.toLowerCase() } }, v)]));
    fill(actions, sweep.state === "running" ? h("button", {
      type: "button",
      class: "danger",
      id: "sweep-cancel",
      onclick: async (e) => {
        e.target.disabled = true;
        try {
          sweep = await api.cancelSweep(sweepId);
          render();
        } catch (error) {
          status.textContent = `Could not cancel: ${error.message}`;
          e.target.disabled = false;
        }
      },
    }, "Cancel the sweep") : "");
  }

  async function renderCurves() {
    const metric = sweep.objective.metric;
    const shown = ranked(sweep.trials, sweep.objective.mode).filter((t) => t.state !== "queued").slice(0, CURVES_MAX);
    const parts = await Promise.all(shown.map((t) => api.metrics(t.job_id, { names: metric, max_points: MAX_POINTS }, signal)));
    const labels = shown.map((t, i) => `#${i + 1} ${shortId(t.job_id)}`);
    charts.forEach((c) => c.destroy());
    chartsSlot.replaceChildren();
    curvesNote.textContent = shown.length < sweep.trials.length
      ? `The ${shown.length} best trials that have started, of ${sweep.trials.length}.`
      : "";
    if (!shown.length) {
      charts = [];
      curvesNote.textContent = "No trial has started yet.";
      return;
    }
    const chart = new MetricChart(chartsSlot, { title: metric, labels, syncKey: "sweep" });
    chart.setSeries(Object.fromEntries(shown.map((t, i) => [labels[i], parts[i].series[metric] || []])));
    charts = [chart];
  }

  function render() {
    heading.textContent = `Sweep ${shortId(sweep.id)}`;
    renderSummary();
    renderTable();
  }

  async function load() {
    clearTimeout(timer);
    try {
      const wasLive = sweep && sweep.state !== "done" && sweep.state !== "cancelled";
      sweep = await api.sweep(sweepId, signal);
      status.textContent = "";
      render();
      const live = sweep.state === "running" || sweep.state === "cancelling";
      if (polls % CURVES_EVERY === 0 || (wasLive && !live)) await renderCurves();
      polls += 1;
      document.documentElement.dataset.ready = "sweep";
      performance.mark("atelier:sweep-ready");
      if (live && !document.hidden) timer = setTimeout(load, POLL_MS);
    } catch (error) {
      if (signal.aborted) return;
      if (error.status === 404) {
        fill(main, h("section", { class: "card" }, h("h1", {}, "Sweep not found"), h("p", {}, "No such sweep in your tenant. "), h("a", { href: "#/sweeps" }, "All sweeps")));
        return;
      }
      status.textContent = `Could not load the sweep: ${error.message}. Retrying…`;
      timer = setTimeout(load, POLL_MS);
    }
  }
  load();
  return () => {
    controller.abort();
    clearTimeout(timer);
    charts.forEach((c) => c.destroy());
  };
}
