// The patient chat. The conversation lives in sessionStorage and goes to the guard's chat
// route as one conversation; answers stream in; held answers are polled until a clinician
// decides; emergencies raise the red banner, which stays for the rest of the conversation.
"use strict";

(() => {
  const { el, bilingual, api, stream } = TaigiMed;
  const KEY = "taigimed.chat";
  const TOKEN_KEY = "taigimed.apiToken";
  const BIG_KEY = "taigimed.bigText";
  const SHOWN = new Set(["answered", "approved", "escalated", "referred"]); // sent back as context
  const CATEGORY_LABELS = {
    wrong: ["毋著", "內容錯誤"],
    unsafe: ["危險", "不安全"],
    hard_to_understand: ["看無／聽無", "難以理解"],
    not_taigi: ["毋是台語", "不是台語"],
    other: ["其他", "其他"],
  };
  const STATUS_LABELS = {
    needs_review: ["等醫生看", "等待醫師審閱"],
    approved: ["醫生看過矣", "已經醫師審閱"],
    rejected: ["醫生無同意這个回答", "醫師未核准此回答"],
    escalated: ["緊急", "緊急狀況"],
    referred: ["愛問醫生抑是藥師", "請洽醫師或藥師"],
  };

  let config = null;
  let state = load();
  const timers = new Map();
  const $ = (id) => document.getElementById(id);

  function load() {
    try {
      return JSON.parse(sessionStorage.getItem(KEY)) || { turns: [], emergency: false };
    } catch (_) {
      return { turns: [], emergency: false };
    }
  }
  function save() {
    sessionStorage.setItem(KEY, JSON.stringify(state));
  }
  const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

  /** The answer without the disclaimer the guard appended (the page shows it in its own box). */
  function withoutDisclaimer(text) {
    const cut = text.indexOf(config.disclaimer);
    return (cut >= 0 ? text.slice(0, cut) + text.slice(cut + config.disclaimer.length) : text).trim();
  }

  /** The conversation for the guard: user turns and the answers the patient was shown, newest
   * kept when the server's message and character limits would be exceeded. */
  function conversation() {
    const messages = [];
    for (const turn of state.turns) {
      if (turn.role === "user") messages.push({ role: "user", content: turn.content });
      else if (SHOWN.has(turn.status) && turn.content)
        messages.push({ role: "assistant", content: withoutDisclaimer(turn.content) });
    }
    const { max_messages: maxMessages, max_prompt_chars: maxChars } = config.limits;
    const budget = () => messages.reduce((n, m) => n + m.content.length, 0);
    // One slot is the guard's system prompt.
    while (messages.length > 1 && (messages.length > maxMessages - 1 || budget() > maxChars - 400))
      messages.shift();
    while (messages.length > 1 && messages[0].role !== "user") messages.shift();
    return messages;
  }

  // -- rendering ----------------------------------------------------------------------------
  const node = (turn, i) => (turn.role === "user" ? userBubble(turn) : answerCard(turn, i));

  /** Draw the whole conversation (on load and after clearing). */
  function render() {
    $("log").replaceChildren(...state.turns.map(node));
    $("emergency").hidden = !state.emergency;
    for (const [i, turn] of state.turns.entries()) if (turn.status === "needs_review") watch(i);
  }

  /** Redraw one turn only, so a half-written report on another answer is never lost. */
  function update(index) {
    const log = $("log");
    const fresh = node(state.turns[index], index);
    if (log.children[index]) log.children[index].replaceWith(fresh);
    else log.append(fresh);
    $("emergency").hidden = !state.emergency;
    if (state.turns[index].status === "needs_review") watch(index);
    if (index === state.turns.length - 1) fresh.scrollIntoView({ block: "end" });
  }

  function userBubble(turn) {
    return el("div", { class: "turn-user", lang: "nan-Hant-TW", text: turn.content });
  }

  function answerCard(turn, index) {
    const card = el("article", { class: `answer ${turn.status || ""}`, "data-session": turn.session_id || "", "data-status": turn.status || "" });
    const label = STATUS_LABELS[turn.status];
    if (label) card.append(el("span", { class: `badge ${turn.status}` }, bilingual(...label)));
    if (turn.status === "needs_review") {
      card.append(
        el("p", { class: "text" }, bilingual("醫生看過了後，回答會出現佇遮。", "醫師審閱後，回答會顯示在這裡")),
        el(
          "div",
          { class: "waiting" },
          el("span", { class: "checked", text: turn.checked ? `上尾查：${turn.checked}` : "⏳" }),
          el("button", { type: "button", class: "check-again", onclick: () => check(index) }, bilingual("閣看一擺", "再查一次")),
        ),
      );
    } else {
      card.append(el("p", { class: "text", lang: "nan-Hant-TW", text: turn.streaming ? turn.content : withoutDisclaimer(turn.content || "") }));
      if (turn.review_note) card.append(el("p", { class: "note" }, bilingual("醫生講：", "醫師說明："), turn.review_note));
    }
    if (turn.error) card.append(el("p", { class: "error", role: "alert", text: turn.error }));
    if (!turn.error) card.append(el("p", { class: "disclaimer", text: config.disclaimer }));
    if (turn.sources && turn.sources.length) card.append(sourcesList(turn.sources));
    if (turn.session_id && !turn.streaming) card.append(feedbackRow(turn, index));
    return card;
  }

  function sourcesList(sources) {
    return el(
      "div",
      { class: "sources" },
      el("strong", {}, bilingual("資料的來源", "資料來源")),
      el("ol", {}, ...sources.map((s) => el("li", { text: [s.title || s.id, s.source || s.note].filter(Boolean).join(" · ") }))),
    );
  }

  function feedbackRow(turn, index) {
    const fb = turn.feedback || {};
    const row = el("div", { class: "feedback" });
    const thumb = (rating, icon, words) =>
      el("button", { type: "button", class: `thumb-${rating}`, "aria-pressed": fb.rating === rating ? "true" : "false", onclick: () => sendFeedback(index, { rating }) }, `${icon} `, bilingual(...words));
    row.append(thumb("up", "＋", ["有路用", "有幫助"]), thumb("down", "－", ["無路用", "沒幫助"]));
    const score = el("fieldset", { class: "score" }, el("legend", {}, bilingual("分數", "評分")));
    for (let n = 1; n <= 5; n += 1) {
      const input = el("input", { type: "radio", name: `score-${index}`, value: String(n), checked: fb.score === n, "aria-label": `${n}`, onchange: () => sendFeedback(index, { score: n }) });
      score.append(el("label", {}, input, el("span", { class: "n", text: String(n) })));
    }
    row.append(score);
    row.append(reportForm(turn, index));
    if (fb.thanks) row.append(el("span", { class: "thanks", role: "status" }, bilingual("多謝你", "謝謝您")));
    if (fb.error) row.append(el("span", { class: "error", role: "alert", text: fb.error }));
    return row;
  }

  function reportForm(turn, index) {
    const select = el("select", { name: "category", required: true }, el("option", { value: "" }, "— 揀一个（請選擇）—"));
    for (const key of config.problem_categories) {
      const [taigi, mandarin] = CATEGORY_LABELS[key] || [key, key];
      select.append(el("option", { value: key, text: `${taigi}（${mandarin}）` }));
    }
    const comment = el("textarea", { name: "comment", rows: "2", lang: "nan-Hant-TW", placeholder: "閣講較詳細（補充說明）" });
    const form = el(
      "form",
      {
        class: "report-form",
        onsubmit: (event) => {
          event.preventDefault();
          if (!select.value) return;
          sendFeedback(index, { category: select.value, comment: comment.value.trim() || undefined });
        },
      },
      el("label", {}, bilingual("啥物問題", "問題類別"), " ", select),
      el("label", {}, bilingual("說明", "說明"), " ", comment),
      el("button", { type: "submit", class: "primary" }, bilingual("送出報告", "送出回報")),
    );
    return el("details", { class: "report" }, el("summary", {}, "⚠ ", bilingual("講有問題", "回報問題")), form);
  }

  // -- actions ------------------------------------------------------------------------------
  async function sendFeedback(index, fields) {
    const turn = state.turns[index];
    turn.feedback = turn.feedback || {};
    try {
      await api("/v1/feedback", { method: "POST", body: { session_id: turn.session_id, ...fields }, token: token() });
      Object.assign(turn.feedback, fields.category ? { reported: fields.category } : fields, { thanks: true, error: null });
    } catch (err) {
      turn.feedback.error = `${err.message}`;
      turn.feedback.thanks = false;
    }
    save();
    update(index);
  }

  async function ask(question) {
    state.turns.push({ role: "user", content: question });
    const turn = { role: "assistant", content: "", status: "", streaming: true };
    state.turns.push(turn);
    const index = state.turns.length - 1;
    save();
    update(index - 1);
    update(index);
    const body = {
      model: config.model,
      messages: conversation(),
      stream: true,
      temperature: Number($("temperature").value),
      top_p: Number($("top-p").value),
    };
    try {
      await stream("/openai/v1/chat/completions", body, token(), (event) => {
        if (event.taigimed) {
          const tag = event.taigimed;
          Object.assign(turn, { status: tag.status, session_id: tag.session_id, confidence: tag.confidence });
          if (Array.isArray(tag.sources)) turn.sources = tag.sources;
          if (tag.status === "escalated") state.emergency = true;
        }
        for (const choice of event.choices || []) {
          const piece = (choice.delta && choice.delta.content) || "";
          if (piece) turn.content += piece;
        }
        update(index);
      });
    } catch (err) {
      turn.error = err.status === 429 || err.status === 503 ? "這馬傷無閒，請等一下閣試。（系統忙碌，請稍後再試。）" : `${err.message}`;
      if (err.status === 401) {
        $("token-row").hidden = false;
        $("advanced").open = true;
      }
    }
    turn.streaming = false;
    save();
    update(index);
    $("emergency").scrollIntoView({ block: "nearest" });
  }

  async function check(index) {
    const turn = state.turns[index];
    if (!turn || !turn.session_id) return;
    try {
      const s = await api(`/v1/sessions/${encodeURIComponent(turn.session_id)}`, { token: token() });
      turn.checked = new Date().toLocaleTimeString();
      if (s.status !== "needs_review") {
        turn.status = s.status;
        turn.content = s.answer || "";
        turn.review_note = s.review_note || null;
        stopWatching(index);
      }
    } catch (err) {
      turn.checked = `${err.message}`;
    }
    save();
    if (turn.status === "needs_review") {
      const shown = $("log").children[index];
      const checked = shown && shown.querySelector(".checked");
      if (checked) checked.textContent = `上尾查：${turn.checked}`;
    } else {
      update(index);
    }
  }

  function watch(index) {
    if (timers.has(index)) return;
    timers.set(index, setInterval(() => check(index), config.poll_seconds * 1000));
  }
  function stopWatching(index) {
    clearInterval(timers.get(index));
    timers.delete(index);
  }

  // -- controls -----------------------------------------------------------------------------
  function setBig(on) {
    document.documentElement.classList.toggle("big", on);
    $("bigger").setAttribute("aria-pressed", on ? "true" : "false");
    localStorage.setItem(BIG_KEY, on ? "1" : "0");
  }

  function setupSlider(id, bounds, value) {
    const input = $(id);
    const min = bounds.min !== undefined ? bounds.min : Number(input.step);
    input.min = String(min);
    if (bounds.max !== undefined) input.max = String(bounds.max);
    input.value = String(value);
    const show = () => ($(`${id}-value`).textContent = input.value);
    input.addEventListener("input", show);
    show();
  }

  async function start() {
    config = await api("/ui/config.json");
    setupSlider("temperature", config.limits.temperature, config.defaults.temperature);
    setupSlider("top-p", config.limits.top_p, config.defaults.top_p);
    if (config.auth_required) $("token-row").hidden = false;
    $("api-token").value = token();
    $("api-token").addEventListener("change", (e) => sessionStorage.setItem(TOKEN_KEY, e.target.value.trim()));
    setBig(localStorage.getItem(BIG_KEY) === "1");
    $("bigger").addEventListener("click", () => setBig(!document.documentElement.classList.contains("big")));
    $("clear").addEventListener("click", () => {
      for (const index of [...timers.keys()]) stopWatching(index);
      state = { turns: [], emergency: false };
      save();
      render();
    });
    const form = $("ask");
    const input = $("question");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const question = input.value.trim();
      $("ask-error").textContent = "";
      if (!question) return;
      if (question.length > config.limits.max_prompt_chars - 400) {
        $("ask-error").textContent = "問題傷長，請寫較短咧。（問題太長，請縮短。）";
        return;
      }
      input.value = "";
      $("send").disabled = true;
      try {
        await ask(question);
      } finally {
        $("send").disabled = false;
        input.focus();
      }
    });
    // Enter sends, Shift+Enter is a new line; never while an input method is composing Hàn-jī.
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    for (const turn of state.turns) turn.streaming = false;
    render();
    document.body.dataset.ready = "1";
  }

  document.addEventListener("DOMContentLoaded", () => {
    start().catch((err) => {
      $("ask-error").textContent = `${err.message}`;
    });
  });
})();
