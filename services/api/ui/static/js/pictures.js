// Pictures a form offers: the API's built-in names and the pictures dropped on the page (each an
// upload, shown from the page's own copy of the file). And the list of style pictures with a blend
// slider each, used by the style-model forms.

import { fill, h, shortId } from "./dom.js";
import { dropZone } from "./forms.js";

export class Pictures {
  constructor(builtins = []) {
    this.builtins = builtins;
    this.local = new Map(); // upload id -> {url, name} of the picture dropped here
    this.listeners = new Set();
  }

  /** Remember a dropped picture (its upload and the local file), then tell the pickers. */
  add(upload, file) {
    this.local.set(upload.id, { url: file ? URL.createObjectURL(file) : null, name: file ? file.name : upload.filename });
    this.listeners.forEach((fn) => fn());
  }

  onChange(fn) {
    this.listeners.add(fn);
  }

  label(ref) {
    const local = this.local.get(ref);
    if (local) return local.name;
    return this.builtins.includes(ref) ? ref : `upload ${shortId(ref)}`;
  }

  url(ref) {
    return this.local.get(ref)?.url ?? null;
  }

  /** <optgroup>s of the built-in names and the dropped pictures, with `selected` chosen. */
  options(selected) {
    const dropped = [...this.local.keys()].map((id) => h("option", { value: id, selected: id === selected }, this.label(id)));
    const other = selected && !this.builtins.includes(selected) && !this.local.has(selected)
      ? h("option", { value: selected, selected: true }, `upload ${shortId(selected)}`)
      : null;
    return [
      h("optgroup", { label: "Built-in" }, this.builtins.map((b) => h("option", { value: b, selected: b === selected }, b))),
      h("optgroup", { label: "Your pictures" }, dropped, other),
    ];
  }

  /** A figure of a picture: the local copy when it was dropped here, else its name. */
  figure(ref, caption, attrs = { class: "input-picture" }) {
    const url = this.url(ref);
    return h("figure", attrs,
      url ? h("img", { src: url, alt: caption }) : h("div", { class: "placeholder" }, this.label(ref)),
      h("figcaption", {}, caption));
  }

  revoke() {
    this.local.forEach((p) => p.url && URL.revokeObjectURL(p.url));
  }
}

/**
 * Style pictures with a blend slider each, an "add a built-in" button and a drop zone for one or
 * more pictures (one upload each). `prefix` keeps the ids of two lists on a page apart.
 */
export function styleList({ pictures, prefix = "style", legend = "Style pictures and blend", errorId = "error-styles" }) {
  const rows = h("ol", { class: "style-rows", id: `${prefix}-rows` });
  const error = h("p", { class: "field-error", id: errorId, "aria-live": "polite" });
  let count = 0;

  function add(ref, weight = 1) {
    count += 1;
    const n = count;
    const select = h("select", { id: `${prefix}-${n}`, class: "style-pick", "aria-describedby": errorId }, pictures.options(ref));
    const out = h("output", { for: `${prefix}-blend-${n}` }, weight.toFixed(2));
    const slider = h("input", {
      type: "range", id: `${prefix}-blend-${n}`, class: "style-blend", min: 0, max: 1, step: 0.05, value: weight,
      oninput: () => { out.textContent = Number(slider.value).toFixed(2); },
    });
    const row = h("li", { class: "style-row" },
      h("label", { for: select.id }, `Style ${n}`), select,
      h("label", { for: slider.id }, "Blend"), slider, out,
      h("button", { type: "button", class: "small", "aria-label": `Remove style ${n}`, onclick: () => row.remove() }, "Remove"));
    rows.append(row);
    return row;
  }

  pictures.onChange(() => {
    rows.querySelectorAll("select").forEach((s) => {
      const keep = s.value;
      fill(s, pictures.options(keep));
    });
  });

  const drop = dropZone({
    id: `${prefix}-drop`, label: "Drop one or more style pictures", folders: false, each: true, accept: "image/*",
    onUploaded: (upload, file) => {
      pictures.add(upload, file);
      add(upload.id);
    },
  });
  const element = h("fieldset", { class: "field", id: `${prefix}-field` },
    h("legend", {}, legend), rows,
    h("button", { type: "button", class: "small", id: `${prefix}-add`, onclick: () => add(pictures.builtins[1] || pictures.builtins[0]) }, "Add a built-in style"),
    error, drop);

  /** [{ref, weight}] of the rows, in order. */
  function values() {
    return [...rows.querySelectorAll(".style-row")].map((r) => ({
      ref: r.querySelector("select").value,
      weight: Number(r.querySelector("input[type=range]").value),
    }));
  }

  return { element, rows, error, add, values };
}
