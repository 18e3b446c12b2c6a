// Apply a style model (style.apply): pick a model, drop pictures (one upload) or tick built-in
// ones, set the size and, for a johnson model, the strength; for an adain model the style pictures,
// their blend and alpha. "Apply" submits with Prefer: wait, so a short job answers in one request;
// one still running after the wait is followed on its event stream. The result shows beside the
// inputs: output.png as a picture, outputs.zip as a download.

import { allArtifacts, api, artifactBlob, artifactImage, followEvents, imageUrl } from "../api.js";
import {
  TERMINAL, fill, fmtNumber, h, progressBar, progressText, saveBlob, shortId, stateBadge,
} from "../dom.js";
import { SchemaForm, dropZone, formError, titleOf } from "../forms.js";
import { Pictures, styleList } from "../pictures.js";
import { jobParams } from "../schema.js";
import { styleLoss } from "./models.js";

const TYPE = "style.apply";
const WAIT_S = 60;
const MODELS_LISTED = 100;
const PREVIEWS_PER_UPLOAD = 6;
const PICTURE_ARCHIVES = "image/*,.zip,.tar,.tgz,.gz,.bz2,.xz";
const CUSTOM_FIELDS = ["model", "images", "strength", "styles", "style_blend", "alpha", "preserve_colors"];

function modelLabel(m, pictures) {
  const styles = m.styles.map((s) => pictures.label(s)).join(" + ");
  return `${styles} — ${m.method}, ${m.size} px, ${fmtNumber(m.steps)} steps (${shortId(m.id)})`;
}

export function applyView(main, route) {
  const controller = new AbortController();
  const { signal } = controller;
  const objectUrls = [];
  const formErrorSlot = h("div", { id: "form-error" });
  const submit = h("button", { type: "submit", id: "apply-run" }, "Apply");
  const body = h("div", {}, h("p", { class: "hint" }, "Loading your models…"));
  const result = h("section", { class: "card", id: "apply-result", hidden: true, "aria-labelledby": "apply-result-h" });
  let form = null;
  let pictures = null;
  let models = [];
  let current = null;
  let modelSelect = null;
  let modelInfo = null;
  let johnson = null;
  let adain = null;
  let styles = null;
  let strength = null;
  let alpha = null;
  let preserve = null;
  let builtinBoxes = [];
  let batchList = null;
  const batches = []; // {upload, previews: [{url, name}]}: the pictures dropped here, one upload each drop
  let pending = [];
  let runs = 0;
  let followAbort = null;

  fill(main,
    h("section", { class: "card" },
      h("div", { class: "title-row" }, h("h1", {}, "Apply a style model"), h("a", { href: "#/models" }, "Your models")),
      h("form", { id: "apply-form", novalidate: true, onsubmit: onSubmit }, body, formErrorSlot, submit)),
    result);

  function localUrl(file) {
    const url = URL.createObjectURL(file);
    objectUrls.push(url);
    return url;
  }

  function slider(name, label, value, description) {
    const id = `field-${name}`;
    const out = h("output", { for: id, id: `${id}-value` }, Number(value).toFixed(2));
    const input = h("input", {
      type: "range", id, name, min: 0, max: 1, step: 0.05, value, "aria-describedby": `help-${name} error-${name}`,
      oninput: () => { out.textContent = Number(input.value).toFixed(2); },
    });
    const error = h("p", { class: "field-error", id: `error-${name}`, "aria-live": "polite" });
    const el = h("div", { class: "field", dataset: { field: name } },
      h("label", { for: id }, label),
      h("div", { class: "slider-row" }, input, out),
      h("p", { class: "hint", id: `help-${name}` }, description || ""),
      error);
    return { el, input, error };
  }

  function stub(error, control, name) {
    form.fields.set(name, { get: () => null, set: () => {}, error, control, schema: form.properties[name] || {} });
  }

  function chosenImages() {
    return [...batches.map((b) => b.upload.id), ...builtinBoxes.filter((b) => b.checked).map((b) => b.value)];
  }

  function renderBatches() {
    fill(batchList, batches.map((b, i) => h("li", { class: "batch", dataset: { uploadId: b.upload.id } },
      h("div", { class: "thumbs" }, b.previews.map((p) => h("img", { src: p.url, alt: p.name }))),
      h("span", {}, `${b.upload.filename}: ${b.upload.file_count} ${b.upload.file_count === 1 ? "picture" : "pictures"}`),
      h("button", { type: "button", class: "small", "aria-label": `Remove ${b.upload.filename}`, onclick: () => { batches.splice(i, 1); renderBatches(); } }, "Remove"))));
  }

  function renderModelInfo() {
    if (!current) {
      fill(modelInfo, "");
      return;
    }
    const img = current.preview ? h("img", { id: "apply-model-preview", class: "model-preview", alt: `Preview of model ${shortId(current.id)}` }) : null;
    if (img) {
      const id = current.id;
      imageUrl(current.preview, id).then((url) => { if (current && current.id === id) img.src = url; }).catch(() => {});
    }
    fill(modelInfo, img, h("div", {},
      h("p", {}, h("strong", {}, current.method), ` model of ${current.styles.map((s) => pictures.label(s)).join(" + ")}`),
      h("p", { class: "hint" }, `Trained at ${current.size} px for ${fmtNumber(current.steps)} steps · final style loss ${styleLoss(current)} · `,
        h("a", { href: `#/jobs/${current.source_job}` }, "training job"))));
  }

  function chooseModel(id, { updateUrl = true } = {}) {
    current = models.find((m) => m.id === id) || null;
    if (current) modelSelect.value = current.id;
    const isAdain = current && current.method === "adain";
    johnson.hidden = !current || isAdain;
    adain.hidden = !isAdain;
    if (isAdain && !styles.values().length) styles.add(pictures.builtins[1] || pictures.builtins[0]);
    renderModelInfo();
    if (updateUrl && current) history.replaceState(null, "", `#/apply?model=${current.id}`);
  }

  async function onSubmit(e) {
    e.preventDefault();
    if (!form) return;
    formError(formErrorSlot, null);
    CUSTOM_FIELDS.forEach((n) => form.showError(n, ""));
    const { params, invalid } = form.values();
    if (!current) {
      form.showError("model", "model: choose a model (train one first if you have none)");
      invalid.push("model");
    }
    const images = chosenImages();
    if (!images.length) {
      form.showError("images", "images: drop or choose at least one picture, or tick a built-in one");
      invalid.push("images");
    }
    const chosenStyles = current && current.method === "adain" ? styles.values() : [];
    if (current && current.method === "adain" && !chosenStyles.length) {
      form.showError("styles", "styles: an adain model needs at least one style picture");
      invalid.push("styles");
    }
    if (invalid.length) {
      form.focus(invalid[0]);
      formError(formErrorSlot, { message: `Fix ${invalid.length === 1 ? "the field" : "the fields"} marked: ${invalid.join(", ")}.` });
      return;
    }
    params.model = current.id;
    params.images = images;
    params.preserve_colors = preserve.checked;
    if (current.method === "adain") {
      params.styles = chosenStyles.map((s) => s.ref);
      if (chosenStyles.length > 1) params.style_blend = chosenStyles.map((s) => s.weight);
      params.alpha = Number(alpha.input.value);
    } else {
      params.strength = Number(strength.input.value);
    }
    runs += 1;
    const run = runs;
    if (followAbort) followAbort.abort();
    const inputs = inputFigures(images);
    submit.disabled = true;
    showPending(inputs, params);
    let job;
    try {
      job = await api.submit({ type: TYPE, params }, { wait: WAIT_S, signal });
    } catch (error) {
      if (signal.aborted || run !== runs) return;
      result.hidden = true;
      if (!form.showApiError(error)) formError(formErrorSlot, error);
      submit.disabled = false;
      return;
    }
    submit.disabled = false;
    if (run !== runs) return;
    follow(job, run, inputs);
  }

  function inputFigures(images) {
    const figures = [];
    for (const ref of images) {
      const batch = batches.find((b) => b.upload.id === ref);
      if (!batch) {
        figures.push(pictures.figure(ref, `Built-in: ${ref}`));
        continue;
      }
      batch.previews.forEach((p) => figures.push(h("figure", { class: "input-picture" }, h("img", { src: p.url, alt: p.name }), h("figcaption", {}, p.name))));
      const more = batch.upload.file_count - batch.previews.length;
      if (more > 0) {
        figures.push(h("figure", { class: "input-picture" }, h("div", { class: "placeholder" }, `${batch.upload.filename}: ${more} more`), h("figcaption", {}, batch.upload.filename)));
      }
    }
    return figures;
  }

  // The result card's parts, rebuilt for each run.
  let stateSlot;
  let statusSlot;
  let errorSlot;
  let outputSlot;
  let jobLink;

  function showPending(inputs) {
    stateSlot = h("span", { id: "apply-state" });
    statusSlot = h("div", { class: "progress-block", id: "apply-status", "aria-live": "polite" },
      h("span", { class: "spinner", "aria-hidden": "true" }),
      h("span", {}, `Applying… the answer comes when it is done (up to ${WAIT_S} s).`));
    errorSlot = h("div", { id: "apply-error" });
    outputSlot = h("figure", { class: "output-picture", id: "apply-output-figure" },
      h("div", { class: "placeholder" }, h("span", { class: "spinner", "aria-hidden": "true" })),
      h("figcaption", {}, "Result"));
    jobLink = h("span", {});
    delete result.dataset.done;
    fill(result,
      h("div", { class: "title-row" }, h("h2", { id: "apply-result-h" }, "Result"), stateSlot, jobLink),
      statusSlot,
      errorSlot,
      h("div", { class: "side-by-side", id: "apply-pictures" }, inputs, outputSlot));
    result.hidden = false;
    result.dataset.busy = "true";
    result.scrollIntoView({ block: "nearest" });
  }

  function render(job) {
    fill(stateSlot, stateBadge(job.state, job.cancel_requested));
    fill(jobLink, h("a", { href: `#/jobs/${job.id}` }, `Open job ${shortId(job.id)}`));
    if (!TERMINAL.has(job.state)) {
      fill(statusSlot, h("span", { class: "spinner", "aria-hidden": "true" }),
        progressBar(job.progress, "Style model progress"),
        h("span", { class: "progress-text" }, progressText(job) || `still ${job.state} after ${WAIT_S} s: following it…`));
    }
  }

  function follow(job, run, inputs) {
    render(job);
    if (TERMINAL.has(job.state)) {
      finish(job, run, inputs).catch((error) => showError(run, `Could not load the result: ${error.message}`));
      return;
    }
    followAbort = new AbortController();
    const followSignal = AbortSignal.any([signal, followAbort.signal]);
    let timer = null;
    let finished = false;
    const refresh = async () => {
      timer = null;
      if (finished || followSignal.aborted) return;
      const j = await api.job(job.id, followSignal);
      if (run !== runs) return;
      render(j);
      if (TERMINAL.has(j.state)) {
        finished = true;
        followAbort.abort();
        await finish(j, run, inputs);
      }
    };
    const schedule = (ms = 300) => {
      if (!timer) timer = setTimeout(() => refresh().catch((error) => { if (!followSignal.aborted) showError(run, error.message); }), ms);
    };
    followEvents(job.id, {
      after: job.last_event_id ?? 0,
      signal: followSignal,
      onEvents: (events) => {
        if (events.some((e) => e.type !== "metrics")) schedule();
      },
      onStatus: (s) => {
        if (s === "ended") schedule(0);
        if (s === "error") schedule(2000);
      },
    });
  }

  function showError(run, message) {
    if (run !== runs) return;
    fill(errorSlot, h("div", { class: "error-box", role: "alert" }, message));
  }

  async function finish(job, run, inputs) {
    if (run !== runs) return;
    fill(statusSlot, "");
    delete result.dataset.busy;
    if (job.state !== "succeeded") {
      fill(errorSlot, h("div", { class: "error-box", role: "alert" },
        job.error ? [h("strong", {}, job.error.code), ": ", job.error.message] : `The job was ${job.state}.`));
      fill(outputSlot, h("div", { class: "placeholder" }, "No result"), h("figcaption", {}, "Result"));
      result.dataset.done = job.state;
      return;
    }
    const artifacts = await allArtifacts(job.id, signal);
    if (run !== runs) return;
    const single = artifacts.find((a) => a.name === "output.png");
    const batch = artifacts.find((a) => a.name === "outputs.zip");
    if (single) {
      const img = h("img", { id: "apply-output", alt: "Styled picture", dataset: { name: single.name } });
      fill(outputSlot, img, h("figcaption", {}, "Result"));
      img.src = await artifactImage(single);
    } else if (batch) {
      const count = job.progress && job.progress.total ? job.progress.total : inputs.length;
      const download = h("button", {
        type: "button",
        id: "apply-download",
        onclick: async () => {
          download.disabled = true;
          try {
            saveBlob(await artifactBlob(batch), "outputs.zip");
          } catch (error) {
            showError(run, `Could not download outputs.zip: ${error.message}`);
          } finally {
            download.disabled = false;
          }
        },
      }, "Download outputs.zip");
      fill(outputSlot,
        h("div", { class: "placeholder batch-result" },
          h("p", { id: "apply-count" }, `${fmtNumber(count)} styled ${count === 1 ? "picture" : "pictures"} in a zip`),
          download),
        h("figcaption", {}, "Result: outputs.zip"));
    } else {
      fill(outputSlot, h("div", { class: "placeholder" }, "The job saved no output"), h("figcaption", {}, "Result"));
    }
    result.dataset.done = job.state;
  }

  (async () => {
    try {
      const wanted = route.query.get("model");
      const [{ properties }, page] = await Promise.all([jobParams(TYPE), api.models({ limit: MODELS_LISTED }, signal)]);
      models = page.items;
      let missing = null;
      if (wanted && !models.some((m) => m.id === wanted)) {
        try {
          models.push(await api.model(wanted, signal));
        } catch (error) {
          if (signal.aborted) return;
          missing = error.status === 404 || error.status === 422 ? `model: no model ${wanted} in your account` : `model: ${error.message}`;
        }
      }
      const builtins = (properties.images.items || {})["x-builtins"] || [];
      pictures = new Pictures(builtins);
      form = new SchemaForm(properties);

      modelSelect = h("select", { id: "field-model", name: "model", "aria-describedby": "error-model", onchange: () => chooseModel(modelSelect.value) },
        models.length ? null : h("option", { value: "" }, "(no models yet)"),
        models.map((m) => h("option", { value: m.id }, modelLabel(m, pictures))));
      modelInfo = h("div", { class: "model-info", id: "apply-model-info" });
      const modelError = h("p", { class: "field-error", id: "error-model", "aria-live": "polite" });
      const modelField = h("div", { class: "field", dataset: { field: "model" } },
        h("label", { for: "field-model" }, "Model"), modelSelect, modelError, modelInfo,
        models.length ? null : h("p", { class: "hint" }, "You have no style models yet. ", h("a", { href: "#/new/style-model" }, "Train one"), "."));

      const imagesError = h("p", { class: "field-error", id: "error-images", "aria-live": "polite" });
      batchList = h("ul", { class: "batches", id: "apply-uploads" });
      const drop = dropZone({
        id: "images-drop",
        label: "Drop pictures, a folder or a zip to style (they go up as one upload)",
        accept: PICTURE_ARCHIVES,
        onFiles: (entries) => {
          pending = entries.filter((x) => x.file.type.startsWith("image/")).slice(0, PREVIEWS_PER_UPLOAD)
            .map((x) => ({ url: localUrl(x.file), name: x.file.name }));
        },
        onUploaded: (upload) => {
          batches.push({ upload, previews: pending });
          pending = [];
          form.showError("images", "");
          renderBatches();
        },
      });
      builtinBoxes = builtins.map((b) => h("input", { type: "checkbox", value: b, id: `builtin-${b}`, class: "builtin-pick" }));
      const imagesField = h("fieldset", { class: "field", id: "field-images", "aria-describedby": "images-help error-images" },
        h("legend", {}, "Pictures to style"),
        h("p", { class: "hint", id: "images-help" }, "One picture gives output.png; several (or a folder or zip) give outputs.zip."),
        batchList,
        drop,
        h("fieldset", { class: "checks builtins" }, h("legend", {}, "Or built-in pictures"),
          builtinBoxes.map((box) => h("label", { for: box.id }, box, ` ${box.value}`))),
        imagesError);

      strength = slider("strength", "Strength", 1, properties.strength.description);
      alpha = slider("alpha", "Alpha", 1, properties.alpha.description);
      styles = styleList({ pictures, prefix: "apply-style", legend: "Style pictures and blend (adain)" });
      johnson = h("div", { id: "johnson-options", hidden: true }, strength.el);
      adain = h("div", { id: "adain-options", hidden: true }, styles.element, alpha.el);
      preserve = h("input", { type: "checkbox", id: "field-preserve_colors", name: "preserve_colors", "aria-describedby": "help-preserve_colors error-preserve_colors" });
      const preserveField = h("div", { class: "field check-field", dataset: { field: "preserve_colors" } },
        h("label", { for: preserve.id }, preserve, " Preserve colours"),
        h("p", { class: "hint", id: "help-preserve_colors" }, properties.preserve_colors.description || ""),
        h("p", { class: "field-error", id: "error-preserve_colors", "aria-live": "polite" }));

      stub(modelError, modelSelect, "model");
      stub(imagesError, batchList, "images");
      stub(strength.error, strength.input, "strength");
      stub(alpha.error, alpha.input, "alpha");
      stub(styles.error, styles.rows, "styles");
      stub(styles.error, styles.rows, "style_blend");
      stub(preserveField.querySelector(".field-error"), preserve, "preserve_colors");
      const others = Object.keys(properties).filter((n) => !CUSTOM_FIELDS.includes(n) && n !== "size");
      fill(body,
        modelField,
        imagesField,
        h("div", { class: "fields" }, form.field("size", { label: "Size (longer side, px)" }), preserveField, johnson),
        adain,
        others.length ? h("details", {}, h("summary", {}, "Other options"), h("div", { class: "fields" }, others.map((n) => form.field(n, { label: titleOf(n) })))) : null);
      submit.disabled = !models.length;
      if (models.length) chooseModel(wanted && models.some((m) => m.id === wanted) ? wanted : models[0].id, { updateUrl: Boolean(wanted) });
      if (missing) form.showError("model", missing);
      document.documentElement.dataset.ready = "apply";
    } catch (error) {
      if (!signal.aborted) formError(formErrorSlot, error);
    }
  })();

  return () => {
    controller.abort();
    objectUrls.forEach((url) => URL.revokeObjectURL(url));
    if (pictures) pictures.revoke();
  };
}
