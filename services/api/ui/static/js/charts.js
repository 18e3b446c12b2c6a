// Metric charts on uPlot (vendored, static/vendor/uplot). A chart holds the series it was given
// ({label: [{step, value, min, max}]}), aligns them by step, and draws them with optional
// smoothing and a log scale. Dragging across a chart asks its owner for finer buckets of that
// step range (onZoom); "Reset zoom" goes back to the whole run.

import { h, fmtNumber } from "./dom.js";

export const PALETTE = ["#2f6fdf", "#e4572e", "#17a673", "#a259d9", "#f2a541", "#1fb6c1", "#d1495b", "#6b7a8f"];
const HEIGHT = 220;
const MIN_WIDTH = 260;

/** TensorBoard's debiased exponential moving average; weight 0 returns the values as they are. */
export function smooth(values, weight) {
  if (!weight) return values;
  let last = 0;
  let n = 0;
  return values.map((v) => {
    if (v === null || !Number.isFinite(v)) return v;
    last = last * weight + (1 - weight) * v;
    n += 1;
    return last / (1 - weight ** n);
  });
}

/** uPlot's [xs, ys...]: the union of every series' steps, with nulls where a series has no point. */
export function align(seriesByLabel, labels) {
  const steps = new Set();
  for (const label of labels) for (const p of seriesByLabel[label] || []) steps.add(p.step);
  const xs = [...steps].sort((a, b) => a - b);
  const index = new Map(xs.map((s, i) => [s, i]));
  const ys = labels.map((label) => {
    const column = new Array(xs.length).fill(null);
    for (const p of seriesByLabel[label] || []) column[index.get(p.step)] = p.value;
    return column;
  });
  return [xs, ...ys];
}

export class MetricChart {
  /**
   * @param {HTMLElement} host where the chart goes
   * @param {{title: string, labels: string[], syncKey?: string, onZoom?: Function}} options
   */
  constructor(host, { title, labels, syncKey = "atelier", onZoom }) {
    this.title = title;
    this.labels = labels;
    this.syncKey = syncKey;
    this.onZoom = onZoom;
    this.series = Object.fromEntries(labels.map((l) => [l, []]));
    this.logScale = false;
    this.smoothing = 0;
    this.zoom = null; // [from, to] while zoomed
    this.zoomSeries = null;
    this.plot = null;
    this.canvasHost = h("div", { class: "chart-canvas" });
    this.status = h("p", { class: "chart-status", "aria-live": "polite" });
    this.resetButton = h("button", { type: "button", class: "small", hidden: true, onclick: () => this.resetZoom() }, "Reset zoom");
    this.el = h(
      "figure",
      { class: "chart", dataset: { chart: title, points: "0" } },
      h("figcaption", {}, h("span", { class: "chart-title" }, title), this.resetButton),
      this.canvasHost,
      this.status,
    );
    host.append(this.el);
    this.resize = new ResizeObserver(() => this.fit());
    this.resize.observe(this.canvasHost);
  }

  width() {
    return Math.max(MIN_WIDTH, Math.floor(this.canvasHost.clientWidth || MIN_WIDTH));
  }

  /** Replace every series (a full reload). */
  setSeries(seriesByLabel) {
    for (const label of this.labels) this.series[label] = [...(seriesByLabel[label] || [])];
    this.draw();
  }

  /** Add points after the last step each series has (live updates). */
  appendSeries(seriesByLabel) {
    let added = 0;
    for (const label of this.labels) {
      const points = seriesByLabel[label] || [];
      const current = this.series[label];
      const lastStep = current.length ? current[current.length - 1].step : -Infinity;
      for (const p of points) {
        if (p.step > lastStep) {
          current.push(p);
          added += 1;
        } else if (current.length && p.step === lastStep) {
          current[current.length - 1] = p; // a bucket that grew since the last read
        }
      }
    }
    if (added && !this.zoom) this.draw();
    return added;
  }

  lastStep() {
    let last = -1;
    for (const label of this.labels) {
      const s = this.series[label];
      if (s.length) last = Math.max(last, s[s.length - 1].step);
    }
    return last;
  }

  pointCount() {
    return this.labels.reduce((n, l) => n + this.series[l].length, 0);
  }

  setLogScale(on) {
    this.logScale = on;
    this.rebuild();
  }

  setSmoothing(weight) {
    this.smoothing = weight;
    this.draw();
  }

  showZoomed(range, seriesByLabel) {
    this.zoom = range;
    this.zoomSeries = seriesByLabel;
    this.resetButton.hidden = false;
    this.draw();
  }

  resetZoom() {
    this.zoom = null;
    this.zoomSeries = null;
    this.resetButton.hidden = true;
    this.rebuild();
  }

  data() {
    const source = this.zoom ? this.zoomSeries : this.series;
    const [xs, ...ys] = align(source, this.labels);
    return [xs, ...ys.map((column) => smooth(column, this.smoothing))];
  }

  draw() {
    const data = this.data();
    const total = data[0].length;
    this.el.dataset.points = String(this.pointCount());
    this.status.textContent = total ? "" : "No points yet.";
    if (!total) return;
    if (!this.plot || this.plotDistr !== this.distr(data)) {
      this.rebuild(data);
      return;
    }
    this.plot.setData(data, !this.zoom);
    if (this.zoom) this.plot.setScale("x", { min: this.zoom[0], max: this.zoom[1] });
  }

  distr(data) {
    if (!this.logScale) return 1;
    const positive = data.slice(1).every((col) => col.every((v) => v === null || v > 0));
    return positive ? 3 : 4; // log, or asinh where a series crosses zero (e.g. WGAN losses)
  }

  rebuild(data = this.data()) {
    if (this.plot) {
      this.plot.destroy();
      this.plot = null;
    }
    if (!data[0].length || !window.uPlot) return;
    const distr = this.distr(data);
    this.plotDistr = distr;
    const chart = this;
    const opts = {
      width: this.width(),
      height: HEIGHT,
      cursor: { sync: { key: this.syncKey }, drag: { x: true, y: false, setScale: false } },
      scales: { x: { time: false }, y: { distr, log: 10, asinh: 1 } },
      legend: { live: true },
      axes: [{ label: "step", size: 36 }, { size: 60, values: (u, ticks) => ticks.map(fmtNumber) }],
      series: [
        { label: "step", value: (u, v) => fmtNumber(v) },
        ...this.labels.map((label, i) => ({
          label,
          stroke: PALETTE[i % PALETTE.length],
          width: 1.5,
          spanGaps: true,
          points: { show: false },
          value: (u, v) => fmtNumber(v),
        })),
      ],
      hooks: {
        setSelect: [
          (u) => {
            if (u.select.width < 4) return;
            const from = Math.floor(u.posToVal(u.select.left, "x"));
            const to = Math.ceil(u.posToVal(u.select.left + u.select.width, "x"));
            u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
            if (to > from && chart.onZoom) chart.onZoom(chart, from, to);
          },
        ],
      },
    };
    this.plot = new window.uPlot(opts, data, this.canvasHost);
    if (this.zoom) this.plot.setScale("x", { min: this.zoom[0], max: this.zoom[1] });
  }

  fit() {
    if (this.plot) this.plot.setSize({ width: this.width(), height: HEIGHT });
  }

  destroy() {
    this.resize.disconnect();
    if (this.plot) this.plot.destroy();
    this.plot = null;
  }
}

/** The shared controls: log scale and smoothing, applied to every chart given. */
export function chartControls(getCharts) {
  const logId = "chart-log";
  const smoothId = "chart-smooth";
  const smoothValue = h("output", { for: smoothId }, "0");
  return h(
    "div",
    { class: "chart-controls" },
    h("label", { for: logId }, h("input", {
      id: logId,
      type: "checkbox",
      onchange: (e) => getCharts().forEach((c) => c.setLogScale(e.target.checked)),
    }), " Log scale"),
    h("label", { for: smoothId }, "Smoothing "),
    h("input", {
      id: smoothId,
      type: "range",
      min: 0,
      max: 0.99,
      step: 0.01,
      value: 0,
      oninput: (e) => {
        const weight = Number(e.target.value);
        smoothValue.textContent = weight.toFixed(2);
        getCharts().forEach((c) => c.setSmoothing(weight));
      },
    }),
    smoothValue,
    h("span", { class: "hint" }, "Drag across a chart to zoom in."),
  );
}
