// The chat page: pick a model, stream its answers from /v1/chat/completions (server-sent events), show tokens/s.
"use strict";

const $ = (id) => document.getElementById(id);
let history = [];
let controller = null;

function headers() {
  const key = $("key").value.trim();
  return Object.assign({ "Content-Type": "application/json" }, key ? { Authorization: `Bearer ${key}` } : {});
}

function addTurn(kind, text) {
  const div = document.createElement("div");
  div.className = `turn ${kind}`;
  div.textContent = text;
  $("log").appendChild(div);
  return div;
}

async function loadModels() {
  const response = await fetch("/v1/models", { headers: headers() });
  const body = await response.json();
  if (!response.ok) {
    $("status").textContent = body.error ? body.error.message : `HTTP ${response.status}`;
    return;
  }
  $("model").replaceChildren(...body.data.map((model) => new Option(model.id, model.id)));
  $("status").textContent = `${body.data.length} model(s) ready`;
}

// Yields the JSON payloads of a server-sent event stream, until "[DONE]".
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    const blocks = buffer.split(/\r?\n\r?\n/);
    buffer = blocks.pop();
    for (const block of blocks) {
      const data = block.split(/\r?\n/).filter((line) => line.startsWith("data:")).map((line) => line.slice(5).trim()).join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

async function ask(text) {
  history.push({ role: "user", content: text });
  addTurn("user", text);
  const answer = addTurn("assistant", "");
  const stats = document.createElement("div");
  stats.className = "stats";
  $("log").appendChild(stats);
  controller = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  const started = performance.now();
  let first = null;
  let pieces = 0;
  let usage = null;
  let finish = "";
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(),
      signal: controller.signal,
      body: JSON.stringify({
        model: $("model").value, messages: history, stream: true, stream_options: { include_usage: true },
      }),
    });
    if (!response.ok) {
      const body = await response.json();
      throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
    }
    for await (const chunk of events(response)) {
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices || []) {
        if (choice.delta && choice.delta.content) {
          first = first || performance.now();
          pieces += 1;
          answer.textContent += choice.delta.content;
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    }
    history.push({ role: "assistant", content: answer.textContent });
  } catch (error) {
    answer.classList.add("error");
    answer.textContent += (answer.textContent ? "\n" : "") + (error.name === "AbortError" ? "[stopped]" : `Error: ${error.message}`);
  } finally {
    const ended = performance.now();
    const tokens = usage ? usage.completion_tokens : pieces;
    const rate = first && ended > first ? (Math.max(tokens - 1, 0) * 1000) / (ended - first) : 0;
    stats.textContent = `${tokens} tokens, ${rate.toFixed(1)} tokens/s, first token ${first ? Math.round(first - started) : "-"} ms` +
      (finish ? `, finish: ${finish}` : "");
    stats.dataset.tokensPerSecond = rate.toFixed(1);
    controller = null;
    $("send").disabled = false;
    $("stop").disabled = true;
  }
}

$("ask").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || controller) return;
  $("prompt").value = "";
  ask(text);
});
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("ask").requestSubmit();
  }
});
$("stop").addEventListener("click", () => controller && controller.abort());
$("clear").addEventListener("click", () => { history = []; $("log").replaceChildren(); });
$("key").addEventListener("change", loadModels);
loadModels();
