// The harmosearch page: one query box, a grid of results with each lexeme's box drawn over the
// picture, and a viewer for one image where a dragged box becomes the next query.
"use strict";

// The colours of `harmosearch query --save-annotated` (harmosearch/annotate.py PALETTE).
const COLOURS = ["#ff4040", "#40a0ff", "#ffc800", "#00c878", "#c85aff", "#ff8228"];
const CELL = { width: 216, height: 176 };
const MIN_DRAG = 6; // screen pixels: a shorter drag is a click

const state = { index: null, results: [], current: -1, opener: null };
const $ = (id) => document.getElementById(id);
const colour = (j) => COLOURS[j % COLOURS.length];
const base = () => `/api/indexes/${encodeURIComponent(state.index)}`;

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  };
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({ detail: `${response.status} ${response.statusText}` }));
  if (!response.ok) throw new Error(data.detail || response.statusText);
  return data;
}

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// A box [x0, y0, x1, y1] in pixels of a width x height image, placed in percent of its frame so
// that it lands on the same pixels at any displayed size.
function boxElement(box, width, height, stroke, label) {
  const node = element("div", "box");
  const [x0, y0, x1, y1] = box;
  node.style.left = `${(100 * x0) / width}%`;
  node.style.top = `${(100 * y0) / height}%`;
  node.style.width = `${(100 * (x1 - x0)) / width}%`;
  node.style.height = `${(100 * (y1 - y0)) / height}%`;
  node.style.borderColor = stroke;
  if (label) {
    const tag = element("span", "tag", label);
    tag.style.background = stroke;
    node.append(tag);
    if (y0 < 0.08 * height) node.classList.add("low");
  }
  return node;
}

// A lexeme as the query asked for it: its score, how many were counted ("×2"), or for an absence
// asked for ("without a hat"), how present the thing is.
function lexemeLabel(match, digits) {
  if (match.negated) return `no ${match.text} (presence ${match.presence.toFixed(2)})`;
  const counted = match.count === undefined ? "" : ` ×${match.count}`;
  return `${match.text} ${match.score.toFixed(digits)}${counted}`;
}

// The boxes of a lexeme: its box, and each instance counted; none for an absence.
function lexemeBoxes(match, j, result, labelled) {
  if (match.negated) return [];
  const label = labelled ? lexemeLabel(match, 2) : undefined;
  const instances = (match.instances || []).map((box, n) =>
    boxElement(box, result.width, result.height, colour(j), labelled ? `${n + 1}` : undefined),
  );
  return [boxElement(match.box, result.width, result.height, colour(j), label), ...instances];
}

function scoreList(result, container) {
  result.lexemes.forEach((match, j) => {
    const item = element("span");
    const swatch = element("i", "swatch");
    swatch.style.background = colour(j);
    item.append(swatch, lexemeLabel(match, 3));
    container.append(item);
  });
  // Each relation of the query and how well the boxes shown hold it (0 to 1).
  (result.relations || []).forEach((relation) => {
    const what = `${relation.negated ? "not " : ""}${relation.relation}`;
    container.append(element("span", "relation", `${relation.subject} ${what} ${relation.object} ${relation.score.toFixed(2)}`));
  });
}

function card(result, position) {
  const node = element("article", "card");
  node.tabIndex = 0;
  node.setAttribute("role", "button");
  node.dataset.position = position;
  node.dataset.imageId = result.image_id;
  const scale = Math.min(CELL.width / result.width, CELL.height / result.height);
  const frame = element("div", "frame");
  frame.style.width = `${Math.round(result.width * scale)}px`;
  frame.style.height = `${Math.round(result.height * scale)}px`;
  const img = element("img");
  img.loading = "lazy";
  img.decoding = "async";
  img.alt = result.path;
  img.draggable = false;
  img.addEventListener("error", () => img.classList.add("missing"));
  img.src = `${base()}/thumbnails/${result.image_id}`;
  frame.append(img);
  result.lexemes.forEach((match, j) => frame.append(...lexemeBoxes(match, j, result, false)));
  const cell = element("div", "cell");
  cell.append(frame);
  const caption = element("div", "caption");
  const top = element("div", "top");
  top.append(element("span", "path", `#${result.rank} ${result.path}`), element("span", "score", result.score.toFixed(3)));
  top.title = `${result.path}\nscore ${result.score.toFixed(4)}, global ${result.global_score.toFixed(4)}`;
  const scores = element("div", "scores");
  scores.append(element("span", "", `global ${result.global_score.toFixed(3)}`));
  scoreList(result, scores);
  caption.append(top, scores);
  node.append(cell, caption);
  return node;
}

function show(data, milliseconds) {
  state.results = data.results;
  const legend = $("legend");
  legend.replaceChildren();
  data.lexemes.forEach((text, j) => {
    const item = element("span");
    const swatch = element("i", "swatch");
    swatch.style.background = colour(j);
    item.append(swatch, text);
    legend.append(item);
  });
  const grid = $("results");
  const cards = document.createDocumentFragment();
  data.results.forEach((result, i) => cards.append(card(result, i)));
  grid.replaceChildren(cards);
  const count = data.results.length === 1 ? "1 result" : `${data.results.length} results`;
  const warnings = data.warnings.length ? ` (${data.warnings.join("; ")})` : "";
  status(`${count} for ${JSON.stringify(data.query)} in ${Math.round(milliseconds)} ms${warnings}`);
}

async function run(kind, body) {
  status("searching…");
  const started = performance.now();
  try {
    show(await api(`${base()}/${kind}`, body), performance.now() - started);
  } catch (error) {
    status(error.message, true);
  }
}

function k() {
  return Math.max(1, Math.min(1000, parseInt($("k").value, 10) || 50));
}

function searchText() {
  const text = $("q").value.trim();
  if (!text) {
    status("type what to look for, e.g. red umbrella near bench", true);
    return;
  }
  const params = new URLSearchParams({ q: text, index: state.index });
  history.replaceState(null, "", `#${params}`);
  run("search", {
    text,
    k: k(),
    alpha: parseFloat($("alpha").value),
    global_only: $("global-only").checked,
    refine: $("refine").checked, // starts as the index's search.refine
  });
}

// The viewer: one result at full size with its boxes; drag to search by a region.

function open(position) {
  const result = state.results[position];
  if (!result) return;
  state.current = position;
  const viewer = $("viewer");
  if (viewer.hidden) state.opener = document.activeElement;
  viewer.hidden = false;
  const stage = $("stage");
  const scale = Math.min(4, (window.innerWidth - 40) / result.width, (window.innerHeight - 150) / result.height);
  stage.style.width = `${Math.round(result.width * scale)}px`;
  stage.style.height = `${Math.round(result.height * scale)}px`;
  stage.querySelectorAll(".box").forEach((node) => node.remove());
  $("full").src = `${base()}/images/${result.image_id}`;
  $("full").alt = result.path;
  result.lexemes.forEach((match, j) => stage.append(...lexemeBoxes(match, j, result, true)));
  $("viewer-title").textContent =
    `#${result.rank} of ${state.results.length}  ${result.path}  ${result.width}×${result.height}  score ${result.score.toFixed(3)}`;
  const scores = $("viewer-scores");
  scores.replaceChildren(element("span", "", `global ${result.global_score.toFixed(3)}`));
  scoreList(result, scores);
  $("close").focus();
}

function close() {
  $("viewer").hidden = true;
  $("full").removeAttribute("src");
  const card = document.querySelector(`.card[data-position="${state.current}"]`);
  (card || state.opener || $("q")).focus();
}

function step(delta) {
  const next = state.current + delta;
  if (next >= 0 && next < state.results.length) open(next);
}

function moreLikeThis() {
  const result = state.results[state.current];
  close();
  run("similar", { image_id: result.image_id, k: k() });
}

function dragToSearch() {
  const stage = $("stage");
  let start = null;
  let draft = null;
  const point = (event) => {
    const rect = stage.getBoundingClientRect();
    return {
      x: Math.max(0, Math.min(rect.width, event.clientX - rect.left)),
      y: Math.max(0, Math.min(rect.height, event.clientY - rect.top)),
      rect,
    };
  };
  stage.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    start = point(event);
    stage.setPointerCapture(event.pointerId);
    event.preventDefault();
  });
  stage.addEventListener("pointermove", (event) => {
    if (!start) return;
    const { x, y, rect } = point(event);
    if (!draft) {
      draft = element("div", "box draft");
      stage.append(draft);
    }
    draft.style.left = `${(100 * Math.min(start.x, x)) / rect.width}%`;
    draft.style.top = `${(100 * Math.min(start.y, y)) / rect.height}%`;
    draft.style.width = `${(100 * Math.abs(x - start.x)) / rect.width}%`;
    draft.style.height = `${(100 * Math.abs(y - start.y)) / rect.height}%`;
  });
  stage.addEventListener("pointerup", (event) => {
    if (!start) return;
    const end = point(event);
    const from = start;
    start = null;
    if (draft) draft.remove();
    draft = null;
    if (Math.abs(end.x - from.x) < MIN_DRAG || Math.abs(end.y - from.y) < MIN_DRAG) return;
    const result = state.results[state.current];
    const sx = result.width / end.rect.width;
    const sy = result.height / end.rect.height;
    const box = [
      Math.min(from.x, end.x) * sx,
      Math.min(from.y, end.y) * sy,
      Math.max(from.x, end.x) * sx,
      Math.max(from.y, end.y) * sy,
    ].map((v) => Math.round(v * 10) / 10);
    close();
    run("region", { image_id: result.image_id, box, k: k() });
  });
}

async function chooseIndex(name) {
  state.index = name;
  const info = await api(base());
  $("alpha").value = info.config.search.alpha;
  $("refine").checked = info.config.search.refine;
  $("alpha-value").value = Number($("alpha").value).toFixed(2);
  const model = info.model.spec;
  status(`${info.images} images, ${info.regions} regions, model ${model}`);
}

async function init() {
  $("search").addEventListener("submit", (event) => {
    event.preventDefault();
    searchText();
  });
  $("alpha").addEventListener("input", () => {
    $("alpha-value").value = Number($("alpha").value).toFixed(2);
  });
  $("index").addEventListener("change", () => chooseIndex($("index").value).then(() => $("q").value.trim() && searchText()));
  $("results").addEventListener("click", (event) => {
    const node = event.target.closest(".card");
    if (node) open(Number(node.dataset.position));
  });
  $("results").addEventListener("keydown", (event) => {
    const node = event.target.closest(".card");
    if (node && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      open(Number(node.dataset.position));
    }
  });
  $("close").addEventListener("click", close);
  $("prev").addEventListener("click", () => step(-1));
  $("next").addEventListener("click", () => step(1));
  $("more").addEventListener("click", moreLikeThis);
  document.addEventListener("keydown", (event) => {
    if ($("viewer").hidden) return;
    if (event.key === "Escape") close();
    else if (event.key === "ArrowLeft") step(-1);
    else if (event.key === "ArrowRight") step(1);
    else return;
    event.preventDefault();
  });
  dragToSearch();

  try {
    const indexes = await api("/api/indexes");
    const select = $("index");
    indexes.forEach((entry) => select.append(new Option(`${entry.name} (${entry.images} images)`, entry.name)));
    select.hidden = indexes.length < 2;
    const params = new URLSearchParams(location.hash.slice(1));
    const wanted = indexes.find((entry) => entry.name === params.get("index"));
    select.value = (wanted || indexes[0]).name;
    await chooseIndex(select.value);
    if (params.get("q")) {
      $("q").value = params.get("q");
      searchText();
    }
  } catch (error) {
    status(error.message, true);
  }
}

init();
