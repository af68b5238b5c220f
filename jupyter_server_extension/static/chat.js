// streamchat web page: chats through the extension's WebSocket (the protocol: docs/architecture.md).
// Markdown is rendered with marked and sanitized with DOMPurify, both vendored from npm
// (static/vendor/), so the page works offline and never fetches code at run time.
import DOMPurify from "./vendor/purify.es.js";
import { marked } from "./vendor/marked.esm.js";

const $ = (selector) => document.querySelector(selector);
const messages = $("#messages");
const prompt = $("#prompt");
const sendButton = $("#send");
const stopButton = $("#stop");
const statusLine = $("#status");

const SESSION_KEY = "streamchat.session_id";
let sessionId = sessionStorage.getItem(SESSION_KEY);
let socket = null;
let connecting = null;
let turn = null; // the assistant bubble of the running turn

// Model output is untrusted. Only these tags and attributes survive: no forms, inputs or
// styles (model text must not pose as the page's controls or restyle it), and images only
// when the server enables remote images (data-remote-images, StreamChat.remote_images),
// then only https:// ones: an image loads without a click, so a remote one leaks the
// conversation in its URL and a same-origin one is a request made with the user's cookies.
const REMOTE_IMAGES = document.documentElement.dataset.remoteImages === "on";
const TAGS = [
  "a", "abbr", "b", "blockquote", "br", "code", "del", "details", "em", "h1", "h2", "h3", "h4", "h5",
  "h6", "hr", "i", "kbd", "li", "ol", "p", "pre", "s", "span", "strong", "sub", "summary", "sup",
  "table", "tbody", "td", "th", "thead", "tr", "ul",
];
const PURIFY = {
  ALLOWED_TAGS: REMOTE_IMAGES ? [...TAGS, "img"] : TAGS,
  ALLOWED_ATTR: ["href", "title", "alt", "src", "start", "align"],
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false,
};
const isRemoteImage = (src) => /^https:\/\//i.test(src ?? "");

function escapeHtml(text) {
  const escapes = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  return text.replace(/[&<>"']/g, (c) => escapes[c]);
}

// A Markdown image shows its alt text unless it may load (false: marked renders it as usual).
marked.use({
  renderer: {
    image({ href, text }) {
      return REMOTE_IMAGES && isRemoteImage(href) ? false : escapeHtml(text);
    },
  },
});
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "IMG" && !isRemoteImage(node.getAttribute("src"))) node.removeAttribute("src");
  if (node.tagName === "A") node.setAttribute("rel", "noopener noreferrer nofollow");
});

function renderMarkdown(text) {
  return DOMPurify.sanitize(marked.parse(text, { gfm: true, breaks: false }), PURIFY);
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function scrollDown() {
  messages.scrollTop = messages.scrollHeight;
}

function setStatus(text) {
  statusLine.textContent = text;
}

function setRunning(running) {
  sendButton.disabled = running;
  stopButton.disabled = !running;
}

// -- one assistant turn ------------------------------------------------------------------

function startTurn() {
  const bubble = element("div", "message assistant");
  const state = {
    bubble,
    thinking: bubble.appendChild(element("div", "thinking", "Thinking…")),
    tools: bubble.appendChild(element("div", "tools")),
    content: bubble.appendChild(element("div", "content")),
    footer: bubble.appendChild(element("div", "footer")),
    text: "",
    cards: new Map(),
    pending: false,
  };
  messages.appendChild(bubble);
  scrollDown();
  return state;
}

function renderSoon(state) {
  if (state.pending) return;
  state.pending = true;
  requestAnimationFrame(() => {
    state.pending = false;
    state.content.innerHTML = renderMarkdown(state.text);
    scrollDown();
  });
}

function toolCard(state, event) {
  let card = state.cards.get(event.call_id);
  if (card) return card;
  const node = element("div", "tool-card");
  node.dataset.callId = event.call_id;
  const head = node.appendChild(element("div"));
  head.appendChild(element("span", "name", event.tool));
  const args = head.appendChild(element("span", "args"));
  const bar = node.appendChild(element("div", "bar"));
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-valuemax", "100");
  bar.setAttribute("aria-valuenow", "0");
  const fill = bar.appendChild(element("div", "fill"));
  const note = node.appendChild(element("div", "note", "Starting…"));
  card = { node, args, bar, fill, note };
  state.cards.set(event.call_id, card);
  state.tools.appendChild(node);
  return card;
}

function setPercent(card, percent) {
  const value = Math.max(0, Math.min(100, percent));
  card.bar.setAttribute("aria-valuenow", String(Math.round(value)));
  card.fill.style.width = `${value}%`;
}

const handlers = {
  "chat.thinking"(state, event) {
    if (event.kind === "reasoning") state.thinking.textContent = event.text;
  },
  "chat.token"(state, event) {
    state.thinking.hidden = true;
    state.text += event.content;
    renderSoon(state);
  },
  "tool.call"(state, event) {
    const card = toolCard(state, event);
    card.args.textContent = ` ${JSON.stringify(event.args)}`;
  },
  "tool.progress"(state, event) {
    const card = toolCard(state, event);
    card.note.textContent = event.message;
    if (event.percent !== null && event.percent !== undefined) setPercent(card, event.percent);
  },
  "tool.result"(state, event) {
    const card = toolCard(state, event);
    if (event.status === "ok") {
      setPercent(card, 100);
      card.node.classList.add("ok");
      const summary = event.result && typeof event.result === "object" && event.result.summary;
      card.note.textContent = `Done${summary ? `: ${summary}` : ""} (${Math.round(event.duration_ms)} ms)`;
    } else {
      card.node.classList.add("failed");
      const status = event.status[0].toUpperCase() + event.status.slice(1);
      card.note.textContent = event.error && event.error !== event.status ? `${status}: ${event.error}` : status;
    }
  },
  "chat.error"(state, event) {
    state.bubble.insertBefore(element("div", "error", event.message), state.footer);
  },
  "chat.complete"(state, event) {
    state.thinking.hidden = true;
    state.text = event.text;
    state.content.innerHTML = renderMarkdown(event.text);
    const seconds = (event.metrics.duration_ms / 1000).toFixed(1);
    state.footer.textContent = event.reason === "stop" ? `${seconds} s` : `${event.reason} · ${seconds} s`;
    state.bubble.dataset.reason = event.reason;
    setRunning(false);
    scrollDown();
  },
};

// -- the socket -----------------------------------------------------------------------------

function socketUrl() {
  const url = new URL("../api/streamchat/ws", window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

function connect() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(socketUrl());
    ws.onopen = () => {
      setStatus("connected");
      resolve(ws);
    };
    ws.onerror = () => reject(new Error("cannot connect to the streamchat server"));
    ws.onclose = () => {
      socket = null;
      setStatus("disconnected");
      if (turn) {
        handlers["chat.error"](turn, { message: "The connection closed before the answer ended." });
        turn = null;
        setRunning(false);
      }
    };
    ws.onmessage = (message) => onMessage(JSON.parse(message.data));
  });
}

function ensureSocket() {
  if (socket) return Promise.resolve(socket);
  connecting ??= connect().finally(() => { connecting = null; });
  return connecting;
}

function onMessage(event) {
  if (event.type === "error") {
    const target = turn ?? startTurn();
    handlers["chat.error"](target, event);
    if (!turn) target.thinking.hidden = true;
    setRunning(false);
    turn = null;
    return;
  }
  if (event.session_id && event.session_id !== sessionId) {
    sessionId = event.session_id;
    sessionStorage.setItem(SESSION_KEY, sessionId);
  }
  const handler = handlers[event.type];
  if (!turn || !handler) return;
  handler(turn, event);
  if (event.type === "chat.complete") turn = null;
}

async function send(text) {
  messages.appendChild(element("div", "message user", text));
  turn = startTurn();
  setRunning(true);
  try {
    socket = await ensureSocket();
  } catch (error) {
    handlers["chat.error"](turn, { message: error.message });
    turn = null;
    setRunning(false);
    return;
  }
  const body = { type: "chat.message", message: text };
  if (sessionId) body.session_id = sessionId;
  socket.send(JSON.stringify(body));
}

// -- history of a session kept across reloads ----------------------------------------------

async function showHistory() {
  if (!sessionId) return;
  const response = await fetch(`../api/streamchat/sessions/${encodeURIComponent(sessionId)}`);
  if (!response.ok) {
    sessionId = null;
    sessionStorage.removeItem(SESSION_KEY);
    return;
  }
  const { history } = await response.json();
  for (const message of history) {
    if (message.role === "user") messages.appendChild(element("div", "message user", message.content));
    if (message.role === "assistant" && message.content) {
      const bubble = messages.appendChild(element("div", "message assistant"));
      bubble.appendChild(element("div", "content")).innerHTML = renderMarkdown(message.content);
    }
  }
  scrollDown();
}

function xsrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)_xsrf=([^;]*)/);
  return match ? decodeURIComponent(match[1]) : "";
}

async function newChat() {
  if (turn && socket) socket.send(JSON.stringify({ type: "chat.cancel", session_id: sessionId }));
  if (sessionId) {
    await fetch(`../api/streamchat/sessions/${encodeURIComponent(sessionId)}`, {
      method: "DELETE",
      headers: { "X-XSRFToken": xsrfToken() },
    });
  }
  sessionId = null;
  sessionStorage.removeItem(SESSION_KEY);
  messages.replaceChildren();
}

$("#composer").addEventListener("submit", (submit) => {
  submit.preventDefault();
  const text = prompt.value.trim();
  if (!text || turn) return;
  prompt.value = "";
  send(text);
});
prompt.addEventListener("keydown", (key) => {
  if (key.key === "Enter" && !key.shiftKey) {
    key.preventDefault();
    $("#composer").requestSubmit();
  }
});
stopButton.addEventListener("click", () => {
  if (socket && turn) socket.send(JSON.stringify({ type: "chat.cancel", session_id: sessionId }));
});
$("#clear").addEventListener("click", newChat);

showHistory().finally(() => ensureSocket().then((ws) => { socket = ws; }, () => setStatus("cannot connect")));
