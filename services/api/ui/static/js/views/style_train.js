// New style model (style.train): the method, the style pictures (built-in or dropped) with a blend
// each, the content pictures it learns on (the built-in set, or a folder or zip of photos), size
// and steps; the rest under "Advanced". After submit the job page follows the training. "Run again
// with changes" lands here with ?from=<job id>.

import { api } from "../api.js";
import { fill, fmtBytes, h, shortId } from "../dom.js";
import { SchemaForm, dropZone, formError } from "../forms.js";
import { Pictures, styleList } from "../pictures.js";
import { jobParams } from "../schema.js";

const TYPE = "style.train";
const MAIN_FIELDS = ["method", "size", "steps"];
const OWN_FIELDS = ["styles", "style_blend", "content"];
const BUILTIN_CONTENT = "builtin";

function uploadLabel(u) {
  return `${u.filename} — ${u.file_count} pictures, ${fmtBytes(u.total_bytes)}`;
}

export function styleTrainView(main, route) {
  const controller = new AbortController();
  const from = route.query.get("from");
  const formErrorSlot = h("div", { id: "form-error" });
  const submit = h("button", { type: "submit", id: "train-style" }, "Start training");
  const body = h("div", {}, h("p", { class: "hint" }, "Loading the job schema…"));
  let form = null;
  let pictures = null;
  let styles = null;
  let contentSelect = null;

  fill(main, h("section", { class: "card" },
    h("div", { class: "title-row" },
      h("h1", {}, from ? "Train a style model: run again with changes" : "Train a style model"),
      h("a", { href: "#/models" }, "Your models")),
    h("p", { class: "hint" }, "A style model is a network that styles any picture in one pass: train it once here, then apply it from the models page."),
    h("form", { id: "style-train-form", novalidate: true, onsubmit: onSubmit }, body, formErrorSlot, submit)));

  async function onSubmit(e) {
    e.preventDefault();
    if (!form) return;
    formError(formErrorSlot, null);
    OWN_FIELDS.forEach((n) => form.showError(n, ""));
    const { params, invalid } = form.values();
    const chosen = styles.values();
    if (!chosen.length) {
      form.showError("styles", "styles: add at least one style picture");
      invalid.push("styles");
    }
    if (invalid.length) {
      form.focus(invalid[0]);
      formError(formErrorSlot, { message: `Fix ${invalid.length === 1 ? "the field" : "the fields"} marked: ${invalid.join(", ")}.` });
      return;
    }
    params.styles = chosen.map((s) => s.ref);
    if (chosen.length > 1) params.style_blend = chosen.map((s) => s.weight);
    params.content = contentSelect.value;
    submit.disabled = true;
    try {
      const job = await api.submit({ type: TYPE, params });
      location.hash = `#/jobs/${job.id}`;
    } catch (error) {
      if (!form.showApiError(error)) formError(formErrorSlot, error);
      submit.disabled = false;
    }
  }

  function contentField(schema, uploads) {
    const group = h("optgroup", { label: "Your uploads" }, uploads.map((u) => h("option", { value: u.id }, uploadLabel(u))));
    contentSelect = h("select", { id: "field-content", name: "content", "aria-describedby": "content-help error-content" },
      h("option", { value: BUILTIN_CONTENT }, "Built-in pictures and shapes (works offline)"),
      group);
    const zone = dropZone({
      id: "content-drop",
      label: "Or drop a folder or a zip of photos for it to learn on",
      onUploaded: (upload) => {
        group.prepend(h("option", { value: upload.id }, uploadLabel(upload)));
        contentSelect.value = upload.id;
      },
    });
    return h("div", { class: "field", dataset: { field: "content" } },
      h("label", { for: "field-content" }, "Content pictures"),
      contentSelect,
      h("p", { class: "hint", id: "content-help" }, schema.description || ""),
      h("p", { class: "field-error", id: "error-content", "aria-live": "polite" }),
      zone);
  }

  (async () => {
    try {
      const [{ properties }, uploadsPage, source] = await Promise.all([
        jobParams(TYPE),
        api.uploads({ limit: 100 }, controller.signal),
        from ? api.job(from, controller.signal) : null,
      ]);
      if (source && source.type !== TYPE) throw new Error(`job ${from} is a ${source.type}, not a ${TYPE}`);
      pictures = new Pictures((properties.styles.items || {})["x-builtins"] || []);
      form = new SchemaForm(properties);
      styles = styleList({ pictures, prefix: "train-style" });
      const content = contentField(properties.content, uploadsPage.items.filter((u) => u.kind === "images"));
      const stub = (error, control, schema) => ({ get: () => null, set: () => {}, error, control, schema: schema || {} });
      form.fields.set("styles", stub(styles.error, styles.rows, properties.styles));
      form.fields.set("style_blend", stub(styles.error, styles.rows, properties.style_blend));
      form.fields.set("content", stub(content.querySelector("#error-content"), contentSelect, properties.content));
      const basics = MAIN_FIELDS.map((n) => form.field(n));
      const advanced = Object.keys(properties).filter((n) => !MAIN_FIELDS.includes(n) && !OWN_FIELDS.includes(n)).map((n) => form.field(n));
      fill(body,
        styles.element,
        content,
        h("div", { class: "fields" }, basics),
        h("details", { id: "advanced" }, h("summary", {}, "Advanced: network, layers, loss weights, previews"), h("div", { class: "fields" }, advanced)));
      if (source) {
        source.params.styles.forEach((s, i) => styles.add(s, (source.params.style_blend || [])[i] ?? 1));
        const ref = source.params.content;
        if (ref && ![...contentSelect.options].some((o) => o.value === ref)) contentSelect.append(h("option", { value: ref }, `upload ${shortId(ref)}`));
        if (ref) contentSelect.value = ref;
        for (const [name, value] of Object.entries(source.params)) if (!OWN_FIELDS.includes(name)) form.set(name, value);
        body.prepend(h("p", { class: "hint" }, "Filled in with what job ", h("a", { href: `#/jobs/${from}` }, shortId(from)), " ran. Change what you like."));
      } else {
        styles.add(pictures.builtins[1] || pictures.builtins[0]);
      }
    } catch (error) {
      if (!controller.signal.aborted) formError(formErrorSlot, error);
    }
  })();

  return () => {
    controller.abort();
    if (pictures) pictures.revoke();
  };
}
