// The gadms search page: text search, search by a result or a dropped image, the query kept in the URL.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token");  // passed on to every API and image request
const form = document.getElementById("search-form");
const input = document.getElementById("q");
const topK = document.getElementById("k");
const statusLine = document.getElementById("status");
const explanationLine = document.getElementById("explanation");
const grid = document.getElementById("results");

function withToken(url) {
  if (!token) return url;
  return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
}

async function call(url, options) {
  const response = await fetch(withToken(url), options);
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function showResults(results, label) {
  grid.replaceChildren();
  for (const hit of results) {
    const card = document.createElement("figure");
    card.className = "result";
    card.dataset.id = hit.id;
    card.title = "find people like this one";
    const img = document.createElement("img");
    img.src = hit.thumbnail;  // already carries the token
    img.alt = hit.path;
    const meta = document.createElement("figcaption");
    meta.className = "meta";
    meta.textContent = `#${hit.rank}  ${hit.score.toFixed(3)}  ${hit.path}`;
    card.append(img, meta);
    card.addEventListener("click", () => searchById(hit.id, hit.path));
    grid.append(card);
  }
  statusLine.textContent = `${results.length} results for ${label}`;
}

function showExplanation(explanation) {
  explanationLine.replaceChildren();
  if (!explanation || !explanation.words.length) return;
  const best = Math.max(...explanation.words.map((w) => w.score));
  explanationLine.append("Words that carried the top match: ");
  for (const { word, score } of explanation.words) {
    const span = document.createElement("span");
    span.className = "word" + (score === best && best > 0 ? " top" : "");
    span.dataset.score = score.toFixed(4);
    span.textContent = word;
    span.style.background = `rgba(255, 140, 0, ${(0.1 + 0.8 * score).toFixed(3)})`;
    explanationLine.append(span, " ");
  }
}

async function searchText(query, k, push) {
  if (!query.trim()) return;
  if (push) {
    const next = new URLSearchParams({ q: query, k: String(k) });
    if (token) next.set("token", token);
    history.pushState(null, "", "/?" + next.toString());
  }
  document.title = `${query} - gadms search`;
  statusLine.textContent = "searching...";
  try {
    const body = await call(`/api/search?q=${encodeURIComponent(query)}&k=${k}&explain=1`);
    showResults(body.results, `"${body.query}"`);
    showExplanation(body.explanation);
  } catch (error) {
    grid.replaceChildren();
    explanationLine.replaceChildren();
    statusLine.textContent = "error: " + error.message;
  }
}

async function searchById(id, path) {
  statusLine.textContent = "searching...";
  explanationLine.replaceChildren();
  try {
    const body = await call(`/api/search/image?id=${encodeURIComponent(id)}&k=${topK.value}`);
    showResults(body.results, `people like ${path}`);
  } catch (error) {
    statusLine.textContent = "error: " + error.message;
  }
}

async function searchByFile(file) {
  statusLine.textContent = "searching...";
  explanationLine.replaceChildren();
  const data = new FormData();
  data.append("image", file);
  try {
    const body = await call(`/api/search/image?k=${topK.value}`, { method: "POST", body: data });
    showResults(body.results, `people like ${file.name}`);
  } catch (error) {
    statusLine.textContent = "error: " + error.message;
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  searchText(input.value, topK.value, true);
});

const drop = document.getElementById("drop");
let dragDepth = 0;
window.addEventListener("dragenter", (event) => { event.preventDefault(); dragDepth++; drop.hidden = false; });
window.addEventListener("dragleave", () => { if (--dragDepth <= 0) { dragDepth = 0; drop.hidden = true; } });
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => {
  event.preventDefault();
  dragDepth = 0;
  drop.hidden = true;
  const file = event.dataTransfer.files[0];
  if (file) searchByFile(file);
});

function fromUrl() {
  const query = new URLSearchParams(location.search);
  const k = query.get("k");
  if (k && [...topK.options].some((o) => o.value === k)) topK.value = k;
  input.value = query.get("q") || "";
  if (input.value) searchText(input.value, topK.value, false);
}
window.addEventListener("popstate", fromUrl);

call("/api/info").then((info) => {
  document.getElementById("info").textContent =
    `${info.images ?? "?"} images in ${info.gallery}, model ${info.model} (${info.model_fingerprint.slice(0, 12)}), gadms ${info.gadms_version}`;
}).catch(() => {});
fromUrl();
