// DOM building without HTML strings: every value a job carries (params, errors, names) becomes a
// text node or an attribute value, never markup. Nothing here uses innerHTML, and `on*`
// attributes are refused, so a hostile job field cannot run script (and the CSP forbids inline
// script anyway).

const PROPS = new Set(["value", "checked", "disabled", "selected", "hidden", "open", "indeterminate"]);

/** h("tag", {attr: value, ...}, child, ...): an element; children are nodes, strings or arrays of them. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) {
      if (typeof value !== "function") throw new Error(`refusing a non-function ${name}`);
      el.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (PROPS.has(name)) {
      el[name] = value;
    } else if (name === "innerHTML" || name === "style" || name === "srcdoc") {
      throw new Error(`refusing attribute ${name}`);
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export function $(selector, root = document) {
  return root.querySelector(selector);
}

let uid = 0;
/** A unique id for label/for and aria-describedby pairs. */
export function nextId(prefix = "f") {
  uid += 1;
  return `${prefix}-${uid}`;
}

export function shortId(id) {
  return String(id).slice(0, 8);
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  const hours = Math.floor(m / 60);
  return `${hours}h ${String(m % 60).padStart(2, "0")}m`;
}

export function fmtNumber(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return value.toLocaleString("en");
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e5)) return value.toExponential(2);
  return value.toPrecision(4).replace(/\.?0+$/, "");
}

export function fmtBytes(n) {
  if (!Number.isFinite(n)) return "";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

export function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString("en-GB", { hour12: false });
}

export function fmtAgo(iso) {
  if (!iso) return "";
  const s = (Date.now() - new Date(iso).getTime()) / 1000;
  if (!Number.isFinite(s)) return "";
  return s < 5 ? "just now" : `${fmtDuration(s)} ago`;
}

/** A progress bar (native <progress>, labelled) and its text. */
export function progressBar(progress, label) {
  const fraction = progress && progress.total ? progress.step / progress.total : 0;
  return h("progress", { max: 1, value: Math.min(1, Math.max(0, fraction)), "aria-label": label });
}

export function progressText(job) {
  const p = job.progress || {};
  if (!p.total) return job.state === "queued" ? "waiting for a worker" : "";
  const parts = [`${fmtNumber(p.step)} / ${fmtNumber(p.total)}`];
  if (job.state === "running" && p.eta_seconds !== null && p.eta_seconds !== undefined) {
    parts.push(`ETA ${fmtDuration(p.eta_seconds)}`);
  }
  if (job.state === "running" && p.steps_per_second) parts.push(`${fmtNumber(p.steps_per_second)} steps/s`);
  return parts.join(" · ");
}

export const TERMINAL = new Set(["succeeded", "failed", "cancelled", "stopped_early"]);

export function stateBadge(state, cancelRequested = false) {
  const text = cancelRequested && !TERMINAL.has(state) ? `${state} (cancelling)` : state;
  return h("span", { class: `badge state-${state}`, "data-state": state }, text);
}

/** What a job works on: a dataset, or its content and style pictures. */
export function jobSubject(job) {
  const p = job.params || {};
  if (job.type === "gan.train") return String(p.dataset ?? "digits");
  if (job.type === "style.transfer") {
    const styles = Array.isArray(p.styles) ? p.styles.map(String).join(" + ") : "";
    return `${p.content ?? ""} ← ${styles}`;
  }
  if (job.type === "style.train") {
    const styles = Array.isArray(p.styles) ? p.styles.map(String).join(" + ") : "";
    return `${p.content ?? "builtin"} → model of ${styles}`;
  }
  if (job.type === "style.apply") {
    const n = (job.progress && job.progress.total) || (Array.isArray(p.images) ? p.images.length : 0);
    return `${n} ${n === 1 ? "picture" : "pictures"} ← model ${shortId(p.model ?? "")}`;
  }
  if (job.type === "gan.sample") return `from ${shortId(p.source_job ?? "")}`;
  return "";
}

/** Trigger a browser download of a Blob under a file name. */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: filename, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
