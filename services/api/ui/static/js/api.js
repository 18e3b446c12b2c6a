// The dashboard's only door to the API. The key lives in sessionStorage (gone when the tab
// closes) and travels only in the Authorization header: never in a URL, a cookie or a log.
// Images and downloads are fetched with the header and shown from blob: URLs for that reason.

import { parseSse } from "./sse.js";

const KEY = "atelier.apiKey";
const REQUEST_TIMEOUT_MS = 30_000;
const listeners = new Set();

export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || "http_error";
    this.field = err.field || null;
    this.retryAfter = null;
  }
}

export function getKey() {
  return sessionStorage.getItem(KEY);
}

export function setKey(key) {
  sessionStorage.setItem(KEY, key);
}

export function clearKey() {
  sessionStorage.removeItem(KEY);
}

/** Called with the ApiError whenever the API says 401: the app then asks for the key again. */
export function onUnauthorized(fn) {
  listeners.add(fn);
}

function authHeaders(extra = {}) {
  const key = getKey();
  return key ? { Authorization: `Bearer ${key}`, ...extra } : { ...extra };
}

function withQuery(path, query) {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v === undefined || v === null || v === "") continue;
    for (const item of Array.isArray(v) ? v : [v]) params.append(k, String(item));
  }
  const qs = params.toString();
  return qs ? `${path}?${qs}` : path;
}

async function raiseFor(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const error = new ApiError(response.status, body);
  error.retryAfter = response.headers.get("Retry-After");
  if (response.status === 401) listeners.forEach((fn) => fn(error));
  throw error;
}

/** fetch with the key, a deadline and the caller's abort signal. */
export async function request(path, { method = "GET", query, body, headers, signal, timeoutMs } = {}) {
  const deadline = AbortSignal.timeout(timeoutMs ?? REQUEST_TIMEOUT_MS);
  const init = {
    method,
    headers: authHeaders(headers),
    signal: signal ? AbortSignal.any([signal, deadline]) : deadline,
    credentials: "omit",
    cache: "no-store",
  };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(withQuery(path, query), init);
  if (!response.ok) await raiseFor(response);
  return response;
}

export async function json(path, options) {
  const response = await request(path, options);
  return response.json();
}

export const api = {
  jobs: (query, signal) => json("/v1/jobs", { query, signal }),
  job: (id, signal) => json(`/v1/jobs/${encodeURIComponent(id)}`, { signal }),
  /** POST a job; with `wait` (seconds) the API answers when it ends or the wait is over (Prefer: wait). */
  submit: (body, { wait, signal } = {}) => json("/v1/jobs", {
    method: "POST",
    body,
    signal,
    headers: wait ? { Prefer: `wait=${wait}` } : undefined,
    timeoutMs: wait ? (wait + 30) * 1000 : undefined,
  }),
  cancel: (id) => json(`/v1/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" }),
  deleteJob: (id) => json(`/v1/jobs/${encodeURIComponent(id)}`, { method: "DELETE" }),
  metrics: (id, query, signal) => json(`/v1/jobs/${encodeURIComponent(id)}/metrics`, { query, signal }),
  artifacts: (id, query, signal) => json(`/v1/jobs/${encodeURIComponent(id)}/artifacts`, { query, signal }),
  uploads: (query, signal) => json("/v1/uploads", { query, signal }),
  upload: (id, signal) => json(`/v1/uploads/${encodeURIComponent(id)}`, { signal }),
  models: (query, signal) => json("/v1/models", { query, signal }),
  model: (id, signal) => json(`/v1/models/${encodeURIComponent(id)}`, { signal }),
  deleteModel: (id) => request(`/v1/models/${encodeURIComponent(id)}`, { method: "DELETE" }),
  sweeps: (query, signal) => json("/v1/sweeps", { query, signal }),
  sweep: (id, signal) => json(`/v1/sweeps/${encodeURIComponent(id)}`, { signal }),
  cancelSweep: (id) => json(`/v1/sweeps/${encodeURIComponent(id)}/cancel`, { method: "POST" }),
};

/** Every artifact of a job (the list is paginated by the API). */
export async function allArtifacts(jobId, signal) {
  const items = [];
  let cursor = null;
  do {
    const page = await api.artifacts(jobId, { limit: 200, cursor }, signal);
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  return items;
}

const blobCache = new Map(); // artifact URL + sha256 -> Promise<object URL>
const BLOB_CACHE_MAX = 300;

/** An object URL for an artifact (fetched once per content hash). */
export function artifactImage(artifact) {
  const cacheKey = `${artifact.url}#${artifact.sha256}`;
  let hit = blobCache.get(cacheKey);
  if (!hit) {
    hit = request(artifact.url, { timeoutMs: 60_000 })
      .then((r) => r.blob())
      .then((b) => URL.createObjectURL(b));
    hit.catch(() => blobCache.delete(cacheKey));
    blobCache.set(cacheKey, hit);
    if (blobCache.size > BLOB_CACHE_MAX) {
      const [oldest, url] = blobCache.entries().next().value;
      blobCache.delete(oldest);
      url.then((u) => URL.revokeObjectURL(u)).catch(() => {});
    }
  }
  return hit;
}

/** An object URL for a picture the API serves under the key (a model's preview): fetched once per key. */
export function imageUrl(url, version = "") {
  return artifactImage({ url, sha256: version });
}

export async function artifactBlob(artifact) {
  const response = await request(artifact.url, { timeoutMs: 600_000 });
  return response.blob();
}

/**
 * POST /v1/uploads as multipart, reporting progress (fetch has no upload progress, XHR does).
 * Resolves with the upload, rejects with an ApiError.
 */
export function uploadFiles(files, { onProgress, signal } = {}) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    for (const f of files) form.append("files", f.blob || f, f.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/uploads");
    const key = getKey();
    if (key) xhr.setRequestHeader("Authorization", `Bearer ${key}`);
    xhr.timeout = 600_000;
    xhr.responseType = "json";
    xhr.upload.onprogress = (e) => onProgress && e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve(xhr.response);
        return;
      }
      const error = new ApiError(xhr.status, xhr.response);
      if (xhr.status === 401) listeners.forEach((fn) => fn(error));
      reject(error);
    };
    xhr.onerror = () => reject(new ApiError(0, { error: { message: "the upload could not reach the API" } }));
    xhr.ontimeout = () => reject(new ApiError(0, { error: { message: "the upload timed out" } }));
    if (signal) signal.addEventListener("abort", () => xhr.abort());
    xhr.send(form);
  });
}

/**
 * Follow a job's event stream (GET .../events) with the key in the header, which EventSource
 * cannot send. Reconnects with Last-Event-ID after a drop, with backoff, until `done`, a 4xx, or
 * the signal aborts. `onEvents(list)` gets each parsed batch {id, type, data} in id order.
 */
export async function followEvents(jobId, { after = 0, onEvents, onStatus, signal }) {
  let last = after;
  let delay = 500;
  while (!signal.aborted) {
    try {
      const response = await fetch(`/v1/jobs/${encodeURIComponent(jobId)}/events`, {
        headers: authHeaders({ Accept: "text/event-stream", "Last-Event-ID": String(last) }),
        signal,
        cache: "no-store",
        credentials: "omit",
      });
      if (!response.ok) {
        if (response.status >= 400 && response.status < 500 && response.status !== 429) await raiseFor(response);
        throw new Error(`HTTP ${response.status}`);
      }
      if (response.status === 204) {
        onStatus && onStatus("ended"); // the job has finished and its last event was seen
        return;
      }
      onStatus && onStatus("live");
      delay = 500;
      let done = false;
      for await (const batch of parseSse(response.body, signal)) {
        const fresh = batch.filter((e) => e.id > last);
        if (!fresh.length) continue;
        last = fresh[fresh.length - 1].id;
        onEvents(fresh);
        if (fresh.some((e) => e.type === "done")) done = true;
      }
      if (done) {
        onStatus && onStatus("ended");
        return;
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError) {
        onStatus && onStatus("error", error);
        return;
      }
    }
    onStatus && onStatus("reconnecting");
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 10_000);
  }
}
