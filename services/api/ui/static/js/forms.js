// Form fields built from a job type's params schema, and the upload drop zone. A field left empty
// is not sent, so the server's default (or the preset's value) applies; what the user sets wins.

import { uploadFiles } from "./api.js";
import { fill, fmtBytes, h, nextId } from "./dom.js";
import { check, enumOf, fieldOf, parseValue } from "./schema.js";
import { chosenFiles, droppedFiles, zipFiles } from "./zip.js";

const ARCHIVE = /\.(zip|tar|tgz|tar\.gz|tar\.bz2|tar\.xz)$/i;

function defaultText(schema) {
  if (schema.default === undefined) return "";
  if (schema.default === null) return "none";
  return Array.isArray(schema.default) ? schema.default.join(", ") || "none" : String(schema.default);
}

export function titleOf(name) {
  return name.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());
}

export class SchemaForm {
  constructor(properties) {
    this.properties = properties;
    this.fields = new Map(); // name -> {get, set, error, control}
  }

  /** A labelled control for one param, with its description and an error slot next to it. */
  field(name, { label = titleOf(name), choices } = {}) {
    const schema = this.properties[name];
    if (!schema) return null;
    const id = `field-${name}`;
    const helpId = nextId("help");
    const errorId = `error-${name}`;
    const error = h("p", { class: "field-error", id: errorId, "aria-live": "polite" });
    const help = schema.description ? h("p", { class: "hint", id: helpId }, schema.description) : null;
    const describedBy = [help ? helpId : null, errorId].filter(Boolean).join(" ");
    const allowed = choices || enumOf(schema);
    let control;
    let get;
    let set;
    if (schema.type === "array" && enumOf(schema.items || {})) {
      const options = enumOf(schema.items);
      let touched = false;
      const boxes = options.map((o) => h("input", { type: "checkbox", value: o, id: `${id}-${o}`, onchange: () => { touched = true; this.validate(name); } }));
      control = h("fieldset", { class: "checks", id, "aria-describedby": describedBy },
        h("legend", {}, label),
        boxes.map((b, i) => h("label", { for: b.id }, b, ` ${options[i]}`)));
      get = () => (touched ? { value: boxes.filter((b) => b.checked).map((b) => b.value) } : null);
      set = (v) => {
        touched = true;
        boxes.forEach((b) => { b.checked = Array.isArray(v) && v.includes(b.value); });
      };
      const wrap = h("div", { class: "field", dataset: { field: name } }, control, help, error);
      this.fields.set(name, { get, set, error, control: boxes[0] || control, schema });
      return wrap;
    }
    if (allowed || schema.type === "boolean") {
      const options = allowed || [true, false];
      control = h("select", { id, name, "aria-describedby": describedBy, onchange: () => this.validate(name) },
        h("option", { value: "" }, `(default${defaultText(schema) ? `: ${defaultText(schema)}` : ""})`),
        options.map((o) => h("option", { value: JSON.stringify(o) }, o === true ? "yes" : o === false ? "no" : String(o))));
      get = () => (control.value === "" ? null : { value: JSON.parse(control.value) });
      set = (v) => {
        control.value = v === null || v === undefined ? "" : JSON.stringify(v);
      };
    } else if (schema.type === "array") {
      control = h("input", { id, name, type: "text", placeholder: defaultText(schema) || "comma-separated", "aria-describedby": describedBy, oninput: () => this.validate(name) });
      get = () => {
        const text = control.value.trim();
        if (!text) return null;
        const items = text.split(",").map((s) => s.trim()).filter(Boolean);
        const parsed = items.map((s) => parseValue(schema.items || {}, s));
        const bad = parsed.find((p) => p.error);
        return bad ? { error: bad.error } : { value: parsed.map((p) => p.value) };
      };
      set = (v) => {
        control.value = Array.isArray(v) ? v.join(", ") : "";
      };
    } else {
      const numeric = schema.type === "integer" || schema.type === "number";
      control = h("input", {
        id,
        name,
        type: "text",
        inputmode: numeric ? (schema.type === "integer" ? "numeric" : "decimal") : undefined,
        placeholder: defaultText(schema) ? `default: ${defaultText(schema)}` : "",
        autocomplete: "off",
        "aria-describedby": describedBy,
        oninput: () => this.validate(name),
      });
      get = () => {
        const text = control.value.trim();
        if (!text) return null;
        return parseValue(schema, text);
      };
      set = (v) => {
        control.value = v === null || v === undefined ? "" : String(v);
      };
    }
    this.fields.set(name, { get, set, error, control, schema });
    return h("div", { class: "field", dataset: { field: name } }, h("label", { for: id }, label), control, help, error);
  }

  /** Check one field; shows and returns its problem. */
  validate(name) {
    const f = this.fields.get(name);
    if (!f) return null;
    const got = f.get();
    const problem = got ? got.error || check(f.schema, got.value) : null;
    this.showError(name, problem ? `${name}: ${problem}` : "");
    return problem;
  }

  showError(name, message) {
    const f = this.fields.get(name);
    if (!f) return false;
    f.error.textContent = message;
    const target = f.control;
    if (message) target.setAttribute("aria-invalid", "true");
    else target.removeAttribute("aria-invalid");
    return true;
  }

  /** {params, invalid: [names]}: the fields that were set, parsed and checked. */
  values() {
    const params = {};
    const invalid = [];
    for (const name of this.fields.keys()) {
      if (this.validate(name)) {
        invalid.push(name);
        continue;
      }
      const got = this.fields.get(name).get();
      if (got) params[name] = got.value;
    }
    return { params, invalid };
  }

  set(name, value) {
    const f = this.fields.get(name);
    if (f) f.set(value);
  }

  focus(name) {
    const f = this.fields.get(name);
    if (f) f.control.focus();
  }

  /** Show an API error beside the field it names; false when it names none of this form's fields. */
  showApiError(error) {
    const name = fieldOf(error.field);
    if (name && this.fields.has(name)) {
      this.showError(name, error.message);
      this.focus(name);
      return true;
    }
    return false;
  }
}

/**
 * A drop zone for a folder, a zip or pictures, with keyboard-reachable file pickers. It uploads
 * what it gets (a folder as one zip, so its sub-folders stay classes) and calls onUploaded(upload).
 */
export function dropZone({
  id, label, multiple = true, folders = true, each = false, accept = "image/*,.zip,.tar,.tgz,.gz,.bz2,.xz", onUploaded, onFiles,
}) {
  const bar = h("progress", { max: 1, value: 0, hidden: true, "aria-label": `${label}: upload progress` });
  const status = h("p", { class: "hint", "aria-live": "polite", id: `${id}-status` });
  const error = h("p", { class: "field-error", role: "alert", id: `${id}-error` });
  const fileInput = h("input", { type: "file", id: `${id}-files`, multiple, accept, class: "visually-hidden", onchange: (e) => send(chosenFiles(e.target.files)) });
  const folderInput = folders
    ? h("input", { type: "file", id: `${id}-folder`, webkitdirectory: true, class: "visually-hidden", onchange: (e) => send(chosenFiles(e.target.files)) })
    : null;
  const zone = h(
    "div",
    {
      class: "dropzone",
      id,
      dataset: { state: "idle" },
      ondragover: (e) => {
        e.preventDefault();
        zone.classList.add("over");
      },
      ondragleave: () => zone.classList.remove("over"),
      ondrop: async (e) => {
        e.preventDefault();
        zone.classList.remove("over");
        send(await droppedFiles(e.dataTransfer));
      },
    },
    h("p", {}, label),
    h("div", { class: "drop-buttons" },
      h("label", { for: fileInput.id, class: "button small" }, each ? (multiple ? "Choose pictures" : "Choose a picture") : "Choose files or a zip"),
      fileInput,
      folderInput ? [h("label", { for: folderInput.id, class: "button small" }, "Choose a folder"), folderInput] : null),
    bar,
    status,
    error,
  );

  async function send(entries) {
    error.textContent = "";
    if (!entries.length) return;
    if (onFiles) onFiles(entries);
    if (each) {
      // One upload per picture (a style or content picture is one image, not a set).
      for (const entry of entries) await sendFiles([entry.file], entry.file);
      return;
    }
    let files;
    const nested = entries.some((e) => e.path.includes("/"));
    if (entries.length === 1 && ARCHIVE.test(entries[0].path)) files = [entries[0].file];
    else if (nested) {
      status.textContent = `Packing ${entries.length} files…`;
      const blob = await zipFiles(entries.filter((e) => !e.path.split("/").some((p) => p.startsWith("."))));
      files = [new File([blob], `${entries[0].path.split("/")[0] || "folder"}.zip`, { type: "application/zip" })];
    } else files = entries.map((e) => e.file);
    await sendFiles(files, null);
  }

  async function sendFiles(files, localFile) {
    const total = files.reduce((n, f) => n + f.size, 0);
    bar.hidden = false;
    bar.value = 0;
    zone.dataset.state = "uploading";
    status.textContent = `Uploading ${fmtBytes(total)}…`;
    try {
      const upload = await uploadFiles(files, { onProgress: (f) => { bar.value = f; } });
      bar.value = 1;
      zone.dataset.state = "done";
      zone.dataset.uploadId = upload.id;
      status.textContent = `Uploaded ${upload.filename}: ${upload.file_count} ${upload.file_count === 1 ? "picture" : "pictures"}${upload.classes.length ? `, classes: ${upload.classes.join(", ")}` : ""}.`;
      onUploaded(upload, localFile);
    } catch (err) {
      zone.dataset.state = "error";
      bar.hidden = true;
      status.textContent = "";
      error.textContent = `Upload refused: ${err.message}`;
    }
  }
  return zone;
}

/** The form-level error line: an API error that names no field of the form, or a network failure. */
export function formError(slot, error) {
  fill(slot, error ? h("p", { class: "field-error", role: "alert" }, error.field ? `${error.field}: ${error.message}` : error.message) : "");
}
