// The kerasformers playground: a chat with a generation model, or a similarity table for an
// embedding model, over the server's own OpenAI-style routes. Plain browser JavaScript, no
// build step and nothing fetched from anywhere but this server. Model output is only ever
// written with textContent / Text nodes, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);

const state = {
  model: null, // the /v1/models card
  conversation: [], // [{role, content}] sent whole with every request
  controller: null, // the AbortController of the stream in flight
  epoch: 0, // bumped by Clear: a stream from before it leaves the new conversation alone
};

// ------------------------------------------------------------------ page furniture

function setStatus(text, kind) {
  const status = $("status");
  status.textContent = text;
  status.dataset.state = kind;
}

function showError(message) {
  const error = $("error");
  error.textContent = message;
  error.hidden = !message;
}

class ServerError extends Error {}

// The message of an OpenAI-style error body, or the HTTP status when there is none.
async function errorOf(response) {
  let text = "";
  try {
    text = await response.text();
    const body = JSON.parse(text);
    if (body && body.error && body.error.message) {
      const { message, param } = body.error;
      const where = param && !message.includes(param) ? ` (${param})` : "";
      return `${response.status}: ${message}${where}`;
    }
  } catch (_) {
    // not JSON: fall through to the raw text
  }
  return `${response.status} ${response.statusText}${text ? ": " + text.slice(0, 200) : ""}`;
}

async function postJSON(path, body, signal) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw new ServerError(await errorOf(response));
  return response;
}

// ------------------------------------------------------------------ Server-Sent Events

// Yields the data of each event of an SSE body as it arrives. Events end at a blank line;
// a read may hold several events, or end in the middle of one (even in the middle of a
// UTF-8 character, which TextDecoder's stream mode keeps for the next read).
async function* sseData(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let data = [];
  const lineEnd = /\r\n|\r|\n/g;
  function* takeLines(final) {
    lineEnd.lastIndex = 0;
    let start = 0;
    let match;
    while ((match = lineEnd.exec(buffer)) !== null) {
      // A lone "\r" at the very end may be the first half of "\r\n": wait for more.
      if (!final && match[0] === "\r" && match.index === buffer.length - 1) break;
      yield buffer.slice(start, match.index);
      start = lineEnd.lastIndex;
    }
    buffer = buffer.slice(start);
  }
  function* feed(line) {
    if (line === "") {
      if (data.length) yield data.join("\n");
      data = [];
    } else if (line.startsWith("data:")) {
      data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
    } // comments (":...") and other fields are not used by these routes
  }
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      for (const line of takeLines(false)) yield* feed(line);
    }
    buffer += decoder.decode();
    for (const line of takeLines(true)) yield* feed(line);
    if (buffer) yield* feed(buffer);
    yield* feed(""); // a last event with no blank line after it
  } finally {
    reader.releaseLock();
  }
}

// ------------------------------------------------------------------ model card

async function loadModel() {
  setStatus("loading the model card…", "loading");
  let card;
  try {
    const response = await fetch("/v1/models");
    if (!response.ok) throw new ServerError(await errorOf(response));
    const list = await response.json();
    card = list.data && list.data[0];
    if (!card) throw new ServerError("the server lists no model");
  } catch (err) {
    showError(`cannot read /v1/models: ${err.message}`);
    setStatus("no model", "error");
    return;
  }
  state.model = card;
  $("model-id").textContent = card.id;
  $("model-family").textContent = card.family || "—";
  $("model-kind").textContent = card.kind;
  $("model-context").textContent = card.context ? `${card.context} tokens` : "—";
  document.title = `${card.id} · kerasformers playground`;
  if (card.kind === "embedding") {
    initEmbeddings();
  } else {
    initChat();
  }
  setStatus("ready", "ready");
}

// ------------------------------------------------------------------ chat

function initChat() {
  $("chat").hidden = false;
  $("template-note").hidden = state.model.chat_template !== false;
  const prompt = $("prompt");
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  prompt.addEventListener("keydown", (event) => {
    // Enter sends; Shift+Enter is a new line; Enter that ends an IME composition is not a send.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    } else if (event.key === "Escape" && state.controller) {
      state.controller.abort();
    }
  });
  $("stop").addEventListener("click", () => state.controller && state.controller.abort());
  $("clear").addEventListener("click", () => {
    state.epoch += 1;
    if (state.controller) state.controller.abort();
    state.conversation = [];
    $("messages").replaceChildren();
    showError("");
    setStatus("ready", "ready");
    prompt.focus();
  });
  prompt.focus();
}

// Appends a message bubble; returns the Text node its content grows in.
function addBubble(role, text) {
  const item = document.createElement("li");
  item.className = `message ${role}`;
  const who = document.createElement("span");
  who.className = "role";
  who.textContent = role;
  const content = document.createElement("div");
  content.className = "content";
  const node = document.createTextNode(text);
  content.append(node);
  item.append(who, content);
  $("messages").append(item);
  scrollToEnd(true);
  return { item, node };
}

function scrollToEnd(force) {
  const list = $("messages");
  const near = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  if (force || near) list.scrollTop = list.scrollHeight;
}

function numberSetting(id, parse, fallback) {
  const value = parse($(id).value);
  return Number.isFinite(value) ? value : fallback;
}

function chatRequest() {
  const system = $("system").value.trim();
  const messages = system ? [{ role: "system", content: system }] : [];
  return {
    model: state.model.id,
    messages: messages.concat(state.conversation),
    max_tokens: numberSetting("max-tokens", (v) => parseInt(v, 10), 128),
    temperature: numberSetting("temperature", parseFloat, 0.7),
    top_p: numberSetting("top-p", parseFloat, 1),
    stream: true,
    stream_options: { include_usage: true },
  };
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}

async function send() {
  const prompt = $("prompt");
  const text = prompt.value;
  if (!text.trim() || state.controller) return;
  showError("");
  prompt.value = "";
  state.conversation.push({ role: "user", content: text });
  addBubble("user", text);
  const body = chatRequest();
  const reply = addBubble("assistant", "");
  reply.item.classList.add("pending");

  const controller = new AbortController();
  const epoch = state.epoch;
  state.controller = controller;
  setBusy(true);
  setStatus("waiting for the first token…", "streaming");
  const began = performance.now();
  let pieces = 0; // deltas shown: one per token, but for bytes held back to end a character
  let usage = null;
  let finish = null;
  let sawDone = false;
  try {
    const response = await postJSON("/v1/chat/completions", body, controller.signal);
    for await (const data of sseData(response.body)) {
      // Stop means stop now, not after the events already read.
      if (controller.signal.aborted) throw new DOMException("stopped", "AbortError");
      if (data === "[DONE]") {
        sawDone = true;
        break;
      }
      const chunk = JSON.parse(data);
      if (chunk.error) throw new ServerError(chunk.error.message || "the server failed");
      if (chunk.usage) usage = chunk.usage;
      const choice = chunk.choices && chunk.choices[0];
      if (!choice) continue;
      const piece = choice.delta && choice.delta.content;
      if (piece) {
        reply.node.appendData(piece);
        pieces += 1;
        reply.item.classList.remove("pending");
        setStatus(`streaming… ${pieces} token${pieces === 1 ? "" : "s"}`, "streaming");
        scrollToEnd(false);
      }
      if (choice.finish_reason) finish = choice.finish_reason;
    }
    if (!sawDone) throw new ServerError("the stream ended before [DONE]");
    const tokens = usage ? usage.completion_tokens : pieces;
    const seconds = (performance.now() - began) / 1000;
    const rate = seconds > 0 ? ` (${(tokens / seconds).toFixed(1)} tok/s)` : "";
    const why = finish ? ` · finish: ${finish}` : "";
    setStatus(`done · ${tokens} tokens in ${seconds.toFixed(2)} s${rate}${why}`, "done");
  } catch (err) {
    if (err.name === "AbortError") {
      setStatus(`stopped after ${pieces} token${pieces === 1 ? "" : "s"}`, "stopped");
    } else {
      showError(err instanceof ServerError ? err.message : `${err.name}: ${err.message}`);
      setStatus("error", "error");
      reply.item.classList.add("failed");
    }
  } finally {
    reply.item.classList.remove("pending");
    const content = reply.node.data;
    const finished = $("status").dataset.state === "done";
    if (epoch !== state.epoch) {
      setStatus("ready", "ready"); // cleared while streaming: this reply is gone
    } else if (content !== "" || finished) {
      // What the model said, even cut short, is part of the conversation.
      reply.item.classList.toggle("empty", content === "");
      state.conversation.push({ role: "assistant", content });
    } else {
      // Refused or stopped before a word: take the turn back, so that it can be sent again.
      state.conversation.pop();
      reply.item.previousElementSibling.remove();
      reply.item.remove();
      if (!prompt.value) prompt.value = text;
    }
    state.controller = null;
    setBusy(false);
    prompt.focus();
  }
}

// ------------------------------------------------------------------ embeddings

const EXAMPLES = [
  "The cat sits on the mat.",
  "A cat is sitting on a mat.",
  "Stock markets fell sharply today.",
];

function initEmbeddings() {
  $("embeddings").hidden = false;
  for (const text of EXAMPLES) addText(text);
  $("add-text").addEventListener("click", () => addText("").focus());
  $("embed-form").addEventListener("submit", (event) => {
    event.preventDefault();
    embed();
  });
}

function addText(value) {
  const list = $("texts");
  const row = document.createElement("li");
  const label = document.createElement("label");
  const input = document.createElement("input");
  const remove = document.createElement("button");
  input.type = "text";
  input.className = "embed-text";
  input.value = value;
  remove.type = "button";
  remove.className = "remove";
  remove.textContent = "×";
  remove.addEventListener("click", () => {
    if (list.children.length > 1) {
      row.remove();
      numberTexts();
    }
  });
  row.append(label, input, remove);
  list.append(row);
  numberTexts();
  return input;
}

// Ids and labels follow the order: text-1, text-2, ...
function numberTexts() {
  const rows = Array.from($("texts").children);
  rows.forEach((row, i) => {
    const [label, input, remove] = row.children;
    input.id = `text-${i + 1}`;
    label.htmlFor = input.id;
    label.textContent = `Text ${i + 1}`;
    remove.setAttribute("aria-label", `Remove text ${i + 1}`);
    remove.disabled = rows.length === 1;
  });
}

function dot(a, b) {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += a[i] * b[i];
  return sum;
}

// Three decimals, without the "-0.000" a tiny negative value would print.
function similarityText(value) {
  const text = value.toFixed(3);
  return text === "-0.000" ? "0.000" : text;
}

async function embed() {
  const inputs = Array.from(document.querySelectorAll("#texts .embed-text"));
  const texts = inputs.map((input) => input.value);
  const blank = texts.findIndex((t) => t.trim() === "");
  if (blank >= 0) {
    showError(`Text ${blank + 1} is empty: write something or remove it`);
    return;
  }
  showError("");
  $("embed").disabled = true;
  setStatus(`embedding ${texts.length} texts…`, "embedding");
  try {
    const response = await postJSON("/v1/embeddings", { model: state.model.id, input: texts });
    const body = await response.json();
    const vectors = body.data.slice().sort((a, b) => a.index - b.index).map((d) => d.embedding);
    renderSimilarity(texts, vectors);
    const dims = vectors.length ? vectors[0].length : 0;
    const tokens = body.usage ? ` · ${body.usage.prompt_tokens} tokens` : "";
    setStatus(`done · ${texts.length} texts · ${dims} dimensions${tokens}`, "done");
  } catch (err) {
    showError(err instanceof ServerError ? err.message : `${err.name}: ${err.message}`);
    setStatus("error", "error");
  } finally {
    $("embed").disabled = false;
  }
}

function renderSimilarity(texts, vectors) {
  const table = $("similarity");
  const head = document.createElement("tr");
  const corner = document.createElement("td");
  head.append(corner);
  texts.forEach((text, i) => {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = String(i + 1);
    th.title = text;
    head.append(th);
  });
  const values = vectors.map((a) => vectors.map((b) => dot(a, b)));
  // The tint spans the table's own range, from its lowest value (none) to 1 (full): models
  // differ in how close their unrelated texts already are.
  const low = Math.min(...values.flat());
  const span = 1 - low > 1e-6 ? 1 - low : 1;
  const rows = values.map((line, i) => {
    const row = document.createElement("tr");
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = `${i + 1}`;
    th.title = texts[i];
    const excerpt = document.createElement("span");
    excerpt.className = "excerpt";
    excerpt.textContent = texts[i];
    th.append(" ", excerpt);
    row.append(th);
    line.forEach((value, j) => {
      const td = document.createElement("td");
      td.textContent = similarityText(value);
      td.style.setProperty("--strength", String(Math.max(0, Math.min(1, (value - low) / span))));
      td.title = `${i + 1} · ${j + 1}`;
      row.append(td);
    });
    return row;
  });
  table.tHead.replaceChildren(head);
  table.tBodies[0].replaceChildren(...rows);
  table.hidden = false;
}

loadModel();
