// Shared by the chat page and the review desk: DOM building, API calls, SSE parsing.
// Text from the server is only ever set with textContent (never innerHTML).
"use strict";

const TaigiMed = (() => {
  /** el("p", {class: "x"}, "text", child) -> an element. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** A label in Taigi Hàn-jī with the Mandarin beside it: 台語<span class="zh">（華語）</span>. */
  function bilingual(taigi, mandarin) {
    const frag = document.createDocumentFragment();
    frag.append(taigi, el("span", { class: "zh", text: `（${mandarin}）` }));
    return frag;
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function errorOf(resp) {
    let message = `HTTP ${resp.status}`;
    try {
      const body = await resp.json();
      message = (body.error && body.error.message) || body.detail || message;
      if (typeof message !== "string") message = JSON.stringify(message);
    } catch (_) {
      /* not JSON */
    }
    return new ApiError(resp.status, message);
  }

  /** fetch JSON with an optional bearer token; throws ApiError on a non-2xx answer. */
  async function api(path, { method = "GET", body, token } = {}) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = `Bearer ${token}`;
    const resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
    if (!resp.ok) throw await errorOf(resp);
    return resp.json();
  }

  /** POST and read an OpenAI SSE stream; onEvent(obj) for every `data:` JSON event. */
  async function stream(path, body, token, onEvent) {
    const headers = { "Content-Type": "application/json", Accept: "text/event-stream" };
    if (token) headers.Authorization = `Bearer ${token}`;
    const resp = await fetch(path, {
      method: "POST",
      headers,
      body: JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
    if (!resp.ok) throw await errorOf(resp);
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (value) buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, cut).trim();
        buffer = buffer.slice(cut + 1);
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        const event = JSON.parse(data);
        if (event.error) throw new ApiError(502, event.error.message || "stream error");
        onEvent(event);
      }
      if (done) return;
    }
  }

  return { el, bilingual, api, stream, ApiError };
})();
