// Client-side validation from the API's own OpenAPI document: each job type's params schema sits
// under "x-atelier-job-types" (services/api/openapi.py). The form checks what the schema says
// (types, bounds, enums, lengths) before sending; the API stays the judge and its 4xx is shown
// next to the field it names.

let documentPromise = null;

export function openapi() {
  if (!documentPromise) {
    documentPromise = fetch("/openapi.json", { credentials: "omit", signal: AbortSignal.timeout(15_000) }).then((r) => {
      if (!r.ok) throw new Error(`openapi.json: HTTP ${r.status}`);
      return r.json();
    });
    documentPromise.catch(() => {
      documentPromise = null;
    });
  }
  return documentPromise;
}

function resolve(doc, node) {
  let current = node;
  for (let i = 0; current && current.$ref && i < 10; i += 1) {
    const path = current.$ref.replace(/^#\//, "").split("/");
    current = path.reduce((n, key) => (n ? n[key] : undefined), doc);
  }
  return current || {};
}

/** A property's schema with $refs resolved and `X | None` unwrapped ({...schema, nullable}). */
export function propertySchema(doc, prop) {
  const p = resolve(doc, prop);
  const branches = p.anyOf || p.oneOf;
  if (branches) {
    const real = branches.map((b) => resolve(doc, b)).filter((b) => b.type !== "null");
    const nullable = real.length < branches.length;
    if (real.length === 1) return { ...p, ...real[0], anyOf: undefined, oneOf: undefined, nullable };
    return { ...p, nullable, choices: real };
  }
  if (p.allOf && p.allOf.length === 1) return { ...p, ...resolve(doc, p.allOf[0]) };
  return p;
}

/** {name: schema} of one job type's params, in the schema's order. */
export async function jobParams(type) {
  const doc = await openapi();
  const ref = (doc["x-atelier-job-types"] || {})[type];
  if (!ref) throw new Error(`the API's schema has no job type ${type}`);
  const schema = resolve(doc, ref);
  const out = {};
  for (const [name, prop] of Object.entries(schema.properties || {})) out[name] = propertySchema(doc, prop);
  return { properties: out, required: schema.required || [] };
}

export function enumOf(schema) {
  if (schema.enum) return schema.enum;
  if (schema.const !== undefined) return [schema.const];
  if (schema.choices && schema.choices.every((c) => c.const !== undefined || c.enum)) {
    return schema.choices.flatMap((c) => (c.enum ? c.enum : [c.const]));
  }
  return null;
}

/** Parse a form string into the schema's type; returns {value} or {error}. */
export function parseValue(schema, raw) {
  const type = schema.type || (schema.choices && schema.choices[0] && schema.choices[0].type);
  if (type === "integer" || type === "number") {
    const text = String(raw).trim();
    if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) return { error: "must be a number" };
    const value = Number(text);
    if (type === "integer" && !Number.isInteger(value)) return { error: "must be a whole number" };
    return { value };
  }
  if (type === "boolean") return { value: raw === true || raw === "true" };
  return { value: raw };
}

/** The first problem the schema finds with a value, as a sentence, or null. */
export function check(schema, value) {
  const allowed = enumOf(schema);
  if (allowed && !Array.isArray(value) && !allowed.includes(value)) return `must be one of ${allowed.join(", ")}`;
  if (typeof value === "number") {
    if (schema.minimum !== undefined && value < schema.minimum) return `must be at least ${schema.minimum}`;
    if (schema.maximum !== undefined && value > schema.maximum) return `must be at most ${schema.maximum}`;
    if (schema.exclusiveMinimum !== undefined && value <= schema.exclusiveMinimum) return `must be more than ${schema.exclusiveMinimum}`;
    if (schema.exclusiveMaximum !== undefined && value >= schema.exclusiveMaximum) return `must be less than ${schema.exclusiveMaximum}`;
  }
  if (typeof value === "string") {
    if (schema.maxLength !== undefined && value.length > schema.maxLength) return `must be at most ${schema.maxLength} characters`;
    if (schema.minLength !== undefined && value.length < schema.minLength) return `must be at least ${schema.minLength} characters`;
  }
  if (Array.isArray(value)) {
    if (schema.maxItems !== undefined && value.length > schema.maxItems) return `at most ${schema.maxItems} items`;
    if (schema.minItems !== undefined && value.length < schema.minItems) return `at least ${schema.minItems} items`;
    const items = schema.items || {};
    const itemEnum = enumOf(items);
    for (const item of value) {
      if (itemEnum && !itemEnum.includes(item)) return `${item} is not one of ${itemEnum.join(", ")}`;
    }
  }
  return null;
}

/** Which form field an API error names: "params.steps" -> "steps", "params.styles.1" -> "styles". */
export function fieldOf(apiField) {
  if (!apiField) return null;
  const parts = String(apiField).split(".");
  return parts[0] === "params" ? parts[1] || null : parts[0];
}
