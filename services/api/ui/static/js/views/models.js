// Models: the caller's trained style models, newest first, a page at a time (the API's cursor),
// each with its preview, method, styles, size and steps, final style loss and age; apply it, open
// the job that trained it, or delete it (after an inline confirm).

import { api, imageUrl } from "../api.js";
import { fill, fmtAgo, fmtBytes, fmtNumber, fmtTime, h, shortId } from "../dom.js";

const PAGE_SIZE = 20;
const COLUMNS = ["Preview", "Model", "Method", "Styles", "Size / steps", "Final style loss", "Created", ""];

function preview(model) {
  if (!model.preview) return h("div", { class: "placeholder thumb" }, "no preview");
  const img = h("img", { class: "model-preview", alt: `Preview of model ${shortId(model.id)}`, dataset: { modelId: model.id } });
  imageUrl(model.preview, model.id).then((url) => { img.src = url; }).catch(() => {
    img.alt = `Preview of model ${shortId(model.id)} (could not load)`;
  });
  return img;
}

export function styleLoss(model) {
  const m = model.final_metrics || {};
  if ("style_loss" in m) return fmtNumber(m.style_loss);
  return "—";
}

export function modelsView(main) {
  const controller = new AbortController();
  const cursors = [null];
  let page = 0;
  let nextCursor = null;

  const body = h("tbody", {});
  const status = h("p", { class: "hint", id: "models-status", "aria-live": "polite" });
  const newer = h("button", { type: "button", disabled: true, onclick: () => go(page - 1) }, "← Newer");
  const older = h("button", { type: "button", disabled: true, onclick: () => go(page + 1) }, "Older →");
  const pageLabel = h("span", { class: "hint" });

  function actions(model) {
    const confirmBox = h("span", { class: "confirm", hidden: true },
      "Delete this model? ",
      h("button", { type: "button", class: "danger small confirm-delete", onclick: () => remove(model, confirmBox) }, "Yes, delete it"),
      h("button", { type: "button", class: "small", onclick: () => { confirmBox.hidden = true; ask.hidden = false; ask.focus(); } }, "Keep it"));
    const ask = h("button", {
      type: "button",
      class: "small delete-model",
      "aria-label": `Delete model ${shortId(model.id)}`,
      onclick: () => {
        ask.hidden = true;
        confirmBox.hidden = false;
        confirmBox.querySelector("button").focus();
      },
    }, "Delete");
    return h("div", { class: "actions" },
      h("a", { class: "button small", href: `#/apply?model=${model.id}`, "aria-label": `Apply model ${shortId(model.id)}` }, "Apply"),
      h("a", { class: "button small secondary", href: `#/jobs/${model.source_job}`, "aria-label": `Training job of model ${shortId(model.id)}` }, "Training job"),
      ask, confirmBox);
  }

  function row(model) {
    const blend = model.style_blend && model.style_blend.length > 1 ? ` (${model.style_blend.map(fmtNumber).join(" : ")})` : "";
    return h("tr", { dataset: { modelId: model.id } },
      h("td", { class: "thumb-cell" }, preview(model)),
      h("td", {}, h("span", { class: "mono" }, shortId(model.id)), h("br"), h("span", { class: "hint" }, fmtBytes(model.bytes))),
      h("td", {}, model.method),
      h("td", { class: "subject" }, model.styles.join(" + ") + blend),
      h("td", {}, `${model.size} px · ${fmtNumber(model.steps)} steps`),
      h("td", { class: "metrics" }, styleLoss(model)),
      h("td", { class: "hint", title: fmtTime(model.created_at) }, fmtAgo(model.created_at)),
      h("td", {}, actions(model)));
  }

  async function remove(model, confirmBox) {
    confirmBox.querySelectorAll("button").forEach((b) => { b.disabled = true; });
    try {
      await api.deleteModel(model.id);
      status.textContent = `Deleted model ${shortId(model.id)}.`;
      await load();
    } catch (error) {
      if (controller.signal.aborted) return;
      status.textContent = `Could not delete model ${shortId(model.id)}: ${error.message}`;
      confirmBox.querySelectorAll("button").forEach((b) => { b.disabled = false; });
    }
  }

  async function load() {
    try {
      const result = await api.models({ limit: PAGE_SIZE, cursor: cursors[page] }, controller.signal);
      if (!result.items.length && page > 0) {
        // The last model of a later page was deleted: show the page before it.
        page -= 1;
        await load();
        return;
      }
      nextCursor = result.next_cursor;
      fill(body, result.items.map(row));
      if (!result.items.length) {
        fill(body, h("tr", {}, h("td", { colspan: COLUMNS.length, class: "empty" }, "No style models yet. ", h("a", { href: "#/new/style-model" }, "Train one"))));
      }
      newer.disabled = page === 0;
      older.disabled = !nextCursor;
      pageLabel.textContent = `Page ${page + 1}`;
      document.documentElement.dataset.ready = "models";
    } catch (error) {
      if (controller.signal.aborted) return;
      status.textContent = `Could not load models: ${error.message}`;
    }
  }

  function go(n) {
    if (n > page) cursors[n] = nextCursor;
    page = n;
    status.textContent = "";
    load();
  }

  fill(main, h("section", { class: "card" },
    h("div", { class: "title-row" },
      h("h1", {}, "Style models"),
      h("a", { class: "button", href: "#/new/style-model", id: "new-style-model" }, "Train a style model"),
      h("a", { class: "button secondary", href: "#/apply" }, "Apply a model")),
    h("p", { class: "hint" }, "Networks trained by style.train jobs: each styles a picture in one pass."),
    h("div", { class: "table-wrap" }, h("table", { class: "models", id: "models-table" },
      h("caption", { class: "visually-hidden" }, "Your style models, newest first"),
      h("thead", {}, h("tr", {}, COLUMNS.map((c, i) => h("th", { scope: "col" }, i === COLUMNS.length - 1 ? h("span", { class: "visually-hidden" }, "Actions") : c)))),
      body)),
    h("div", { class: "pager" }, newer, pageLabel, older),
    status));
  load();
  return () => controller.abort();
}
