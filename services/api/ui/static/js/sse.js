// A text/event-stream parser over a fetch body (WHATWG "server-sent events" framing): it yields
// the events that arrived together as one batch, so a burst costs one re-render, not one per event.

export async function* parseSse(body, signal) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let event = { id: null, type: "message", data: [] };
  const onAbort = () => reader.cancel().catch(() => {});
  signal && signal.addEventListener("abort", onAbort, { once: true });
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      const batch = [];
      let nl;
      while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + (buffer.startsWith("\r\n", nl) ? 2 : 1));
        if (line === "") {
          if (event.data.length) {
            let data = null;
            try {
              data = JSON.parse(event.data.join("\n"));
            } catch {
              data = event.data.join("\n");
            }
            batch.push({ id: Number(event.id), type: event.type, data });
          }
          event = { id: event.id, type: "message", data: [] };
          continue;
        }
        if (line.startsWith(":")) continue; // heartbeat comment
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") event.data.push(val);
        else if (field === "event") event.type = val;
        else if (field === "id") event.id = val;
      }
      if (batch.length) yield batch;
    }
  } finally {
    signal && signal.removeEventListener("abort", onAbort);
    reader.releaseLock();
  }
}
