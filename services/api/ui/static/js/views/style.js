// Style transfer: a content picture and one or more style pictures (built-in or dropped), blend
// sliders, style weight, size and "preserve colours". Run it and watch the result appear beside
// the inputs, snapshot by snapshot, on this page.

import { allArtifacts, api, artifactImage, followEvents } from "../api.js";
import { TERMINAL, fill, h, progressBar, progressText, shortId, stateBadge } from "../dom.js";
import { SchemaForm, dropZone, formError } from "../forms.js";
import { jobParams } from "../schema.js";

const TYPE = "style.transfer";
const MAIN_FIELDS = ["size", "style_weight", "steps", "preserve_colors", "preset"];
const OWN_FIELDS = ["content", "styles", "style_blend"];
const SNAPSHOT = /^(snapshots\/step-(\d+)|output)\.png$/;

export function styleView(main, route) {
  const controller = new AbortController();
  const from = route.query.get("from");
  const previews = new Map(); // upload id -> object URL of the picture dropped here
  const formErrorSlot = h("div", { id: "form-error" });
  const submit = h("button", { type: "submit", id: "run-style" }, "Run style transfer");
  const body = h("div", {}, h("p", { class: "hint" }, "Loading the job schema…"));
  const result = h("section", { class: "card", id: "style-result", hidden: true, "aria-labelledby": "result-h" });
  let form = null;
  let builtins = [];
  let contentSelect = null;
  const styleRows = h("ol", { class: "style-rows", id: "style-rows" });
  let rowCount = 0;

  fill(main,
    h("section", { class: "card" },
      h("h1", {}, from ? "Style transfer: run again with changes" : "Style transfer"),
      h("form", { id: "style-form", novalidate: true, onsubmit: onSubmit }, body, formErrorSlot, submit)),
    result);

  function pictureOptions(selected) {
    const uploaded = [...previews.keys()].map((id) => h("option", { value: id, selected: id === selected }, names.get(id) ?? `your picture ${shortId(id)}`));
    const extra = selected && !builtins.includes(selected) && !previews.has(selected) ? [h("option", { value: selected, selected: true }, `upload ${shortId(selected)}`)] : [];
    return [
      h("optgroup", { label: "Built-in" }, builtins.map((b) => h("option", { value: b, selected: b === selected }, b))),
      h("optgroup", { label: "Your pictures" }, uploaded, extra),
    ];
  }

  function addStyleRow(value, weight = 1) {
    rowCount += 1;
    const n = rowCount;
    const select = h("select", { id: `style-${n}`, class: "style-pick" }, pictureOptions(value));
    const out = h("output", { for: `blend-${n}` }, weight.toFixed(2));
    const slider = h("input", {
      type: "range", id: `blend-${n}`, class: "style-blend", min: 0, max: 1, step: 0.05, value: weight,
      oninput: () => { out.textContent = Number(slider.value).toFixed(2); },
    });
    const row = h("li", { class: "style-row" },
      h("label", { for: select.id }, `Style ${n}`), select,
      h("label", { for: slider.id }, "Blend"), slider, out,
      h("button", { type: "button", class: "small", "aria-label": `Remove style ${n}`, onclick: () => { row.remove(); } }, "Remove"));
    styleRows.append(row);
    return row;
  }

  async function onSubmit(e) {
    e.preventDefault();
    if (!form) return;
    formError(formErrorSlot, null);
    ["content", "styles", "style_blend"].forEach((n) => form.showError(n, ""));
    const { params, invalid } = form.values();
    const rows = [...styleRows.querySelectorAll(".style-row")];
    if (!rows.length) {
      form.showError("styles", "styles: add at least one style picture");
      invalid.push("styles");
    }
    if (invalid.length) {
      formError(formErrorSlot, { message: `Fix the fields marked: ${invalid.join(", ")}.` });
      return;
    }
    params.content = contentSelect.value;
    params.styles = rows.map((r) => r.querySelector("select").value);
    if (rows.length > 1) params.style_blend = rows.map((r) => Number(r.querySelector("input[type=range]").value));
    submit.disabled = true;
    try {
      const job = await api.submit({ type: TYPE, params });
      watch(job, params);
    } catch (error) {
      if (!form.showApiError(error)) formError(formErrorSlot, error);
    } finally {
      submit.disabled = false;
    }
  }

  const names = new Map(); // upload id -> the file name it was dropped as

  function picture(ref, label) {
    const url = previews.get(ref);
    return h("figure", { class: "input-picture" },
      url ? h("img", { src: url, alt: label }) : h("div", { class: "placeholder" }, ref),
      h("figcaption", {}, label));
  }

  function watch(job, params) {
    const output = h("img", { id: "style-output", alt: "Result (waiting for the first snapshot)" });
    const caption = h("figcaption", { id: "style-output-caption" }, "Waiting for the first snapshot…");
    const status = h("div", { class: "progress-block" });
    const state = h("span", {});
    const render = (j) => {
      fill(state, stateBadge(j.state, j.cancel_requested));
      fill(status, progressBar(j.progress, "Style transfer progress"), h("span", { class: "progress-text" }, progressText(j)),
        j.error ? h("div", { class: "error-box", role: "alert" }, `${j.error.code}: ${j.error.message}`) : "");
    };
    fill(result,
      h("div", { class: "title-row" }, h("h2", { id: "result-h" }, "Result"), state, h("a", { href: `#/jobs/${job.id}` }, `Open job ${shortId(job.id)}`)),
      status,
      h("div", { class: "side-by-side" },
        picture(params.content, `Content: ${names.get(params.content) ?? params.content}`),
        params.styles.map((s, i) => picture(s, `Style ${i + 1}: ${names.get(s) ?? s}`)),
        h("figure", { class: "output-picture" }, output, caption)));
    result.hidden = false;
    render(job);
    let shown = -1;
    let timer = null;
    const refresh = async () => {
      timer = null;
      const [j, artifacts] = await Promise.all([api.job(job.id, controller.signal), allArtifacts(job.id, controller.signal)]);
      render(j);
      const latest = artifacts
        .map((a) => ({ a, m: a.name.match(SNAPSHOT) }))
        .filter((x) => x.m)
        .map((x) => ({ a: x.a, step: x.m[2] === undefined ? Infinity : Number(x.m[2]) }))
        .sort((x, y) => x.step - y.step)
        .pop();
      if (latest && latest.step !== shown) {
        shown = latest.step;
        output.src = await artifactImage(latest.a);
        output.dataset.name = latest.a.name;
        output.alt = latest.step === Infinity ? "Result" : `Snapshot at step ${latest.step}`;
        caption.textContent = latest.step === Infinity ? "Result" : `Snapshot at step ${latest.step}`;
      }
      if (TERMINAL.has(j.state)) result.dataset.done = j.state;
    };
    followEvents(job.id, {
      after: 0,
      signal: controller.signal,
      onEvents: (events) => {
        if (events.some((e) => e.type !== "metrics") && !timer) timer = setTimeout(() => refresh().catch(() => {}), 300);
      },
    });
    result.scrollIntoView({ block: "nearest" });
  }

  (async () => {
    try {
      const [{ properties }, source] = await Promise.all([jobParams(TYPE), from ? api.job(from, controller.signal) : null]);
      builtins = properties.content["x-builtins"] || [];
      form = new SchemaForm(properties);
      contentSelect = h("select", { id: "field-content", "aria-describedby": "error-content" }, pictureOptions(source ? source.params.content : builtins[0]));
      const contentError = h("p", { class: "field-error", id: "error-content", "aria-live": "polite" });
      const stylesError = h("p", { class: "field-error", id: "error-styles", "aria-live": "polite" });
      form.fields.set("content", { get: () => null, set: () => {}, error: contentError, control: contentSelect, schema: properties.content });
      form.fields.set("styles", { get: () => null, set: () => {}, error: stylesError, control: styleRows, schema: properties.styles });
      form.fields.set("style_blend", { get: () => null, set: () => {}, error: stylesError, control: styleRows, schema: properties.style_blend || {} });
      const refreshPickers = () => {
        const keep = contentSelect.value;
        fill(contentSelect, pictureOptions(keep));
        styleRows.querySelectorAll("select").forEach((s) => {
          const v = s.value;
          fill(s, pictureOptions(v));
        });
      };
      const contentDrop = dropZone({
        id: "content-drop", label: "Drop a content picture", multiple: false, folders: false, each: true, accept: "image/*",
        onUploaded: (upload, file) => {
          previews.set(upload.id, URL.createObjectURL(file));
          names.set(upload.id, file.name);
          refreshPickers();
          contentSelect.value = upload.id;
        },
      });
      const styleDrop = dropZone({
        id: "style-drop", label: "Drop one or more style pictures", folders: false, each: true, accept: "image/*",
        onUploaded: (upload, file) => {
          previews.set(upload.id, URL.createObjectURL(file));
          names.set(upload.id, file.name);
          refreshPickers();
          addStyleRow(upload.id);
        },
      });
      const advanced = Object.keys(properties).filter((n) => !MAIN_FIELDS.includes(n) && !OWN_FIELDS.includes(n)).map((n) => form.field(n));
      fill(body,
        h("div", { class: "field" }, h("label", { for: "field-content" }, "Content picture"), contentSelect, contentError, contentDrop),
        h("fieldset", { class: "field" }, h("legend", {}, "Style pictures and blend"), styleRows,
          h("button", { type: "button", class: "small", id: "add-style", onclick: () => addStyleRow(builtins[1] || builtins[0]) }, "Add a built-in style"),
          stylesError, styleDrop),
        h("div", { class: "fields" }, MAIN_FIELDS.map((n) => form.field(n))),
        h("details", {}, h("summary", {}, "Advanced: network, layers, optimiser"), h("div", { class: "fields" }, advanced)));
      if (source) {
        if (source.type !== TYPE) throw new Error(`job ${from} is a ${source.type}, not a ${TYPE}`);
        source.params.styles.forEach((s, i) => addStyleRow(s, (source.params.style_blend || [])[i] ?? 1));
        for (const [name, value] of Object.entries(source.params)) if (!OWN_FIELDS.includes(name)) form.set(name, value);
      }
    } catch (error) {
      if (!controller.signal.aborted) formError(formErrorSlot, error);
    }
  })();

  return () => {
    controller.abort();
    previews.forEach((url) => URL.revokeObjectURL(url));
  };
}
