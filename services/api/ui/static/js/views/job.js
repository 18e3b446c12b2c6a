// Job: progress and ETA, live charts from the event stream, every sample grid of the run behind a
// slider, the interpolation strip, warnings, the error, artifacts with downloads, cancel, and
// "run again with changes". Metric events are notifications: the page then asks the API for the
// points after the last step it has, at most once a second, so a burst costs one small read.

import { allArtifacts, api, artifactBlob, artifactImage, followEvents } from "../api.js";
import { MetricChart, chartControls } from "../charts.js";
import {
  TERMINAL, fill, fmtBytes, fmtNumber, fmtTime, h, jobSubject, progressBar, progressText, saveBlob, shortId,
  stateBadge,
} from "../dom.js";

export const MAX_POINTS = 600;
const RELOAD_AFTER_POINTS = 4 * MAX_POINTS; // live appends past this: re-read the whole run downsampled
const REFRESH_MS = 1000;
const ARTIFACT_ROWS = 20;

export const CHART_GROUPS = [
  { title: "Losses", names: ["d_loss", "g_loss"] },
  { title: "D(x) and D(G(z))", names: ["d_real", "d_fake"] },
  { title: "Gradient norms", names: ["grad_norm_d", "grad_norm_g"] },
  { title: "Learning rates", names: ["lr_d", "lr_g", "lr"] },
  { title: "Mode coverage", names: ["modes", "hq_share"] },
  { title: "Fréchet distance and KID", names: ["fd", "kid"] },
  { title: "Precision and recall", names: ["precision", "recall"] },
  { title: "Class coverage", names: ["class_kl", "class_confidence"] },
  { title: "Style transfer losses", names: ["total_loss", "content_loss", "style_loss", "tv_loss"] },
];
const GRID_PATTERN = /^(samples|snapshots|previews)\/step-(\d+)\.png$/;
const FEATURED = {
  "samples/final.png": "Final samples",
  "samples/interpolation.png": "Latent interpolation",
  "output.png": "Result",
  "samples.png": "Samples",
  "preview.png": "Final preview",
};
const GRID_KINDS = { "snapshots/": "Snapshot", "previews/": "Preview" };

/** The chart groups for a run's metric names; names no group claims get a chart each. */
export function groupsFor(names) {
  const claimed = new Set();
  const groups = [];
  for (const g of CHART_GROUPS) {
    const present = g.names.filter((n) => names.includes(n));
    present.forEach((n) => claimed.add(n));
    if (present.length) groups.push({ title: g.title, names: present });
  }
  for (const n of names) if (!claimed.has(n)) groups.push({ title: n, names: [n] });
  return groups;
}

function image(artifact, alt, attrs = {}) {
  const img = h("img", { alt, dataset: { name: artifact.name }, ...attrs });
  artifactImage(artifact).then((url) => {
    if (img.dataset.name === artifact.name) img.src = url;
  }).catch(() => {
    img.alt = `${alt} (could not load)`;
  });
  return img;
}

export function jobView(main, route) {
  const jobId = route.params[0];
  const controller = new AbortController();
  const { signal } = controller;
  let job = null;
  let charts = [];
  let artifacts = [];
  let grids = [];
  let followLatest = true;
  let refreshTimer = null;
  let pending = { job: false, metrics: false, artifacts: false };
  let chartsReady = false;
  let showAllArtifacts = false;

  const heading = h("h1", {}, `Job ${shortId(jobId)}`);
  const stateSlot = h("span", { id: "job-state" });
  const actions = h("div", { class: "actions" });
  const progressSlot = h("div", { class: "progress-block", id: "job-progress" });
  const errorSlot = h("div", { id: "job-error" });
  const warningsSlot = h("div", { id: "job-warnings" });
  const summary = h("dl", { class: "summary" });
  const chartsSlot = h("div", { class: "charts", id: "charts" });
  const gridSlot = h("div", { class: "grid-viewer", id: "grid-viewer" });
  const featuredSlot = h("div", { class: "featured" });
  const artifactsSlot = h("div", { id: "artifacts" });
  const paramsSlot = h("div", {});
  const stream = h("span", { class: "hint", id: "stream-status", "aria-live": "polite" });

  fill(
    main,
    h("section", { class: "card" },
      h("div", { class: "title-row" }, heading, stateSlot, stream),
      actions, progressSlot, errorSlot, warningsSlot, summary),
    h("section", { class: "card", "aria-labelledby": "charts-h" },
      h("h2", { id: "charts-h" }, "Metrics"),
      chartControls(() => charts),
      chartsSlot),
    h("section", { class: "card", "aria-labelledby": "pictures-h" }, h("h2", { id: "pictures-h" }, "Pictures"), gridSlot, featuredSlot),
    h("section", { class: "card", "aria-labelledby": "artifacts-h" }, h("h2", { id: "artifacts-h" }, "Artifacts"), artifactsSlot),
    h("section", { class: "card" }, h("details", {}, h("summary", {}, "Parameters"), paramsSlot)),
  );

  function renderJob() {
    heading.textContent = `${job.type} ${shortId(job.id)}`;
    fill(stateSlot, stateBadge(job.state, job.cancel_requested));
    fill(progressSlot, progressBar(job.progress, "Progress"), h("span", { class: "progress-text" }, progressText(job)));
    fill(errorSlot, job.error
      ? h("div", { class: "error-box", role: "alert" }, h("strong", {}, job.error.code), ": ", job.error.message)
      : job.early_stop
        ? h("div", { class: "note-box", id: "job-early-stop" }, h("strong", {}, "Stopped early"), ": ", job.early_stop.message)
        : "");
    fill(warningsSlot, job.warnings.length
      ? h("ul", { class: "warnings", "aria-label": "Warnings" }, job.warnings.map((w) => h("li", {}, w)))
      : "");
    const items = [
      ["Subject", jobSubject(job)],
      ["Attempt", `${job.attempt} of ${job.max_attempts}${job.handbacks ? ` (+${job.handbacks} handed back)` : ""}`],
      ["Worker", job.worker || "—"],
      ["Priority", job.priority || "normal"],
      ["Created", fmtTime(job.created_at)],
      ["Started", fmtTime(job.started_at) || "—"],
      ["Finished", fmtTime(job.finished_at) || "—"],
    ];
    if (job.queueing) items.splice(1, 0, ["Waiting", `about #${job.queueing.position} in its queue: ${job.queueing.reason}`]);
    if (job.sweep_id) items.splice(1, 0, ["Sweep", h("a", { href: `#/sweeps/${job.sweep_id}`, class: "mono" }, shortId(job.sweep_id))]);
    if (job.resumed_from_step !== null) items.push(["Resumed from step", fmtNumber(job.resumed_from_step)]);
    if (job.checkpoint) items.push(["Checkpoint", `step ${fmtNumber(job.checkpoint.step)}`]);
    fill(summary, items.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    renderActions();
    fill(paramsSlot, h("table", { class: "kv" }, h("tbody", {}, Object.entries(job.params).map(([k, v]) =>
      h("tr", {}, h("th", { scope: "row" }, k), h("td", { class: "mono" }, JSON.stringify(v)))))));
  }

  function renderActions() {
    const again = { "gan.train": "#/new/gan", "style.transfer": "#/new/style", "style.train": "#/new/style-model" }[job.type];
    const buttons = [];
    if (!TERMINAL.has(job.state) && !job.cancel_requested) {
      const confirmBox = h("span", { class: "confirm", hidden: true },
        "Cancel this job? ",
        h("button", { type: "button", class: "danger", id: "confirm-cancel", onclick: doCancel }, "Yes, cancel it"),
        h("button", { type: "button", onclick: () => { confirmBox.hidden = true; ask.hidden = false; ask.focus(); } }, "Keep it running"));
      const ask = h("button", { type: "button", id: "cancel-job", onclick: () => {
        ask.hidden = true;
        confirmBox.hidden = false;
        confirmBox.querySelector("button").focus();
      } }, "Cancel job");
      buttons.push(ask, confirmBox);
    }
    if (again) buttons.push(h("a", { class: "button", id: "run-again", href: `${again}?from=${job.id}` }, "Run again with changes"));
    if (job.type === "style.train" && job.state === "succeeded") {
      buttons.push(h("a", { class: "button", id: "apply-model", href: `#/apply?model=${job.id}` }, "Apply this model"));
    }
    if (job.type === "style.apply" && job.params && job.params.model) {
      buttons.push(h("a", { class: "button", href: `#/apply?model=${job.params.model}` }, "Apply the model again"));
    }
    if (job.type === "gan.train") buttons.push(h("a", { class: "button", href: `#/compare?ids=${job.id}` }, "Compare with…"));
    const sure = h("span", { class: "confirm", hidden: true },
      TERMINAL.has(job.state) ? "Delete this job and everything it made? " : "Stop this job and delete everything it made? ",
      h("button", { type: "button", class: "danger", id: "confirm-delete", onclick: doDelete }, "Yes, delete it"),
      h("button", { type: "button", onclick: () => { sure.hidden = true; del.hidden = false; del.focus(); } }, "Keep it"));
    const del = h("button", { type: "button", class: "danger", id: "delete-job", onclick: () => {
      del.hidden = true;
      sure.hidden = false;
      sure.querySelector("button").focus();
    } }, "Delete job");
    buttons.push(del, sure);
    fill(actions, buttons);
  }

  async function doDelete() {
    try {
      await api.deleteJob(jobId);
      location.hash = "#/jobs";
    } catch (error) {
      fill(errorSlot, h("div", { class: "error-box", role: "alert" }, `Could not delete: ${error.message}`));
    }
  }

  async function doCancel() {
    try {
      job = await api.cancel(jobId);
      renderJob();
    } catch (error) {
      fill(errorSlot, h("div", { class: "error-box", role: "alert" }, `Could not cancel: ${error.message}`));
    }
  }

  async function loadMetrics() {
    const result = await api.metrics(jobId, { max_points: MAX_POINTS }, signal);
    const groups = groupsFor(result.names);
    const titles = groups.map((g) => g.title).join("|");
    if (titles !== charts.map((c) => c.title).join("|")) {
      charts.forEach((c) => c.destroy());
      chartsSlot.replaceChildren();
      charts = groups.map((g) => new MetricChart(chartsSlot, { title: g.title, labels: g.names, onZoom: zoom }));
    }
    charts.forEach((c) => c.setSeries(result.series));
    if (!charts.length) fill(chartsSlot, h("p", { class: "hint" }, "No metrics yet."));
    if (charts.length && !chartsReady) {
      chartsReady = true;
      performance.mark("atelier:charts-ready");
      document.documentElement.dataset.ready = "charts";
    }
  }

  async function appendMetrics() {
    if (!charts.length || charts.some((c) => c.pointCount() > RELOAD_AFTER_POINTS)) {
      await loadMetrics();
      return;
    }
    // Every series is flushed together per step, so the newest step any chart has bounds them all.
    const since = Math.max(...charts.map((c) => c.lastStep()));
    const result = await api.metrics(jobId, { since_step: since, max_points: MAX_POINTS }, signal);
    const known = new Set(charts.flatMap((c) => c.labels));
    if (result.names.some((n) => !known.has(n))) {
      await loadMetrics(); // a new metric (e.g. the first evaluation): new charts
      return;
    }
    charts.forEach((c) => c.appendSeries(result.series));
  }

  async function zoom(chart, from, to) {
    try {
      const result = await api.metrics(
        jobId,
        { names: chart.labels.join(","), since_step: Math.max(-1, from - 1), until_step: to, max_points: MAX_POINTS },
        signal,
      );
      chart.showZoomed([from, to], result.series);
    } catch (error) {
      chart.status.textContent = `Could not zoom: ${error.message}`;
    }
  }

  function renderGrids() {
    grids = artifacts
      .map((a) => ({ a, m: a.name.match(GRID_PATTERN) }))
      .filter((x) => x.m)
      .map((x) => ({ artifact: x.a, step: Number(x.m[2]) }))
      .sort((x, y) => x.step - y.step);
    if (!grids.length) {
      fill(gridSlot, h("p", { class: "hint" }, TERMINAL.has(job?.state) ? "This run saved no sample grids." : "The first sample grid appears after the first sampling step."));
      return;
    }
    let slider = gridSlot.querySelector("input[type=range]");
    if (!slider) {
      slider = h("input", {
        type: "range",
        id: "grid-slider",
        min: 0,
        step: 1,
        "aria-label": "Sample grid at step",
        oninput: () => {
          followLatest = Number(slider.value) === grids.length - 1;
          showGrid(Number(slider.value));
        },
      });
      fill(gridSlot,
        h("figure", {}, h("img", { id: "sample-grid", alt: "Sample grid" }), h("figcaption", { id: "grid-caption" })),
        h("label", { for: "grid-slider" }, "Step "), slider);
    }
    slider.max = String(grids.length - 1);
    if (followLatest) slider.value = String(grids.length - 1);
    showGrid(Number(slider.value));
  }

  function showGrid(i) {
    const entry = grids[Math.min(i, grids.length - 1)];
    const img = gridSlot.querySelector("#sample-grid");
    const caption = gridSlot.querySelector("#grid-caption");
    const kind = Object.entries(GRID_KINDS).find(([prefix]) => entry.artifact.name.startsWith(prefix))?.[1] ?? "Samples";
    caption.textContent = `${kind} at step ${fmtNumber(entry.step)} (${i + 1} of ${grids.length})`;
    if (img.dataset.name === entry.artifact.name) return;
    img.dataset.name = entry.artifact.name;
    img.alt = `${kind} at step ${entry.step}`;
    artifactImage(entry.artifact).then((url) => {
      if (img.dataset.name === entry.artifact.name) img.src = url;
    }).catch(() => {});
  }

  function renderArtifacts() {
    renderGrids();
    const featured = artifacts.filter((a) => a.name in FEATURED);
    fill(featuredSlot, featured.map((a) => h("figure", { class: "featured-item" }, image(a, FEATURED[a.name], { id: `art-${a.name.replace(/\W/g, "-")}` }), h("figcaption", {}, FEATURED[a.name]))));
    if (!artifacts.length) {
      fill(artifactsSlot, h("p", { class: "hint" }, "No artifacts yet."));
      return;
    }
    // Grids and snapshots can number hundreds: the table shows every other artifact and the newest
    // ARTIFACT_ROWS of those (the slider above shows them all), unless asked for all.
    const series = artifacts.filter((a) => GRID_PATTERN.test(a.name));
    const shown = showAllArtifacts
      ? artifacts
      : [...artifacts.filter((a) => !GRID_PATTERN.test(a.name)), ...series.slice(-ARTIFACT_ROWS)];
    const more = artifacts.length - shown.length;
    fill(artifactsSlot, h("div", { class: "table-wrap" }, h("table", { class: "artifacts" },
      h("thead", {}, h("tr", {}, ["Name", "Kind", "Size", ""].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, shown.map((a) => h("tr", {},
        h("td", { class: "mono" }, a.name),
        h("td", {}, a.kind),
        h("td", {}, fmtBytes(a.size)),
        h("td", {}, h("button", {
          type: "button",
          class: "small",
          "aria-label": `Download ${a.name}`,
          onclick: async (e) => {
            e.target.disabled = true;
            try {
              saveBlob(await artifactBlob(a), a.name.split("/").pop());
            } finally {
              e.target.disabled = false;
            }
          },
        }, "Download"))))))),
    more > 0 ? h("button", { type: "button", class: "small", id: "all-artifacts", onclick: () => { showAllArtifacts = true; renderArtifacts(); } }, `Show all ${artifacts.length} artifacts`) : null);
  }

  async function refresh() {
    refreshTimer = null;
    const want = pending;
    pending = { job: false, metrics: false, artifacts: false };
    try {
      const work = [];
      if (want.job) work.push(api.job(jobId, signal).then((j) => { job = j; renderJob(); }));
      if (want.metrics) work.push(appendMetrics());
      if (want.artifacts) work.push(allArtifacts(jobId, signal).then((list) => { artifacts = list; renderArtifacts(); }));
      await Promise.all(work);
    } catch (error) {
      if (!signal.aborted) stream.textContent = `Update failed: ${error.message}`;
    }
  }

  function schedule(what) {
    Object.assign(pending, what);
    if (!refreshTimer) refreshTimer = setTimeout(refresh, REFRESH_MS);
  }

  function onEvents(events) {
    const what = {};
    for (const e of events) {
      if (e.type === "metrics") what.metrics = true;
      else if (e.type === "artifact") what.artifacts = true;
      else if (e.type === "progress" && job) {
        Object.assign(job.progress, {
          step: e.data.step,
          total: e.data.total,
          steps_per_second: e.data.steps_per_second,
          eta_seconds: e.data.eta_seconds,
        });
        fill(progressSlot, progressBar(job.progress, "Progress"), h("span", { class: "progress-text" }, progressText(job)));
      } else what.job = true;
      if (e.type === "done") Object.assign(what, { job: true, metrics: true, artifacts: true });
    }
    if (Object.keys(what).length) schedule(what);
  }

  (async () => {
    try {
      // The three reads go out together: the charts need no field of the job.
      const [first, , list] = await Promise.all([api.job(jobId, signal), loadMetrics(), allArtifacts(jobId, signal)]);
      job = first;
      renderJob();
      artifacts = list;
      renderArtifacts();
      if (TERMINAL.has(job.state)) return; // it has ended: nothing more will come
      const statusText = { live: "● live", reconnecting: "reconnecting…", ended: "" };
      followEvents(jobId, {
        after: job.last_event_id, // what came before is in what was just read
        signal,
        onEvents,
        onStatus: (s, error) => {
          stream.textContent = s === "error" ? `Live updates stopped: ${error.message}` : statusText[s] ?? "";
        },
      });
    } catch (error) {
      if (signal.aborted) return;
      fill(main, h("section", { class: "card" }, h("h1", {}, error.status === 404 ? "Job not found" : "Could not load the job"),
        h("p", {}, error.status === 404 ? `No job ${jobId} in your tenant.` : error.message), h("a", { href: "#/jobs" }, "Back to jobs")));
    }
  })();

  return () => {
    controller.abort();
    clearTimeout(refreshTimer);
    charts.forEach((c) => c.destroy());
  };
}
