// clip-match annotate: keyboard-first labelling page, for images or tile puzzles.
//
// The page keeps every item's state locally, changes it at once (so the next item shows without
// waiting for the server) and sends each change through one ordered queue; a change that cannot be
// saved shows a banner and is retried. Every few seconds it asks the server for what changed since
// (another tab's work). Model suggestions come from a background worker on the server: the page asks
// for the items on screen and next, and never waits for them.
"use strict";

(() => {
  const PREFETCH = 4;
  const CACHE_SIZE = 16;
  const POLL_MS = 3000;
  const ASSIST_POLL_MS = 400;
  const MAX_SUGGESTIONS = 8;
  const MODEL_CHIPS = 3;

  const $ = (id) => document.getElementById(id);
  const ui = {
    stage: $("stage"), position: $("position"), path: $("path"), status: $("status"), banner: $("banner"),
    chips: $("current-labels"), assist: $("assist"), input: $("label-input"), suggestions: $("suggestions"),
    filter: $("filter"), hotkeys: $("hotkeys"), labelList: $("label-list"), progressText: $("progress-text"),
    progressFill: $("progress-fill"), rejectCount: $("reject-count"), rejectList: $("reject-list"),
    assistStatus: $("assist-status"),
  };

  const state = {
    images: [],            // view order (natural path order unless --order uncertain): rows from the server
    position: new Map(),   // image id -> index in images
    natural: new Map(),    // image id -> index in natural path order
    recency: new Map(),    // label name -> last_used (higher = more recent)
    version: 0,
    pos: -1,
    filter: "all",         // all | todo | labelled | skipped | label:<name>
    pending: new Map(),    // image id -> writes in flight (their local state wins)
    suggestions: [],
    highlighted: -1,
    mode: "images",        // images | puzzles
    order: "path",         // path | uncertain
    marks: new Map(),      // puzzle id -> {tiles: Set of tile numbers, touched: bool}
    tileMode: 0,           // puzzles: the tile whose label is being typed (0: none)
  };
  const assist = { status: { state: "off", message: "" }, seq: 0, pending: 0, items: new Map(), ranked: new Map() };
  const timings = [];      // ms from Enter to the next item painted (read by the browser tests)
  window.clipMatchAnnotate = { timings, state, assist, puzzle: () => puzzleView() };

  const client = (() => {  // one id per tab: undo reverts this tab's actions only
    let id = sessionStorage.getItem("clip-match-client");
    if (!id) {
      id = Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, "0")).join("");
      sessionStorage.setItem("clip-match-client", id);
    }
    return id;
  })();

  // ---- server -------------------------------------------------------------------------------

  const queue = [];
  let pumping = false;

  function request(method, url, body, imageId) {
    return new Promise((resolve, reject) => {
      queue.push({ method, url, body, imageId, resolve, reject });
      if (imageId !== undefined) state.pending.set(imageId, (state.pending.get(imageId) || 0) + 1);
      pump();
    });
  }

  async function pump() {
    if (pumping) return;
    pumping = true;
    while (queue.length) {
      const job = queue[0];
      let response;
      try {
        response = await fetch(job.url, {
          method: job.method,
          headers: job.body === undefined ? { "X-Clip-Match-Client": client }
            : { "Content-Type": "application/json", "X-Clip-Match-Client": client },
          body: job.body === undefined ? undefined : JSON.stringify(job.body),
          cache: "no-store",
        });
      } catch (error) {
        showBanner(`Server not reachable; ${queue.length} change(s) waiting, retrying…`);
        await new Promise((r) => setTimeout(r, 1500));
        continue;
      }
      queue.shift();
      if (job.imageId !== undefined) {
        const left = state.pending.get(job.imageId) - 1;
        if (left) state.pending.set(job.imageId, left); else state.pending.delete(job.imageId);
      }
      const payload = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
      if (response.ok) {
        hideBanner();
        job.resolve(payload);
      } else {
        showBanner(`Not saved: ${payload.error || response.status}. Reloaded the server's state.`);
        job.reject(new Error(payload.error));
        queue.push({ method: "GET", url: "/api/state?since=0", resolve: applyState, reject: () => {} });
      }
    }
    pumping = false;
  }

  function applyState(payload) {
    if (state.images.length === 0) {
      state.images = payload.images;
      state.images.forEach((img, i) => { state.position.set(img.id, i); state.natural.set(img.id, i); });
    } else {
      for (const row of payload.images) applyRow(row);
    }
    for (const label of payload.labels) state.recency.set(label.name, label.last_used);  // labels used since
    state.version = payload.version;
  }

  function applyRow(row) {
    const i = state.position.get(row.id);
    if (i === undefined || state.pending.has(row.id)) return;
    state.images[i] = row;
    if (i === state.pos) renderCurrent();
    scheduleSidebar();
  }

  function poll() {
    if (document.hidden || queue.length) return;
    request("GET", `/api/state?since=${state.version}`).then(applyState).catch(() => {});
  }

  // ---- model suggestions (read-only, outside the write queue) ---------------------------------

  let fetching = false;
  let assistTimer = null;

  function wantedIds() {
    const ids = [];
    for (let i = state.pos, n = 0; i >= 0 && n <= PREFETCH; n++, i = neighbour(i, 1)) ids.push(state.images[i].id);
    return ids;
  }

  async function fetchSuggestions() {
    if (assist.status.state !== "on" || fetching) return;
    fetching = true;
    clearTimeout(assistTimer);
    try {
      const response = await fetch(`/api/suggestions?since=${assist.seq}&want=${wantedIds().join(",")}`,
        { cache: "no-store" });
      if (response.ok) applySuggestions(await response.json());
    } catch (error) { /* the next poll retries */ }
    fetching = false;
    const img = currentImage();
    const waiting = assist.pending > 0 || (img && !(puzzles() ? suggestionFor(img) : assist.ranked.has(img.id)));
    assistTimer = setTimeout(fetchSuggestions, waiting ? ASSIST_POLL_MS : POLL_MS);
  }

  function refreshSuggestionsSoon() {
    if (fetching) return;  // the answer in flight schedules the next one
    clearTimeout(assistTimer);
    assistTimer = setTimeout(fetchSuggestions, ASSIST_POLL_MS);
  }

  function applySuggestions(payload) {
    assist.status = payload.status;
    assist.seq = payload.seq;
    assist.pending = payload.pending;
    for (const item of payload.items) assist.items.set(item.id, item);
    for (const [id, ranking] of Object.entries(payload.ranked)) assist.ranked.set(Number(id), ranking);
    if (payload.items.length) resortAhead();
    renderAssistStatus();
    if (currentImage()) renderCurrent();
  }

  // A puzzle's suggestion counts only for the prompt it was made for; it may be an error (no marks then).
  function suggestionFor(img) {
    const item = assist.items.get(img.id);
    return !item || (puzzles() && item.prompt !== img.puzzle.prompt) ? null : item;
  }

  function rankedLabels(img) {
    return (assist.ranked.get(img.id) || []).map(([name]) => name).filter((name) => !img.labels.includes(name));
  }

  // --order uncertain: what lies ahead is kept sorted by the model's margin (least sure first).
  function resortAhead() {
    if (state.order !== "uncertain") return;
    const margin = (img) => { const s = suggestionFor(img); return s && s.margin !== undefined ? s.margin : Infinity; };
    const ahead = state.images.slice(state.pos + 1)
      .sort((a, b) => margin(a) - margin(b) || state.natural.get(a.id) - state.natural.get(b.id));
    state.images.splice(state.pos + 1, ahead.length, ...ahead);
    ahead.forEach((img, i) => state.position.set(img.id, state.pos + 1 + i));
  }

  function renderAssistStatus() {
    const { status } = assist;
    ui.assistStatus.textContent = status.state !== "on" ? status.message
      : `${status.message}${assist.pending ? ` · ${assist.pending} still to score` : " · all scored"}`;
    ui.assistStatus.className = status.state === "failed" ? "failed" : "";
  }

  // ---- labels -------------------------------------------------------------------------------

  const clean = (text) => text.split(/\s+/).filter(Boolean).join(" ");
  const puzzles = () => state.mode === "puzzles";

  // Images: labelled. Puzzles: answered.
  const labelled = (img) => (puzzles() ? img.puzzle.answer !== null : img.labels.length > 0);

  // The names an item carries: its labels, or a puzzle's prompt and its tiles' own labels.
  function namesOf(img) {
    if (!puzzles()) return img.labels;
    return [...new Set([...(img.puzzle.prompt ? [img.puzzle.prompt] : []), ...Object.values(img.puzzle.tiles).flat()])];
  }

  function counts() {
    const result = new Map();
    for (const img of state.images) for (const name of namesOf(img)) result.set(name, (result.get(name) || 0) + 1);
    return result;
  }

  function touchLabel(name) {
    let newest = 0;
    for (const value of state.recency.values()) newest = Math.max(newest, value);
    state.recency.set(name, newest + 1);
  }

  // Hotkeys 1-9 (images): the most used labels, ties broken by recency.
  function hotkeyLabels(countMap = counts()) {
    return [...countMap.keys()].sort((a, b) => countMap.get(b) - countMap.get(a)
      || (state.recency.get(b) || 0) - (state.recency.get(a) || 0) || a.localeCompare(b)).slice(0, 9);
  }

  // Autocomplete: substring match (any script); the model's ranking for this image first where there
  // is one, then prefix matches, then frequency plus a bonus for recent use (10 for the label used
  // last, 5 for the one before, ...).
  function suggest(query) {
    const q = query.trim().toLowerCase();
    const img = currentImage();
    if (!q || !img) return [];
    const countMap = counts();
    const byRecency = [...state.recency.entries()].sort((a, b) => b[1] - a[1]).map(([name]) => name);
    const age = new Map(byRecency.map((name, i) => [name, i]));
    const current = new Set(puzzles() ? [] : img.labels);
    const rank = new Map((puzzles() ? [] : rankedLabels(img)).map((name, i) => [name, i]));
    const modelRank = (name) => (rank.has(name) ? rank.get(name) : Infinity);
    const score = (name) => (countMap.get(name) || 0) + 10 / (1 + (age.has(name) ? age.get(name) : 1e9));
    return [...countMap.keys()]
      .filter((name) => !current.has(name) && name.toLowerCase().includes(q))
      .map((name) => ({ name, model: modelRank(name), prefix: name.toLowerCase().startsWith(q), score: score(name) }))
      .sort((a, b) => (a.model - b.model) || (b.prefix - a.prefix) || (b.score - a.score) || a.name.localeCompare(b.name))
      .slice(0, MAX_SUGGESTIONS)
      .map((s) => s.name);
  }

  function changeLabels(img, add, remove) {
    const next = new Set(img.labels);
    add.forEach((name) => { next.add(name); touchLabel(name); });
    remove.forEach((name) => next.delete(name));
    img.labels = [...next].sort();
    request("POST", `/api/images/${img.id}/labels`, { add, remove }, img.id)
      .then((r) => { applyRow(r.image); refreshSuggestionsSoon(); }, () => {});  // a new label gets ranked
    renderCurrent();
    scheduleSidebar();
  }

  function toggleHotkey(n) {
    const name = hotkeyLabels()[n - 1];
    const img = currentImage();
    if (!name || !img) return;
    if (img.labels.includes(name)) changeLabels(img, [], [name]); else changeLabels(img, [name], []);
    flash(`${img.labels.includes(name) ? "added" : "removed"} ${name}`);
  }

  function submit(stay) {
    const started = performance.now();
    const img = currentImage();
    if (!img) return;
    const chosen = state.highlighted >= 0 ? state.suggestions[state.highlighted] : ui.input.value;
    const name = clean(chosen || "");
    ui.input.value = "";
    closeSuggestions();
    if (name.length > 200) { showBanner("Labels are at most 200 characters."); return; }
    if (puzzles()) { submitPuzzle(img, name, started); return; }
    if (name && !img.labels.includes(name)) changeLabels(img, [name], []);
    if (!stay) move(1, started);
  }

  function toggleSkip() {
    const img = currentImage();
    if (!img) return;
    const started = performance.now();
    img.skipped = !img.skipped;
    request("POST", `/api/images/${img.id}/skip`, { skipped: img.skipped }, img.id).then((r) => applyRow(r.image), () => {});
    flash(img.skipped ? "skipped (Ctrl+Z undoes)" : "no longer skipped");
    if (img.skipped) move(1, started); else renderCurrent();
    scheduleSidebar();
  }

  async function undo() {
    try {
      const { undone } = await request("POST", "/api/undo", {});
      if (!undone) { flash("nothing to undo in this tab"); return; }
      if (undone.image_id !== null) state.marks.delete(undone.image_id);
      applyState(await request("GET", `/api/state?since=${state.version}`));
      if (undone.image_id !== null && state.position.has(undone.image_id)) show(state.position.get(undone.image_id));
      flash(`undid ${describe(undone)}`);
    } catch (error) { /* banner already shown */ }
  }

  function describe(action) {
    if (action.kind === "labels") {
      const names = [...action.added.map((n) => `+${n}`), ...action.removed.map((n) => `−${n}`)].join(" ");
      return action.tile ? `${names} on tile ${action.tile}` : names;
    }
    if (action.kind === "skip") return action.skipped ? "skip" : "unskip";
    if (action.kind === "puzzle") return action.answer ? `answer ${action.answer.join(" ")}` : `prompt ${action.prompt}`;
    return `${action.kind} ${action.from} → ${action.to}`;
  }

  async function rename(name) {
    const target = prompt(`Rename "${name}" everywhere to (an existing label merges):`, name);
    if (target === null || clean(target) === "" || clean(target) === name) return;
    try {
      const result = await request("POST", "/api/labels/rename", { from: name, to: clean(target) });
      applyState(await request("GET", `/api/state?since=${state.version}`));
      if (state.filter === `label:${name}`) state.filter = `label:${clean(target)}`;
      flash(`${result.kind === "merge" ? "merged" : "renamed"} ${name} → ${clean(target)} on ${result.images} image(s)`);
      scheduleSidebar();
    } catch (error) { /* banner already shown */ }
    ui.input.focus();
  }

  // ---- puzzles ------------------------------------------------------------------------------

  // The tiles marked on a puzzle: the annotator's own marks once touched, else the saved answer,
  // else the model's pre-marked selection for its prompt.
  function marksOf(img) {
    const own = state.marks.get(img.id);
    if (own && own.touched) return { tiles: own.tiles, source: "touched" };
    if (img.puzzle.answer) return { tiles: new Set(img.puzzle.answer), source: "saved" };
    const suggestion = suggestionFor(img);
    if (suggestion && !suggestion.error) return { tiles: new Set(suggestion.selected), source: "model" };
    const waiting = assist.status.state === "on" && img.puzzle.prompt && !suggestion;
    return { tiles: new Set(), source: waiting ? "pending" : "none" };
  }

  function puzzleView() {
    const img = currentImage();
    if (!img || !puzzles()) return null;
    const { tiles, source } = marksOf(img);
    return { id: img.id, path: img.path, prompt: img.puzzle.prompt, marked: [...tiles].sort((a, b) => a - b), source };
  }

  function toggleTile(n) {
    const img = currentImage();
    if (!img) return;
    if (n > img.puzzle.boxes.length) { flash(`a ${img.puzzle.layout} puzzle has tiles 1–${img.puzzle.boxes.length}`); return; }
    const tiles = new Set(marksOf(img).tiles);
    if (tiles.has(n)) tiles.delete(n); else tiles.add(n);
    state.marks.set(img.id, { tiles, touched: true });
    renderTiles(img);
  }

  function submitPuzzle(img, text, started) {
    if (state.tileMode) {
      if (text) changeTileLabels(img, state.tileMode, [text], []);
      leaveTileMode();
    } else if (text) {
      setPrompt(img, text);
    } else if (!img.puzzle.prompt) {
      flash("type the prompt first (Enter sets it)");
    } else {
      const answer = [...marksOf(img).tiles].sort((a, b) => a - b);
      if (!answer.length) { flash("mark the matching tiles first (S skips a puzzle without any)"); return; }
      img.puzzle.answer = answer;
      state.marks.delete(img.id);
      request("POST", `/api/puzzles/${img.id}`, { answer }, img.id).then((r) => applyRow(r.image), () => {});
      scheduleSidebar();
      move(1, started);
    }
  }

  function setPrompt(img, text) {
    img.puzzle.prompt = text;
    request("POST", `/api/puzzles/${img.id}`, { prompt: text }, img.id)
      .then((r) => { applyRow(r.image); refreshSuggestionsSoon(); }, () => {});
    flash(`prompt: ${text}`);
    renderCurrent();
    scheduleSidebar();
  }

  function changeTileLabels(img, tile, add, remove) {
    const names = new Set(img.puzzle.tiles[tile] || []);
    add.forEach((name) => { names.add(name); touchLabel(name); });
    remove.forEach((name) => names.delete(name));
    img.puzzle.tiles[tile] = [...names].sort();
    request("POST", `/api/puzzles/${img.id}/tiles/${tile}/labels`, { add, remove }, img.id)
      .then((r) => applyRow(r.image), () => {});
    renderTiles(img);
    scheduleSidebar();
  }

  function enterTileMode(n) {
    const img = currentImage();
    if (!img || n > img.puzzle.boxes.length) return;
    state.tileMode = n;
    setPlaceholder();
    ui.input.focus();
    renderTiles(img);
  }

  function leaveTileMode() {
    state.tileMode = 0;
    setPlaceholder();
    if (currentImage()) renderTiles(currentImage());
  }

  function setPlaceholder() {
    const img = currentImage();
    ui.input.placeholder = !puzzles() ? "type a label · Enter saves and moves on · Shift+Enter adds another"
      : state.tileMode ? `label of tile ${state.tileMode} · Enter adds it · Esc cancels`
      : img && !img.puzzle.prompt ? "type the prompt · Enter sets it"
        : "1–9 or click: mark tiles · Enter saves and moves on · type: change the prompt · Shift+1–9: label a tile";
  }

  function puzzleElement(img) {
    const frame = document.createElement("div");
    frame.className = "puzzle";
    const overlay = document.createElement("div");
    overlay.className = "tiles";
    frame.append(imageElement(img), overlay);
    return frame;
  }

  function renderTiles(img) {
    const overlay = ui.stage.querySelector(".tiles");
    if (!overlay) return;
    const [width, height] = img.puzzle.size;
    const { tiles } = marksOf(img);
    const suggestion = suggestionFor(img);
    overlay.replaceChildren(...img.puzzle.boxes.map(([left, top, right, bottom], i) => {
      const n = i + 1;
      const tile = document.createElement("div");
      tile.className = `tile${tiles.has(n) ? " marked" : ""}${state.tileMode === n ? " labelling" : ""}`;
      tile.dataset.tile = String(n);
      Object.assign(tile.style, { left: `${(100 * left) / width}%`, top: `${(100 * top) / height}%`,
        width: `${(100 * (right - left)) / width}%`, height: `${(100 * (bottom - top)) / height}%` });
      const number = document.createElement("span");
      number.className = "number";
      number.textContent = suggestion && !suggestion.error ? `${n} · ${suggestion.scores[i].toFixed(2)}` : String(n);
      const add = document.createElement("button");
      add.className = "add";
      add.title = `label tile ${n} (Shift+${n})`;
      add.textContent = "+";
      add.addEventListener("click", (event) => { event.stopPropagation(); enterTileMode(n); });
      const names = (img.puzzle.tiles[n] || []).map((name) => {
        const chip = document.createElement("button");
        chip.className = "chip";
        chip.title = "remove this label";
        chip.textContent = `${name} ×`;
        chip.addEventListener("click", (event) => { event.stopPropagation(); changeTileLabels(img, n, [], [name]); });
        return chip;
      });
      tile.append(number, add, ...names);
      tile.addEventListener("click", () => { toggleTile(n); ui.input.focus(); });
      return tile;
    }));
    layoutTiles();
  }

  // The overlay covers the picture as drawn (object-fit: contain): same aspect, centred in the stage.
  function layoutTiles() {
    const overlay = ui.stage.querySelector(".tiles");
    const img = currentImage();
    if (!overlay || !img || !puzzles()) return;
    const [width, height] = img.puzzle.size;
    const box = ui.stage.getBoundingClientRect();
    const scale = Math.min(box.width / width, box.height / height);
    Object.assign(overlay.style, { width: `${width * scale}px`, height: `${height * scale}px`,
      left: `${(box.width - width * scale) / 2}px`, top: `${(box.height - height * scale) / 2}px` });
  }

  // ---- navigation and display ---------------------------------------------------------------

  const currentImage = () => state.images[state.pos];

  function matches(img) {
    switch (state.filter) {
      case "all": return true;
      case "todo": return !labelled(img) && !img.skipped;
      case "labelled": return labelled(img);
      case "skipped": return img.skipped && !labelled(img);
      default: return namesOf(img).includes(state.filter.slice("label:".length));
    }
  }

  function neighbour(from, direction) {
    for (let i = from + direction; i >= 0 && i < state.images.length; i += direction) {
      if (matches(state.images[i])) return i;
    }
    return -1;
  }

  function move(direction, started) {
    const target = neighbour(state.pos, direction);
    if (target < 0) { flash(direction > 0 ? "last item in this view" : "first item in this view"); return; }
    show(target, started);
  }

  function imageElement(img) {
    let el = cache.get(img.id);
    if (el && el.dataset.v === String(img.v)) {
      cache.delete(img.id);
      cache.set(img.id, el);
      return el;
    }
    el = new Image();
    el.decoding = "async";
    el.alt = img.path;
    el.dataset.v = String(img.v);
    el.src = `/api/images/${img.id}/view?v=${img.v}`;
    el.decode().catch(() => {});
    cache.set(img.id, el);
    while (cache.size > CACHE_SIZE) cache.delete(cache.keys().next().value);
    return el;
  }
  const cache = new Map();

  function show(pos, started) {
    state.pos = pos;
    state.tileMode = 0;
    const img = currentImage();
    const el = imageElement(img);
    el.onerror = () => { ui.stage.textContent = `Cannot display ${img.path} (not a decodable image).`; };
    ui.stage.replaceChildren(puzzles() ? puzzleElement(img) : el);
    if (started !== undefined) {
      const painted = () => requestAnimationFrame(() => setTimeout(() => timings.push(performance.now() - started)));
      if (el.complete && el.naturalWidth) painted(); else el.addEventListener("load", painted, { once: true });
    }
    renderCurrent();
    for (let i = pos, n = 0; n < PREFETCH; n++) {
      i = neighbour(i, 1);
      if (i < 0) break;
      imageElement(state.images[i]);
    }
    const before = neighbour(pos, -1);
    if (before >= 0) imageElement(state.images[before]);
    scheduleSidebar();
    fetchSuggestions();
  }

  function renderCurrent() {
    const img = currentImage();
    if (!img) return;
    const shown = state.filter === "all" ? "" : ` · ${state.images.filter(matches).length} in view`;
    ui.position.textContent = `${state.pos + 1} / ${state.images.length}${shown}`;
    ui.path.textContent = img.path + (img.skipped ? "  (skipped)" : "");
    setPlaceholder();
    if (puzzles()) { renderPuzzleBar(img); renderTiles(img); return; }
    ui.chips.replaceChildren(...img.labels.map((name) => {
      const chip = document.createElement("button");
      chip.className = "chip";
      chip.title = "remove this label";
      chip.textContent = `${name} ×`;
      chip.addEventListener("click", () => { changeLabels(img, [], [name]); ui.input.focus(); });
      return chip;
    }));
    const ranked = rankedLabels(img).slice(0, MODEL_CHIPS);
    ui.assist.replaceChildren(...(ranked.length ? [document.createTextNode("model: ")] : []), ...ranked.map((name) => {
      const chip = document.createElement("button");
      chip.className = "chip model";
      chip.title = "the model ranks this label high for this image: click to add it (↓ lists more)";
      chip.textContent = name;
      chip.addEventListener("click", () => { changeLabels(img, [name], []); ui.input.focus(); });
      return chip;
    }));
  }

  function renderPuzzleBar(img) {
    const prompt = document.createElement("span");
    prompt.className = "prompt";
    prompt.textContent = img.puzzle.prompt ? `prompt: ${img.puzzle.prompt}` : "no prompt yet: type it below";
    const { source } = marksOf(img);
    const failed = suggestionFor(img) && suggestionFor(img).error;
    const note = { saved: "answer saved", model: "model's pick pre-marked: correct it, Enter saves",
      touched: "Enter saves", pending: "model scoring…", none: failed ? `model: ${failed}` : "" }[source];
    const info = document.createElement("span");
    info.className = "note";
    info.textContent = `${note}${img.puzzle.split === "gap lines" ? "" : ` · tiles: ${img.puzzle.split}`}`;
    ui.chips.replaceChildren(prompt, info);
    ui.assist.replaceChildren();
  }

  let sidebarTimer = null;
  function scheduleSidebar() {
    if (sidebarTimer === null) sidebarTimer = setTimeout(renderSidebar, 50);
  }

  function renderSidebar() {
    sidebarTimer = null;
    const countMap = counts();
    const total = state.images.length;
    const done = state.images.filter(labelled).length;
    const skipped = state.images.filter((img) => img.skipped && !labelled(img)).length;
    const word = puzzles() ? "answered" : "labelled";
    ui.progressText.textContent = `${done + skipped} / ${total} done · ${done} ${word} · ${skipped} skipped`;
    ui.progressFill.style.width = `${total ? (100 * (done + skipped)) / total : 0}%`;

    ui.hotkeys.replaceChildren(...(puzzles() ? [] : hotkeyLabels(countMap)).map((name) => {
      const li = document.createElement("li");
      li.textContent = `${name} (${countMap.get(name)})`;
      return li;
    }));

    const names = [...countMap.keys()].sort((a, b) => countMap.get(b) - countMap.get(a) || a.localeCompare(b));
    ui.labelList.replaceChildren(...names.map((name) => {
      const li = document.createElement("li");
      const show = document.createElement("button");
      show.className = "link";
      show.textContent = `${name} (${countMap.get(name)})`;
      show.addEventListener("click", () => setFilter(`label:${name}`));
      li.append(show);
      if (!puzzles()) {
        const edit = document.createElement("button");
        edit.className = "edit";
        edit.title = `rename or merge ${name}`;
        edit.textContent = "✎";
        edit.addEventListener("click", () => rename(name));
        li.append(edit);
      }
      return li;
    }));

    const options = [["all", `All (${total})`], ["todo", `${puzzles() ? "Unanswered" : "Unlabelled"} (${total - done - skipped})`],
      ["labelled", `${puzzles() ? "Answered" : "Labelled"} (${done})`], ["skipped", `Skipped (${skipped})`],
      ...names.map((name) => [`label:${name}`, `Label: ${name} (${countMap.get(name)})`])];
    if (!options.some(([value]) => value === state.filter)) options.push([state.filter, state.filter]);
    ui.filter.replaceChildren(...options.map(([value, text]) => new Option(text, value, false, value === state.filter)));
  }

  function setFilter(filter) {
    state.filter = filter;
    const img = currentImage();
    if (img && !matches(img)) {
      const next = neighbour(state.pos, 1);
      const first = neighbour(-1, 1);
      if (next >= 0 || first >= 0) show(next >= 0 ? next : first);
    }
    renderCurrent();
    scheduleSidebar();
    ui.input.focus();
  }

  // ---- suggestions --------------------------------------------------------------------------

  function updateSuggestions() {
    state.suggestions = suggest(ui.input.value);
    state.highlighted = -1;
    renderSuggestions();
  }

  function renderSuggestions() {
    ui.suggestions.hidden = state.suggestions.length === 0;
    ui.suggestions.replaceChildren(...state.suggestions.map((name, i) => {
      const li = document.createElement("li");
      li.textContent = name;
      li.setAttribute("role", "option");
      if (i === state.highlighted) li.className = "highlighted";
      li.addEventListener("mousedown", (event) => {
        event.preventDefault();
        state.highlighted = i;
        submit(true);
      });
      return li;
    }));
  }

  function closeSuggestions() {
    state.suggestions = [];
    state.highlighted = -1;
    renderSuggestions();
  }

  // ---- messages -----------------------------------------------------------------------------

  let flashTimer = null;
  function flash(text) {
    ui.status.textContent = text;
    clearTimeout(flashTimer);
    flashTimer = setTimeout(() => { ui.status.textContent = ""; }, 2500);
  }
  function showBanner(text) { ui.banner.textContent = text; ui.banner.hidden = false; }
  function hideBanner() { ui.banner.hidden = true; }

  // ---- keys ---------------------------------------------------------------------------------

  function onKey(event) {
    if (event.isComposing || event.keyCode === 229) return;  // an IME (e.g. pinyin) is composing
    const typing = document.activeElement === ui.input;
    const empty = ui.input.value === "";
    const key = event.key;
    if ((event.ctrlKey || event.metaKey) && !event.shiftKey && key.toLowerCase() === "z") {
      if (typing && !empty) return;  // the field's own text undo
      event.preventDefault();
      undo();
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (!typing && document.activeElement && ["SELECT", "BUTTON", "SUMMARY"].includes(document.activeElement.tagName)
        && (key === "Enter" || key === " " || key.startsWith("Arrow"))) return;
    const commandKey = (!typing || empty) && !state.tileMode;
    const digit = /^Digit[1-9]$/.test(event.code) ? Number(event.code.slice(5)) : /^[1-9]$/.test(key) ? Number(key) : 0;
    let handled = true;
    if (key === "Enter") submit(event.shiftKey);
    else if (typing && key === "Escape") {
      if (state.suggestions.length) closeSuggestions();
      else if (!empty) ui.input.value = "";
      else if (state.tileMode) leaveTileMode();
      else ui.input.blur();
    } else if (typing && (key === "ArrowDown" || key === "ArrowUp") && state.suggestions.length) {
      const n = state.suggestions.length;
      const step = key === "ArrowDown" ? 1 : -1;
      state.highlighted = state.highlighted < 0 ? (step > 0 ? 0 : n - 1) : (state.highlighted + step + n) % n;
      renderSuggestions();
    } else if (typing && empty && key === "ArrowDown" && !puzzles() && currentImage() && rankedLabels(currentImage()).length) {
      state.suggestions = rankedLabels(currentImage()).slice(0, MAX_SUGGESTIONS);  // the model's ranking
      state.highlighted = 0;
      renderSuggestions();
    } else if (typing && key === "Tab") {
      if (state.suggestions.length) {
        ui.input.value = state.suggestions[Math.max(state.highlighted, 0)];
        updateSuggestions();
      }
    } else if (commandKey && (key === "ArrowRight" || key === "ArrowLeft")) move(key === "ArrowRight" ? 1 : -1, performance.now());
    else if (commandKey && digit && puzzles() && event.shiftKey) enterTileMode(digit);
    else if (commandKey && digit && !event.shiftKey) { if (puzzles()) toggleTile(digit); else toggleHotkey(digit); }
    else if (!typing && (key === "s" || key === "S")) toggleSkip();
    else if (!typing && (key === "/" || key === "Tab")) ui.input.focus();
    else handled = false;
    if (handled) event.preventDefault();
  }

  // ---- start --------------------------------------------------------------------------------

  async function start() {
    document.addEventListener("keydown", onKey);
    window.addEventListener("resize", layoutTiles);
    ui.input.addEventListener("input", updateSuggestions);
    ui.input.addEventListener("blur", () => setTimeout(closeSuggestions, 100));
    ui.filter.addEventListener("change", () => { setFilter(ui.filter.value); });
    const session = await request("GET", "/api/session");
    Object.assign(state, { mode: session.mode, order: session.order });
    assist.status = session.assist;
    document.body.dataset.mode = state.mode;
    applyState(await request("GET", "/api/state?since=0"));
    if (assist.status.state === "on") {  // known margins order the whole list before the first item shows
      const response = await fetch("/api/suggestions?since=0", { cache: "no-store" });
      if (response.ok) applySuggestions(await response.json());
    }
    renderAssistStatus();
    const firstTodo = state.images.findIndex((img) => !labelled(img) && !img.skipped);
    if (state.images.length) show(firstTodo >= 0 ? firstTodo : 0);
    else ui.stage.textContent = "Nothing to label.";
    renderSidebar();
    ui.input.focus();
    request("GET", "/api/rejects").then(({ rejects }) => {
      ui.rejectCount.textContent = String(rejects.length);
      ui.rejectList.replaceChildren(...rejects.map((r) => {
        const li = document.createElement("li");
        li.textContent = `${r.path}: ${r.reason}`;
        return li;
      }));
    }, () => {});
    setInterval(poll, POLL_MS);
    document.body.dataset.ready = "true";
  }

  start();
})();
