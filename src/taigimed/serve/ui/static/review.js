// The clinician review desk. The reviewer token is kept in sessionStorage only (this tab) and
// sent as a bearer header; the login form never posts while JavaScript runs.
"use strict";

(() => {
  const { el, bilingual, api } = TaigiMed;
  const TOKEN_KEY = "taigimed.reviewerToken";
  const NAME_KEY = "taigimed.reviewerName";
  const REFRESH_MS = 15000;
  const WRONG_TOKEN = "通行碼毋著，請閣試一擺。（權杖錯誤，請再試一次。）";
  const CONFLICT = "另外一位醫生已經先決定矣。（另一位審閱者已先決定此項。）";
  const $ = (id) => document.getElementById(id);
  let items = [];
  let current = 0;
  let timer = null;

  const token = () => sessionStorage.getItem(TOKEN_KEY) || "";
  const reviewer = () => sessionStorage.getItem(NAME_KEY) || "";

  /** Most urgent first: held for a clinical topic, then lower confidence, then older
   * (the same rule as render.urgency_key for the page without JavaScript). */
  function urgencyCompare(a, b) {
    const topic = (x) => ((x.review_reasons || []).some((r) => r.startsWith("topic:")) ? 0 : 1);
    const conf = (x) => (x.confidence === null || x.confidence === undefined ? 1 : x.confidence);
    return topic(a) - topic(b) || conf(a) - conf(b) || a.created_at.localeCompare(b.created_at);
  }
  const oldestCompare = (a, b) => a.created_at.localeCompare(b.created_at);

  function formatSeconds(s) {
    if (s === null || s === undefined) return "–";
    if (s < 90) return `${Math.round(s)} 秒`;
    if (s < 5400) return `${Math.round(s / 60)} 分鐘`;
    return `${(s / 3600).toFixed(1)} 點鐘（小時）`;
  }

  // -- login --------------------------------------------------------------------------------
  function showDesk(on) {
    $("login").hidden = on;
    $("desk").hidden = !on;
    $("desk-nav").hidden = !on;
    $("who").textContent = on ? `醫生（審閱者）：${reviewer()}` : "";
    clearInterval(timer);
    if (on) {
      timer = setInterval(() => refresh(false), REFRESH_MS);
      refresh(true);
    }
  }

  function logout(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    showDesk(false);
    $("login-error").textContent = message || "";
  }

  async function login(event) {
    event.preventDefault();
    const name = $("reviewer").value.trim();
    const given = $("token").value.trim();
    if (!name) return;
    try {
      await api("/v1/review/pending?limit=1", { token: given });
    } catch (err) {
      $("login-error").textContent = err.status === 401 ? WRONG_TOKEN : err.message;
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, given);
    sessionStorage.setItem(NAME_KEY, name);
    $("token").value = "";
    $("login-error").textContent = "";
    showDesk(true);
  }

  // -- data ---------------------------------------------------------------------------------
  async function call(path, options) {
    try {
      return await api(path, { ...options, token: token() });
    } catch (err) {
      if (err.status === 401) logout(WRONG_TOKEN);
      throw err;
    }
  }

  /** Reload the queue, counters and history. ``full`` redraws the queue; otherwise new items
   * are added and cards being worked on are left as they are. */
  async function refresh(full) {
    const [pending, stats, history] = await Promise.all([
      call("/v1/review/pending?limit=200"),
      call(`/v1/review/stats?tz_offset_minutes=${new Date().getTimezoneOffset()}`),
      call("/v1/review/history?limit=50"),
    ]);
    showStats(stats);
    showHistory(history.data);
    if (full) {
      items = pending.data.map((x) => ({ ...x, outcome: null }));
    } else {
      const known = new Set(items.map((x) => x.session_id));
      const fresh = pending.data.filter((x) => !known.has(x.session_id));
      if (!fresh.length) return;
      items.push(...fresh.map((x) => ({ ...x, outcome: null })));
    }
    drawQueue();
  }

  function showStats(stats) {
    $("stat-backlog").textContent = String(stats.backlog);
    $("stat-wait").textContent = formatSeconds(stats.median_wait_s);
    $("stat-today").textContent = String(stats.decisions_today);
    const rates = Object.entries(stats.by_version).map(([v, c]) =>
      el("li", { text: `${v}: ${Math.round(c.rejection_rate * 100)}% (${c.rejected}/${c.approved + c.rejected})` }),
    );
    $("stat-rates").replaceChildren(...(rates.length ? rates : [el("li", { text: "–" })]));
  }

  function showHistory(rows) {
    const label = (h) => (h.status === "rejected" ? "毋准（退回）" : h.edited ? "改了才准（編輯後核准）" : "准（核准）");
    const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");
    $("history").tBodies[0].replaceChildren(
      ...rows.map((h) =>
        el("tr", { "data-session": h.session_id }, el("td", { text: when(h.reviewed_at) }), el("td", { text: h.reviewer || "" }), el("td", { text: label(h) }), el("td", { text: h.model_version }), el("td", { text: h.question }), el("td", { text: h.review_note || "" })),
      ),
    );
  }

  // -- queue --------------------------------------------------------------------------------
  function drawQueue() {
    const order = $("order").value === "oldest" ? oldestCompare : urgencyCompare;
    const open = items.filter((x) => !x.outcome).sort(order);
    const done = items.filter((x) => x.outcome);
    items = [...open, ...done];
    if (!items.length) {
      $("queue").replaceChildren(el("p", { class: "empty" }, bilingual("這馬無等咧看的。", "目前沒有待審項目。")));
      return;
    }
    current = Math.min(current, Math.max(open.length - 1, 0));
    $("queue").replaceChildren(...items.map(card));
  }

  function card(item, index) {
    const conf = item.confidence === null || item.confidence === undefined ? "–" : item.confidence.toFixed(2);
    const conversation = el("ol", { class: "conversation" }, ...(item.messages || []).filter((m) => m.role === "user" || m.role === "assistant").map((m) => el("li", { class: m.role, text: m.content })));
    const draft = el("textarea", { class: "draft", readonly: true, "aria-label": "草稿（回答草稿）" });
    draft.value = item.edit !== undefined ? item.edit : item.draft_answer || "";
    if (item.editing) draft.removeAttribute("readonly");
    draft.addEventListener("input", () => (item.edit = draft.value));
    const node = el(
      "article",
      { class: `card${index === current && !item.outcome ? " current" : ""}${item.outcome ? " decided" : ""}`, "data-session": item.session_id, tabindex: "0", onfocus: () => select(index, false) },
      el(
        "dl",
        {},
        el("dt", {}, bilingual("問題", "問題")),
        el("dd", { class: "question", text: item.question }),
        el("dt", {}, bilingual("草稿", "回答草稿")),
        el("dd", {}, draft),
        el("dt", {}, bilingual("把握", "信心分數")),
        el("dd", { class: "confidence", text: conf }),
        el("dt", {}, bilingual("為啥物留落來", "保留原因")),
        el("dd", { class: "reasons", text: (item.review_reasons || []).join(", ") || "–" }),
        el("dt", {}, bilingual("模型版本", "模型版本")),
        el("dd", { class: "version", text: item.model_version }),
        el("dt", {}, bilingual("收著的時間", "收到時間")),
        el("dd", { text: new Date(item.created_at).toLocaleString() }),
      ),
      el("details", {}, el("summary", {}, bilingual("對話", "對話紀錄")), conversation),
    );
    if (item.outcome) {
      node.append(el("p", { class: `outcome ${item.outcome.kind}`, role: "status", text: item.outcome.text }));
      return node;
    }
    const reason = el("input", { class: "reason", placeholder: "毋准的原因（退回原因）", "aria-label": "毋准的原因（退回原因）" });
    reason.value = item.reason || "";
    reason.addEventListener("input", () => (item.reason = reason.value));
    const actions = el(
      "div",
      { class: "actions" },
      el("button", { type: "button", class: "primary approve", onclick: () => approve(index) }, item.editing ? bilingual("送出改過的", "送出編輯並核准") : bilingual("准", "核准"), " ", el("kbd", { text: item.editing ? "Ctrl+Enter" : "a" })),
      item.editing ? null : el("button", { type: "button", class: "edit", onclick: () => startEdit(index) }, bilingual("改了才准", "編輯後核准"), " ", el("kbd", { text: "e" })),
      reason,
      el("button", { type: "button", class: "danger reject", onclick: () => reject(index) }, bilingual("毋准", "退回"), " ", el("kbd", { text: "r" })),
    );
    node.append(actions);
    if (item.error) node.append(el("p", { class: "error", role: "alert", text: item.error }));
    return node;
  }

  const cardNode = (index) => $("queue").children[index];

  function select(index, focus = true) {
    const open = items.filter((x) => !x.outcome).length;
    if (!open) return;
    const next = Math.max(0, Math.min(index, open - 1));
    if (next !== current && cardNode(current)) cardNode(current).classList.remove("current");
    current = next;
    const node = cardNode(current);
    if (!node) return;
    node.classList.add("current");
    if (focus) {
      node.focus({ preventScroll: true });
      node.scrollIntoView({ block: "nearest" });
    }
  }

  function startEdit(index) {
    const item = items[index];
    if (!item || item.outcome) return;
    item.editing = true;
    drawQueue();
    const area = cardNode(index).querySelector("textarea.draft");
    area.focus();
  }

  async function decide(index, path, body) {
    const item = items[index];
    try {
      await call(`/v1/review/${encodeURIComponent(item.session_id)}/${path}`, { method: "POST", body: { reviewer: reviewer(), ...body } });
      item.outcome = { kind: "done", text: path === "approve" ? (body.answer ? "✔ 改了才准矣（已編輯並核准）" : "✔ 准矣（已核准）") : "✖ 毋准矣（已退回）" };
    } catch (err) {
      if (err.status === 409 || err.status === 404) item.outcome = { kind: "conflict", text: `⚠ ${CONFLICT}` };
      else if (err.status !== 401) item.error = err.message;
    }
    drawQueue();
    select(current);
    refresh(false).catch(() => {});
  }

  function approve(index) {
    const item = items[index];
    if (!item || item.outcome) return;
    const edited = item.editing && item.edit !== undefined && item.edit.trim() && item.edit !== item.draft_answer;
    decide(index, "approve", edited ? { answer: item.edit.trim() } : {});
  }

  function reject(index) {
    const item = items[index];
    if (!item || item.outcome) return;
    const input = cardNode(index).querySelector("input.reason");
    const reason = input.value.trim();
    if (!reason) {
      item.error = "請寫毋准的原因。（請填寫退回原因。）";
      drawQueue();
      cardNode(index).querySelector("input.reason").focus();
      return;
    }
    decide(index, "reject", { reason });
  }

  // -- keyboard -----------------------------------------------------------------------------
  function onKey(event) {
    if ($("desk").hidden) return;
    const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(event.target.tagName) && !event.target.readOnly;
    if (typing) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        if (event.target.classList.contains("reason")) reject(current);
        else approve(current);
      } else if (event.key === "Escape") {
        const item = items[current];
        if (item) item.editing = false;
        drawQueue();
        select(current);
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const actions = {
      j: () => select(current + 1),
      k: () => select(current - 1),
      a: () => approve(current),
      e: () => startEdit(current),
      r: () => cardNode(current) && cardNode(current).querySelector("input.reason").focus(),
    };
    if (actions[event.key]) {
      event.preventDefault();
      actions[event.key]();
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", () => logout(""));
    $("refresh").addEventListener("click", () => refresh(true));
    $("order").addEventListener("change", drawQueue);
    document.addEventListener("keydown", onKey);
    $("reviewer").value = reviewer();
    if (token() || sessionStorage.getItem(NAME_KEY)) {
      // A token from this tab's session: check it before showing the desk.
      api("/v1/review/pending?limit=1", { token: token() })
        .then(() => showDesk(true))
        .catch(() => logout(""));
    }
    document.body.dataset.ready = "1";
  });
})();
