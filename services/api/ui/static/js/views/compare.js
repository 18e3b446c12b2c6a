// Compare 2 to 8 runs: their curves overlaid by step (one chart per metric), their final grids
// side by side, and a table of the params that differ and the final metrics.

import { allArtifacts, api, artifactImage } from "../api.js";
import { MetricChart, PALETTE, chartControls } from "../charts.js";
import { fill, fmtAgo, fmtNumber, h, jobSubject, shortId, stateBadge } from "../dom.js";
import { groupsFor, MAX_POINTS } from "./job.js";

const MIN_RUNS = 2;
const MAX_RUNS = 8;
const FINAL = [/^samples\/final\.png$/, /^output\.png$/, /^samples\.png$/, /^(samples|snapshots)\/step-\d+\.png$/];

function runLabel(job, i) {
  const preset = job.params.preset ? ` ${job.params.preset}` : "";
  return `#${i + 1} ${shortId(job.id)}${preset}`;
}

function finalPicture(artifacts) {
  for (const pattern of FINAL) {
    const hits = artifacts.filter((a) => pattern.test(a.name)).sort((a, b) => a.name.localeCompare(b.name));
    if (hits.length) return hits[hits.length - 1];
  }
  return null;
}

function picker(main, selected, signal) {
  const chosen = new Set(selected);
  const list = h("tbody", {});
  const go = h("button", { type: "button", id: "compare-go", disabled: true, onclick: () => { location.hash = `#/compare?ids=${[...chosen].join(",")}`; } }, "Compare");
  const hint = h("p", { class: "hint", "aria-live": "polite" });
  const update = () => {
    go.disabled = chosen.size < MIN_RUNS || chosen.size > MAX_RUNS;
    hint.textContent = `${chosen.size} selected; pick ${MIN_RUNS} to ${MAX_RUNS} runs.`;
  };
  fill(main, h("section", { class: "card" },
    h("h1", {}, "Compare runs"),
    hint,
    h("div", { class: "table-wrap" }, h("table", { class: "jobs" },
      h("thead", {}, h("tr", {}, ["", "Job", "Type", "Dataset / pictures", "State", "Created"].map((c) => h("th", { scope: "col" }, c)))),
      list)),
    go));
  update();
  api.jobs({ limit: 50 }, signal).then((page) => {
    fill(list, page.items.map((job) => h("tr", {},
      h("td", {}, h("input", {
        type: "checkbox", id: `cmp-${job.id}`, checked: chosen.has(job.id), "aria-label": `Compare job ${shortId(job.id)}`,
        onchange: (e) => { if (e.target.checked) chosen.add(job.id); else chosen.delete(job.id); update(); },
      })),
      h("td", {}, h("label", { for: `cmp-${job.id}`, class: "mono" }, shortId(job.id))),
      h("td", {}, job.type), h("td", {}, jobSubject(job)), h("td", {}, stateBadge(job.state)), h("td", { class: "hint" }, fmtAgo(job.created_at)))));
  }).catch((error) => { hint.textContent = `Could not load jobs: ${error.message}`; });
}

export function compareView(main, route) {
  const controller = new AbortController();
  const { signal } = controller;
  const ids = [...new Set((route.query.get("ids") || "").split(",").filter(Boolean))];
  let charts = [];
  if (ids.length < MIN_RUNS || ids.length > MAX_RUNS) {
    picker(main, ids, signal);
    return () => controller.abort();
  }
  const chartsSlot = h("div", { class: "charts", id: "compare-charts" });
  const grids = h("div", { class: "side-by-side", id: "compare-grids" });
  const table = h("div", { class: "table-wrap", id: "compare-params" });
  const status = h("p", { class: "hint", "aria-live": "polite" }, "Loading runs…");
  fill(main,
    h("section", { class: "card" }, h("div", { class: "title-row" }, h("h1", {}, `Compare ${ids.length} runs`), h("a", { href: `#/compare?ids=${ids.join(",")}&pick=1`, class: "button", id: "compare-change" }, "Change runs")), status),
    h("section", { class: "card", "aria-labelledby": "cmp-curves" }, h("h2", { id: "cmp-curves" }, "Curves"), chartControls(() => charts), chartsSlot),
    h("section", { class: "card", "aria-labelledby": "cmp-grids" }, h("h2", { id: "cmp-grids" }, "Final pictures"), grids),
    h("section", { class: "card", "aria-labelledby": "cmp-params" }, h("h2", { id: "cmp-params" }, "What differs"), table));
  if (route.query.get("pick")) {
    picker(main, ids, signal);
    return () => controller.abort();
  }

  (async () => {
    try {
      const runs = await Promise.all(ids.map(async (id) => {
        const [job, metrics, artifacts] = await Promise.all([
          api.job(id, signal), api.metrics(id, { max_points: MAX_POINTS }, signal), allArtifacts(id, signal),
        ]);
        return { job, metrics, artifacts };
      }));
      runs.forEach((r, i) => { r.label = runLabel(r.job, i); });
      status.textContent = "";
      const names = [...new Set(runs.flatMap((r) => r.metrics.names))];
      const labels = runs.map((r) => r.label);
      const zoom = async (chart, from, to) => {
        const metric = chart.metric;
        const parts = await Promise.all(runs.map((r) => api.metrics(r.job.id, { names: metric, since_step: Math.max(-1, from - 1), until_step: to, max_points: MAX_POINTS }, signal)));
        chart.showZoomed([from, to], Object.fromEntries(runs.map((r, i) => [r.label, parts[i].series[metric] || []])));
      };
      charts = groupsFor(names).flatMap((g) => g.names).map((metric) => {
        const chart = new MetricChart(chartsSlot, { title: metric, labels, syncKey: "compare", onZoom: zoom });
        chart.metric = metric;
        chart.setSeries(Object.fromEntries(runs.map((r) => [r.label, r.metrics.series[metric] || []])));
        return chart;
      });
      fill(grids, runs.map((r, i) => {
        const art = finalPicture(r.artifacts);
        const img = h("img", { alt: `Final picture of ${r.label}`, class: "compare-grid", dataset: { job: r.job.id } });
        if (art) artifactImage(art).then((url) => { img.src = url; }).catch(() => {});
        return h("figure", {}, art ? img : h("div", { class: "placeholder" }, "no pictures"),
          h("figcaption", {}, h("span", { class: "swatch", dataset: { color: String(i % PALETTE.length) } }), h("a", { href: `#/jobs/${r.job.id}` }, r.label), " ", stateBadge(r.job.state)));
      }));
      const keys = [...new Set(runs.flatMap((r) => Object.keys(r.job.params)))].sort();
      const differing = keys.filter((k) => new Set(runs.map((r) => JSON.stringify(r.job.params[k]))).size > 1);
      const metricNames = [...new Set(runs.flatMap((r) => Object.keys(r.job.metrics || {})))].sort();
      fill(table, h("table", { class: "kv compare" },
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, ""), runs.map((r) => h("th", { scope: "col" }, r.label)))),
        h("tbody", {},
          h("tr", { class: "section" }, h("th", { scope: "row", colspan: runs.length + 1 }, differing.length ? "Params that differ" : "No params differ")),
          differing.map((k) => h("tr", { dataset: { param: k } }, h("th", { scope: "row" }, k), runs.map((r) => h("td", { class: "mono" }, r.job.params[k] === undefined ? "—" : JSON.stringify(r.job.params[k]))))),
          h("tr", { class: "section" }, h("th", { scope: "row", colspan: runs.length + 1 }, "Final metrics")),
          metricNames.map((m) => h("tr", { dataset: { metric: m } }, h("th", { scope: "row" }, m), runs.map((r) => h("td", {}, fmtNumber((r.job.metrics || {})[m]))))),
          h("tr", {}, h("th", { scope: "row" }, "state"), runs.map((r) => h("td", {}, r.job.state))),
          h("tr", {}, h("th", { scope: "row" }, "steps done"), runs.map((r) => h("td", {}, fmtNumber(r.job.progress.step)))))));
      performance.mark("atelier:compare-ready");
    } catch (error) {
      if (!signal.aborted) status.textContent = error.status === 404 ? "One of these runs does not exist in your tenant." : `Could not load the runs: ${error.message}`;
    }
  })();
  return () => {
    controller.abort();
    charts.forEach((c) => c.destroy());
  };
}
