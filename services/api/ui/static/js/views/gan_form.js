// New GAN job: pick a dataset (built-in, torchvision, one of your uploads, or drop a folder/zip),
// a preset, steps and size, and the remedies under "Advanced". "Run again with changes" lands here
// with ?from=<job id> and the form filled with what that job ran.

import { api } from "../api.js";
import { fill, fmtBytes, h } from "../dom.js";
import { SchemaForm, dropZone, formError } from "../forms.js";
import { jobParams } from "../schema.js";

const MAIN_FIELDS = ["preset", "arch", "steps", "image_size", "batch_size", "conditional"];
const IMAGE_SIZES = [16, 32, 64, 128];
const TYPE = "gan.train";

function uploadLabel(u) {
  const classes = u.classes.length ? `, classes: ${u.classes.join(", ")}` : "";
  return `${u.filename} — ${u.file_count} pictures, ${fmtBytes(u.total_bytes)}${classes}`;
}

export function ganFormView(main, route) {
  const controller = new AbortController();
  const from = route.query.get("from");
  const formErrorSlot = h("div", { id: "form-error" });
  const submit = h("button", { type: "submit", id: "submit-job" }, "Start training");
  const body = h("div", {}, h("p", { class: "hint" }, "Loading the job schema…"));
  let form = null;
  let datasetSelect = null;
  let uploadsGroup = null;
  let classesNote = null;

  fill(main, h("section", { class: "card" },
    h("h1", {}, from ? "Run again with changes" : "New GAN job"),
    h("form", { id: "gan-form", novalidate: true, onsubmit: onSubmit }, body, formErrorSlot, submit)));

  function datasetPicker(schema, uploads) {
    const builtins = schema["x-builtins"] || [];
    const torchvision = new Set(schema["x-torchvision"] || []);
    uploadsGroup = h("optgroup", { label: "Your uploads" }, uploads.map((u) => h("option", { value: u.id }, uploadLabel(u))));
    datasetSelect = h("select", { id: "field-dataset", name: "dataset", "aria-describedby": "dataset-help error-dataset", onchange: showClasses },
      h("optgroup", { label: "Built-in" }, builtins.filter((b) => !torchvision.has(b)).map((b) => h("option", { value: b, selected: b === schema.default }, b))),
      torchvision.size ? h("optgroup", { label: "torchvision (from the worker's cache)" }, [...torchvision].map((b) => h("option", { value: b }, b))) : null,
      uploadsGroup);
    classesNote = h("p", { class: "hint", id: "dataset-classes", "aria-live": "polite" });
    const zone = dropZone({
      id: "dataset-drop",
      label: "Or drop a folder of pictures (one sub-folder per class) or a zip here",
      onUploaded: (upload) => {
        uploads.unshift(upload);
        uploadsGroup.prepend(h("option", { value: upload.id }, uploadLabel(upload)));
        datasetSelect.value = upload.id;
        showClasses();
      },
    });
    function showClasses() {
      const u = uploads.find((x) => x.id === datasetSelect.value);
      classesNote.textContent = u ? (u.classes.length ? `Classes: ${u.classes.join(", ")}` : "No class folders: one class.") : "";
    }
    return h("div", { class: "field", dataset: { field: "dataset" } },
      h("label", { for: "field-dataset" }, "Dataset"),
      datasetSelect,
      h("p", { class: "hint", id: "dataset-help" }, schema.description || ""),
      classesNote,
      h("p", { class: "field-error", id: "error-dataset", "aria-live": "polite" }),
      zone);
  }

  async function onSubmit(e) {
    e.preventDefault();
    if (!form) return;
    formError(formErrorSlot, null);
    form.showError("dataset", "");
    const { params, invalid } = form.values();
    if (invalid.length) {
      form.focus(invalid[0]);
      formError(formErrorSlot, { message: `Fix ${invalid.length === 1 ? "the field" : "the fields"} marked: ${invalid.join(", ")}.` });
      return;
    }
    params.dataset = datasetSelect.value;
    submit.disabled = true;
    try {
      const job = await api.submit({ type: TYPE, params });
      location.hash = `#/jobs/${job.id}`;
    } catch (error) {
      if (!form.showApiError(error)) formError(formErrorSlot, error);
      submit.disabled = false;
    }
  }

  (async () => {
    try {
      const [{ properties }, uploadsPage, source] = await Promise.all([
        jobParams(TYPE),
        api.uploads({ limit: 100 }, controller.signal),
        from ? api.job(from, controller.signal) : null,
      ]);
      const uploads = uploadsPage.items.filter((u) => u.kind === "images");
      form = new SchemaForm(properties);
      const dataset = datasetPicker(properties.dataset, uploads);
      form.fields.set("dataset", { get: () => null, set: () => {}, error: dataset.querySelector("#error-dataset"), control: datasetSelect, schema: properties.dataset });
      const sizes = properties.image_size["x-choices"] || IMAGE_SIZES;
      const main = MAIN_FIELDS.map((n) => form.field(n, n === "image_size" ? { choices: sizes } : {}));
      const advanced = Object.keys(properties).filter((n) => n !== "dataset" && !MAIN_FIELDS.includes(n)).map((n) => form.field(n));
      fill(body,
        dataset,
        h("div", { class: "fields" }, main),
        h("details", { id: "advanced" }, h("summary", {}, "Advanced: losses, learning rates and remedies"), h("div", { class: "fields" }, advanced)));
      if (source) {
        if (source.type !== TYPE) throw new Error(`job ${from} is a ${source.type}, not a ${TYPE}`);
        for (const [name, value] of Object.entries(source.params)) {
          if (name === "dataset") {
            if (![...datasetSelect.options].some((o) => o.value === value)) datasetSelect.append(h("option", { value }, `upload ${value}`));
            datasetSelect.value = value;
          } else form.set(name, value);
        }
        body.prepend(h("p", { class: "hint" }, "Filled in with what job ", h("a", { href: `#/jobs/${from}` }, from.slice(0, 8)), " ran. Change what you like."));
      }
    } catch (error) {
      if (!controller.signal.aborted) formError(formErrorSlot, error);
    }
  })();

  return () => controller.abort();
}
