// The live-score demo: one card per match topic under scores/, kept current by retained
// messages (a fresh page shows the score at once) and live updates, animated when they change.
import { connect, text } from "./fanfare.mjs";

const params = new URLSearchParams(location.search);
const url = params.get("ws") ||
  (location.protocol === "https:" ? "wss://" : "ws://") + location.host + (params.get("path") || "/mqtt");
const prefix = params.get("topic") || "scores";

const statusEl = document.getElementById("status");
const list = document.getElementById("matches");
/** @type {Map<string, HTMLElement>} */
const cards = new Map();

function setStatus(state, label) {
  statusEl.className = "status " + state;
  statusEl.querySelector("b").textContent = label;
}

const client = connect(url, { keepalive: 20 });
client.on("connect", () => setStatus("live", "live"));
client.on("offline", () => setStatus("offline", "reconnecting…"));
client.subscribe(prefix + "/+", { qos: 0 }, (topic, payload) => {
  let match;
  try {
    match = JSON.parse(text(payload));
  } catch {
    return;
  }
  render(topic, match);
});

/** Sets an element's text and flashes it when the value changed. */
function put(el, value) {
  value = String(value ?? "");
  if (el.textContent === value) return;
  const first = !el.dataset.seen;
  el.textContent = value;
  el.dataset.seen = "1";
  if (first) return;
  el.classList.remove("flash");
  void el.offsetWidth; // restart the animation
  el.classList.add("flash");
}

function card(topic) {
  let el = cards.get(topic);
  if (el) return el;
  el = document.createElement("article");
  el.className = "match";
  el.dataset.topic = topic;
  el.innerHTML = `<h2><span class="title"></span><span class="state"></span></h2>
    <div class="row"><span class="team home"></span><span class="nums home"></span></div>
    <div class="row"><span class="team away"></span><span class="nums away"></span></div>
    <div class="note"></div>`;
  cards.set(topic, el);
  document.getElementById("empty")?.remove();
  const after = [...cards.keys()].sort().indexOf(topic);
  list.insertBefore(el, list.children[after] || null);
  return el;
}

/** Makes `parent` hold exactly `n` spans of class `cls`. */
function spans(parent, n, cls) {
  while (parent.children.length > n) parent.lastChild.remove();
  while (parent.children.length < n) {
    const s = document.createElement("span");
    s.className = cls;
    parent.append(s);
  }
  return [...parent.children];
}

function render(topic, m) {
  const el = card(topic);
  const $ = (sel) => el.querySelector(sel);
  put($(".title"), m.title || topic.split("/").pop());
  put($(".team.home"), m.home);
  put($(".team.away"), m.away);
  const state = $(".state");
  state.classList.toggle("final", m.status === "final" || m.status === "FT");
  if (m.sport === "tennis") {
    put(state, m.status === "final" ? "final" : "set " + (m.sets || []).length);
    for (const [side, i] of [["home", 0], ["away", 1]]) {
      const sets = m.sets || [];
      const cells = spans($(".nums." + side), sets.length + 1, "set");
      sets.forEach((set, n) => put(cells[n], set[i]));
      cells.forEach((c, n) => c.classList.toggle("pts", n === sets.length));
      put(cells.at(-1), m.status === "final" ? "" : (m.points || ["", ""])[i]);
      $(".team." + side).classList.toggle("serving", m.status !== "final" && m.serving === i);
    }
  } else {
    put(state, m.status === "live" ? `${m.minute}'` : m.status);
    for (const [side, i] of [["home", 0], ["away", 1]]) {
      const [goals] = spans($(".nums." + side), 1, "goals");
      put(goals, (m.score || [0, 0])[i]);
    }
  }
  put($(".note"), m.last || "");
}

// For tests and the curious.
window.fanfareDemo = { client, cards };
