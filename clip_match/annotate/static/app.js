// clip-match annotate: keyboard-first labelling page.
//
// The page keeps every image's labels locally, changes them at once (so the next image shows
// without waiting for the server) and sends each change through one ordered queue; a change
// that cannot be saved shows a banner and is retried. Every few seconds it asks the server for
// what changed since (another tab's work).
"use strict";

(() => {
  const PREFETCH = 4;
  const CACHE_SIZE = 16;
  const POLL_MS = 3000;
  const MAX_SUGGESTIONS = 8;

  const $ = (id) => document.getElementById(id);
  const ui = {
    stage: $("stage"), position: $("position"), path: $("path"), status: $("status"), banner: $("banner"),
    chips: $("current-labels"), input: $("label-input"), suggestions: $("suggestions"), filter: $("filter"),
    hotkeys: $("hotkeys"), labelList: $("label-list"), progressText: $("progress-text"),
    progressFill: $("progress-fill"), rejectCount: $("reject-count"), rejectList: $("reject-list"),
  };

  const state = {
    images: [],            // natural path order: {id, path, v, skipped, labels: [names]}
    position: new Map(),   // image id -> index in images
    recency: new Map(),    // label name -> last_used (higher = more recent)
    version: 0,
    pos: -1,
    filter: "all",         // all | todo | labelled | skipped | label:<name>
    pending: new Map(),    // image id -> writes in flight (their local state wins)
    suggestions: [],
    highlighted: -1,
  };
  const timings = [];      // ms from Enter to the next image painted (read by the browser test)
  window.clipMatchAnnotate = { timings, state };

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
      state.images.forEach((img, i) => state.position.set(img.id, i));
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

  // ---- labels -------------------------------------------------------------------------------

  const clean = (text) => text.split(/\s+/).filter(Boolean).join(" ");

  function counts() {
    const result = new Map();
    for (const img of state.images) for (const name of img.labels) result.set(name, (result.get(name) || 0) + 1);
    return result;
  }

  function touchLabel(name) {
    let newest = 0;
    for (const value of state.recency.values()) newest = Math.max(newest, value);
    state.recency.set(name, newest + 1);
  }

  // Hotkeys 1-9: the most used labels, ties broken by recency.
  function hotkeyLabels(countMap = counts()) {
    return [...countMap.keys()].sort((a, b) => countMap.get(b) - countMap.get(a)
      || (state.recency.get(b) || 0) - (state.recency.get(a) || 0) || a.localeCompare(b)).slice(0, 9);
  }

  // Autocomplete: substring match (any script), prefix matches first, then frequency plus a
  // bonus for recent use (10 for the label used last, 5 for the one before, ...).
  function suggest(query) {
    const q = query.trim().toLowerCase();
    if (!q) return [];
    const countMap = counts();
    const byRecency = [...state.recency.entries()].sort((a, b) => b[1] - a[1]).map(([name]) => name);
    const age = new Map(byRecency.map((name, i) => [name, i]));
    const current = new Set(currentImage() ? currentImage().labels : []);
    const score = (name) => (countMap.get(name) || 0) + 10 / (1 + (age.has(name) ? age.get(name) : 1e9));
    return [...countMap.keys()]
      .filter((name) => !current.has(name) && name.toLowerCase().includes(q))
      .map((name) => ({ name, prefix: name.toLowerCase().startsWith(q), score: score(name) }))
      .sort((a, b) => (b.prefix - a.prefix) || (b.score - a.score) || a.name.localeCompare(b.name))
      .slice(0, MAX_SUGGESTIONS)
      .map((s) => s.name);
  }

  function changeLabels(img, add, remove) {
    const next = new Set(img.labels);
    add.forEach((name) => { next.add(name); touchLabel(name); });
    remove.forEach((name) => next.delete(name));
    img.labels = [...next].sort();
    request("POST", `/api/images/${img.id}/labels`, { add, remove }, img.id).then((r) => applyRow(r.image), () => {});
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
      applyState(await request("GET", `/api/state?since=${state.version}`));
      if (undone.image_id !== null && state.position.has(undone.image_id)) show(state.position.get(undone.image_id));
      flash(`undid ${describe(undone)}`);
    } catch (error) { /* banner already shown */ }
  }

  function describe(action) {
    if (action.kind === "labels") {
      return [...action.added.map((n) => `+${n}`), ...action.removed.map((n) => `−${n}`)].join(" ");
    }
    if (action.kind === "skip") return action.skipped ? "skip" : "unskip";
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

  // ---- navigation and display ---------------------------------------------------------------

  const currentImage = () => state.images[state.pos];

  function matches(img) {
    switch (state.filter) {
      case "all": return true;
      case "todo": return img.labels.length === 0 && !img.skipped;
      case "labelled": return img.labels.length > 0;
      case "skipped": return img.skipped && img.labels.length === 0;
      default: return img.labels.includes(state.filter.slice("label:".length));
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
    if (target < 0) { flash(direction > 0 ? "last image in this view" : "first image in this view"); return; }
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
    const img = currentImage();
    const el = imageElement(img);
    el.onerror = () => { ui.stage.textContent = `Cannot display ${img.path} (not a decodable image).`; };
    ui.stage.replaceChildren(el);
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
  }

  function renderCurrent() {
    const img = currentImage();
    if (!img) return;
    const shown = state.filter === "all" ? "" : ` · ${state.images.filter(matches).length} in view`;
    ui.position.textContent = `${state.pos + 1} / ${state.images.length}${shown}`;
    ui.path.textContent = img.path + (img.skipped ? "  (skipped)" : "");
    ui.chips.replaceChildren(...img.labels.map((name) => {
      const chip = document.createElement("button");
      chip.className = "chip";
      chip.title = "remove this label";
      chip.textContent = `${name} ×`;
      chip.addEventListener("click", () => { changeLabels(img, [], [name]); ui.input.focus(); });
      return chip;
    }));
  }

  let sidebarTimer = null;
  function scheduleSidebar() {
    if (sidebarTimer === null) sidebarTimer = setTimeout(renderSidebar, 50);
  }

  function renderSidebar() {
    sidebarTimer = null;
    const countMap = counts();
    const total = state.images.length;
    const labelled = state.images.filter((img) => img.labels.length).length;
    const skipped = state.images.filter((img) => img.skipped && !img.labels.length).length;
    ui.progressText.textContent = `${labelled + skipped} / ${total} done · ${labelled} labelled · ${skipped} skipped`;
    ui.progressFill.style.width = `${total ? (100 * (labelled + skipped)) / total : 0}%`;

    ui.hotkeys.replaceChildren(...hotkeyLabels(countMap).map((name) => {
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
      const edit = document.createElement("button");
      edit.className = "edit";
      edit.title = `rename or merge ${name}`;
      edit.textContent = "✎";
      edit.addEventListener("click", () => rename(name));
      li.append(show, edit);
      return li;
    }));

    const options = [["all", `All (${total})`], ["todo", `Unlabelled (${total - labelled - skipped})`],
      ["labelled", `Labelled (${labelled})`], ["skipped", `Skipped (${skipped})`],
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
    const commandKey = !typing || empty;
    let handled = true;
    if (key === "Enter") submit(event.shiftKey);
    else if (typing && key === "Escape") {
      if (state.suggestions.length) closeSuggestions(); else if (!empty) ui.input.value = ""; else ui.input.blur();
    } else if (typing && (key === "ArrowDown" || key === "ArrowUp") && state.suggestions.length) {
      const n = state.suggestions.length;
      const step = key === "ArrowDown" ? 1 : -1;
      state.highlighted = state.highlighted < 0 ? (step > 0 ? 0 : n - 1) : (state.highlighted + step + n) % n;
      renderSuggestions();
    } else if (typing && key === "Tab") {
      if (state.suggestions.length) {
        ui.input.value = state.suggestions[Math.max(state.highlighted, 0)];
        updateSuggestions();
      }
    } else if (commandKey && (key === "ArrowRight" || key === "ArrowLeft")) move(key === "ArrowRight" ? 1 : -1, performance.now());
    else if (commandKey && /^[1-9]$/.test(key)) toggleHotkey(Number(key));
    else if (!typing && (key === "s" || key === "S")) toggleSkip();
    else if (!typing && (key === "/" || key === "Tab")) ui.input.focus();
    else handled = false;
    if (handled) event.preventDefault();
  }

  // ---- start --------------------------------------------------------------------------------

  async function start() {
    document.addEventListener("keydown", onKey);
    ui.input.addEventListener("input", updateSuggestions);
    ui.input.addEventListener("blur", () => setTimeout(closeSuggestions, 100));
    ui.filter.addEventListener("change", () => { setFilter(ui.filter.value); });
    applyState(await request("GET", "/api/state?since=0"));
    const firstTodo = state.images.findIndex((img) => img.labels.length === 0 && !img.skipped);
    if (state.images.length) show(firstTodo >= 0 ? firstTodo : 0);
    else ui.stage.textContent = "No images.";
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
