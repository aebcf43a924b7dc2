// callvault supervisor page. Plain JavaScript, no build step, no third-party
// code; served with a Content-Security-Policy that allows scripts from this
// origin only.
//
// The supervisor token lives in this closure for the life of the tab: never
// in localStorage, sessionStorage, a cookie or a URL. Audio is fetched by the
// <audio> element through short-lived signed URLs that the API issues.
"use strict";

(() => {
  let token = null;
  let nextPage = "";
  let lastQuery = null;
  let current = null; // { rec, url, expires }

  const $ = (id) => document.getElementById(id);
  const audio = $("audio");
  const wave = $("wave");

  // ---- the API ----

  async function api(path, options = {}) {
    const res = await fetch(path, {
      ...options,
      headers: { Authorization: `Bearer ${token}`, ...(options.headers || {}) },
      cache: "no-store",
      credentials: "omit",
      referrerPolicy: "no-referrer",
    });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) {
      const e = body.error || {};
      const err = new Error(e.message || `${res.status} ${res.statusText}`);
      err.status = res.status;
      throw err;
    }
    return body;
  }

  // ---- formatting ----

  function clock(seconds) {
    if (!Number.isFinite(seconds) || seconds < 0) return "0:00";
    const s = Math.floor(seconds % 60).toString().padStart(2, "0");
    const m = Math.floor(seconds / 60) % 60;
    const h = Math.floor(seconds / 3600);
    return h > 0 ? `${h}:${m.toString().padStart(2, "0")}:${s}` : `${m}:${s}`;
  }

  function localTime(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
  }

  function show(section) {
    for (const id of ["signin", "search", "player"]) $(id).hidden = id !== section;
  }

  // ---- sign in ----

  $("signin-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const input = $("token");
    token = input.value.trim();
    input.value = "";
    $("signin-error").textContent = "";
    try {
      await api("/api/v1/recordings?limit=1");
    } catch (e) {
      token = null;
      $("signin-error").textContent =
        e.status === 401 ? "That token was not accepted (unknown, revoked or expired)." : e.message;
      return;
    }
    $("who").textContent = "Signed in";
    $("signout").hidden = false;
    show("search");
    search(false);
  });

  $("signout").addEventListener("click", () => {
    token = null;
    stopAudio();
    $("who").textContent = "";
    $("signout").hidden = true;
    $("results").tBodies[0].replaceChildren();
    show("signin");
  });

  // ---- search ----

  function queryFromForm() {
    const q = new URLSearchParams();
    const call = $("q-call").value.trim();
    if (call) q.set("call_id", call);
    const label = $("q-label").value.trim();
    if (label) {
      for (const part of label.split(",")) if (part.trim()) q.append("label", part.trim());
    }
    const from = $("q-from").value;
    if (from) q.set("from", String(new Date(from).getTime()));
    const to = $("q-to").value;
    if (to) q.set("to", String(new Date(to).getTime()));
    q.set("limit", "50");
    return q;
  }

  async function search(more) {
    $("search-error").textContent = "";
    const body = $("results").tBodies[0];
    if (!more) {
      lastQuery = queryFromForm();
      nextPage = "";
      body.replaceChildren();
    }
    const q = new URLSearchParams(lastQuery);
    if (more && nextPage) q.set("page_token", nextPage);
    let page;
    try {
      page = await api(`/api/v1/recordings?${q}`);
    } catch (e) {
      $("search-error").textContent = e.message;
      return;
    }
    for (const r of page.recordings) body.appendChild(row(r));
    if (!more && page.recordings.length === 0) {
      $("search-error").textContent = "No recordings match.";
    }
    nextPage = page.next_page_token;
    $("more").hidden = !nextPage;
  }

  function row(r) {
    const tr = document.createElement("tr");
    tr.tabIndex = 0;
    tr.dataset.id = r.recording_id;
    const labels = Object.entries(r.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ");
    for (const text of [
      localTime(r.start_time || r.create_time),
      r.external_call_id,
      clock(r.duration_ms / 1000),
      `${r.container}/${r.codec}`,
      labels,
    ]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    tr.addEventListener("click", () => open(r.recording_id));
    tr.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter") open(r.recording_id);
    });
    return tr;
  }

  $("search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    search(false);
  });
  $("more").addEventListener("click", () => search(true));
  $("back-to-list").addEventListener("click", () => {
    stopAudio();
    show("search");
  });

  // ---- the player ----

  function stopAudio() {
    audio.pause();
    audio.removeAttribute("src");
    audio.load();
    current = null;
  }

  async function issue(rec, purpose, reason, ttlSeconds) {
    return api(`/api/v1/recordings/${encodeURIComponent(rec.recording_id)}/playback-url`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ purpose, reason: reason || "", ttl_seconds: ttlSeconds || 0 }),
    });
  }

  // Opens a recording: its metadata, then a stream URL for the <audio>
  // element. `opts.ttl` (seconds) asks for a shorter-lived link.
  async function open(id, opts = {}) {
    stopAudio();
    $("p-error").textContent = "";
    $("renew").hidden = true;
    let rec;
    try {
      rec = await api(`/api/v1/recordings/${encodeURIComponent(id)}`);
    } catch (e) {
      $("search-error").textContent = e.message;
      return;
    }
    show("player");
    $("p-title").textContent = rec.external_call_id;
    const labels = Object.entries(rec.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ");
    $("p-meta").textContent =
      `${localTime(rec.start_time || rec.create_time)} · ${clock(rec.duration_ms / 1000)} · ` +
      `${rec.container}/${rec.codec}, ${rec.sample_rate_hz} Hz, ${rec.channels} ch` +
      (labels ? ` · ${labels}` : "") + (rec.legal_hold ? " · under legal hold" : "");
    $("duration").textContent = clock(rec.duration_ms / 1000);
    wave.setAttribute("aria-valuemax", String(Math.round(rec.duration_ms / 1000)));
    // What this browser cannot play as recorded, it plays as a WAV the
    // server decodes on the fly (`?rendition=wav`, with ranges).
    const rendition = opts.rendition || (audio.canPlayType(rec.media_type) === "" ? "wav" : "");
    if (rendition) $("p-meta").textContent += " · played as decoded WAV";
    // A stream link lasts the call and then some (a player holds one
    // response for as long as it plays), 15 min at least, 12 h at most.
    const ttl = opts.ttl || Math.min(12 * 3600, Math.max(900, Math.ceil(rec.duration_ms / 1000) + 600));
    await load(rec, 0, ttl, rendition);
  }

  async function load(rec, at, ttl, rendition) {
    let link;
    try {
      link = await issue(rec, "stream", "", ttl);
    } catch (e) {
      $("p-error").textContent = e.message;
      return;
    }
    const src = rendition ? `${link.path}&rendition=${rendition}` : link.path;
    current = { rec, url: link.path, src, rendition, expires: link.expire_time_ms, ttl, peaks: null };
    const target = current;
    loadPeaks(target, 0);
    if (rendition && !(await renditionReady(target))) return;
    audio.src = src;
    audio.playbackRate = Number($("speed").value);
    if (at > 0) {
      audio.addEventListener("loadedmetadata", () => { audio.currentTime = at; }, { once: true });
    }
    draw();
  }

  // A decoded rendition exists once the server has decoded the recording
  // (seconds after ingest): until then it answers 404 with Retry-After.
  async function renditionReady(target) {
    for (let attempt = 0; attempt < 24; attempt++) {
      let res;
      try {
        res = await fetch(target.src, {
          method: "HEAD",
          cache: "no-store",
          credentials: "omit",
          referrerPolicy: "no-referrer",
        });
      } catch (e) {
        break;
      }
      if (current !== target) return false;
      if (res.ok) {
        if (attempt > 0) $("p-error").textContent = "";
        return true;
      }
      if (res.status !== 404 || !res.headers.get("Retry-After")) break;
      $("p-error").textContent = "Preparing a version this browser can play…";
      await new Promise((r) => setTimeout(r, 5000));
      if (current !== target) return false;
    }
    $("p-error").textContent = "This browser cannot play this recording, and no decoded version is available.";
    return false;
  }

  // The waveform: min and max per 100 ms window (docs/FORMAT.md, "Waveform
  // peaks"), fetched with the audio's signed URL; retried while the server
  // is still computing them.
  async function loadPeaks(target, attempt) {
    let res;
    try {
      res = await fetch(target.url.replace("/audio?", "/peaks?"), {
        cache: "no-store",
        credentials: "omit",
        referrerPolicy: "no-referrer",
      });
    } catch (e) {
      return;
    }
    if (current !== target) return;
    if (res.status === 404 && res.headers.get("Retry-After") && attempt < 12) {
      setTimeout(() => loadPeaks(target, attempt + 1), 5000);
      return;
    }
    if (!res.ok) return;
    const bytes = new DataView(await res.arrayBuffer());
    const magic = String.fromCharCode(bytes.getUint8(0), bytes.getUint8(1), bytes.getUint8(2), bytes.getUint8(3));
    if (magic !== "CVPK" || bytes.getUint8(4) !== 1) return;
    const windowMs = bytes.getUint16(5);
    const count = bytes.getUint32(11);
    const min = new Int8Array(count);
    const max = new Int8Array(count);
    for (let i = 0; i < count; i++) {
      min[i] = bytes.getInt8(15 + 2 * i);
      max[i] = bytes.getInt8(16 + 2 * i);
    }
    target.peaks = { windowMs, min, max };
    wave.dataset.windows = String(count);
    draw();
  }

  // The <audio> element says only that the media failed; the server says
  // why (an expired or revoked link, a key that stopped working).
  audio.addEventListener("error", async () => {
    if (!current) return;
    let why = "the recording could not be played";
    try {
      const res = await fetch(current.src, {
        headers: { Range: "bytes=0-0" },
        cache: "no-store",
        credentials: "omit",
        referrerPolicy: "no-referrer",
      });
      if (!res.ok) why = (await res.text()).trim();
      else if (Date.now() >= current.expires) why = "the link expired";
    } catch (e) {
      why = `the server could not be reached (${e.message})`;
    }
    $("p-error").textContent = `Playback stopped: ${why}.`;
    $("renew").hidden = false;
    $("play").textContent = "Play";
  });

  $("renew").addEventListener("click", async () => {
    if (!current) return;
    const { rec } = current;
    const at = audio.currentTime || 0;
    $("p-error").textContent = "";
    $("renew").hidden = true;
    await load(rec, at, current.ttl, current.rendition);
  });

  function togglePlay() {
    if (!current) return;
    if (audio.paused) {
      audio.play().catch((e) => { $("p-error").textContent = `Playback failed: ${e.message}`; });
    } else {
      audio.pause();
    }
  }

  function seekTo(seconds) {
    if (!current) return;
    const d = Number.isFinite(audio.duration) ? audio.duration : current.rec.duration_ms / 1000;
    audio.currentTime = Math.max(0, Math.min(d, seconds));
    draw();
  }

  function setSpeed(step) {
    const sel = $("speed");
    const i = Math.max(0, Math.min(sel.options.length - 1, sel.selectedIndex + step));
    sel.selectedIndex = i;
    audio.playbackRate = Number(sel.value);
  }

  $("play").addEventListener("click", togglePlay);
  $("rewind").addEventListener("click", () => seekTo(audio.currentTime - 5));
  $("forward").addEventListener("click", () => seekTo(audio.currentTime + 5));
  $("speed").addEventListener("change", () => { audio.playbackRate = Number($("speed").value); });
  audio.addEventListener("play", () => { $("play").textContent = "Pause"; });
  audio.addEventListener("pause", () => { $("play").textContent = "Play"; });
  audio.addEventListener("timeupdate", () => {
    $("time").textContent = clock(audio.currentTime);
    wave.setAttribute("aria-valuenow", String(Math.round(audio.currentTime)));
    draw();
  });
  audio.addEventListener("progress", draw);

  document.addEventListener("keydown", (ev) => {
    if ($("player").hidden) return;
    if (ev.target instanceof HTMLInputElement || ev.target instanceof HTMLSelectElement) return;
    switch (ev.key) {
      case " ": ev.preventDefault(); togglePlay(); break;
      case "ArrowLeft": ev.preventDefault(); seekTo(audio.currentTime - 5); break;
      case "ArrowRight": ev.preventDefault(); seekTo(audio.currentTime + 5); break;
      case "<": setSpeed(-1); break;
      case ">": setSpeed(1); break;
      case "Home": seekTo(0); break;
      default:
    }
  });

  // Click or drag on the bar to seek.
  let dragging = false;
  function seekFromPointer(ev) {
    const rect = wave.getBoundingClientRect();
    const frac = Math.max(0, Math.min(1, (ev.clientX - rect.left) / rect.width));
    const d = Number.isFinite(audio.duration) ? audio.duration : (current ? current.rec.duration_ms / 1000 : 0);
    seekTo(frac * d);
  }
  wave.addEventListener("pointerdown", (ev) => {
    dragging = true;
    wave.setPointerCapture(ev.pointerId);
    seekFromPointer(ev);
  });
  wave.addEventListener("pointermove", (ev) => { if (dragging) seekFromPointer(ev); });
  wave.addEventListener("pointerup", () => { dragging = false; });

  function draw() {
    const ctx = wave.getContext("2d");
    const w = wave.width;
    const h = wave.height;
    const styles = getComputedStyle(document.documentElement);
    ctx.clearRect(0, 0, w, h);
    ctx.fillStyle = styles.getPropertyValue("--bar").trim() || "#d1d5db";
    ctx.fillRect(0, h / 2 - 4, w, 8);
    const d = Number.isFinite(audio.duration) && audio.duration > 0
      ? audio.duration
      : (current ? current.rec.duration_ms / 1000 : 0);
    if (!d) return;
    const played = (audio.currentTime / d) * w;
    const peaks = current && current.peaks;
    if (peaks) {
      // One column per pixel: the extremes of the windows it covers.
      ctx.clearRect(0, 0, w, h);
      const perSecond = 1000 / peaks.windowMs;
      for (let x = 0; x < w; x++) {
        const a = Math.floor((x / w) * d * perSecond);
        const b = Math.max(a + 1, Math.floor(((x + 1) / w) * d * perSecond));
        let lo = 0;
        let hi = 0;
        for (let i = a; i < b && i < peaks.min.length; i++) {
          lo = Math.min(lo, peaks.min[i]);
          hi = Math.max(hi, peaks.max[i]);
        }
        const top = h / 2 - (hi / 127) * (h / 2 - 4);
        const bottom = h / 2 - (lo / 127) * (h / 2 - 4);
        ctx.fillStyle = x < played
          ? (styles.getPropertyValue("--accent").trim() || "#2563eb")
          : (styles.getPropertyValue("--muted").trim() || "#6b7280");
        ctx.fillRect(x, top, 1, Math.max(1, bottom - top));
      }
      ctx.fillStyle = styles.getPropertyValue("--buffered").trim() || "#93c5fd";
      for (let i = 0; i < audio.buffered.length; i++) {
        const a = (audio.buffered.start(i) / d) * w;
        const b = (audio.buffered.end(i) / d) * w;
        ctx.fillRect(a, h - 3, Math.max(1, b - a), 3);
      }
      ctx.fillStyle = styles.getPropertyValue("--accent").trim() || "#2563eb";
      ctx.fillRect(played - 1, 0, 2, h);
      return;
    }
    ctx.fillStyle = styles.getPropertyValue("--buffered").trim() || "#93c5fd";
    for (let i = 0; i < audio.buffered.length; i++) {
      const a = (audio.buffered.start(i) / d) * w;
      const b = (audio.buffered.end(i) / d) * w;
      ctx.fillRect(a, h / 2 - 4, Math.max(1, b - a), 8);
    }
    ctx.fillStyle = styles.getPropertyValue("--accent").trim() || "#2563eb";
    ctx.fillRect(0, h / 2 - 4, played, 8);
    ctx.fillRect(played - 1, 8, 3, h - 16);
  }

  // Download: a reason first (the audit trail records it), then an
  // attachment URL.
  $("download").addEventListener("click", async () => {
    if (!current) return;
    const reason = window.prompt("Why are you downloading this recording? (recorded in the audit trail)");
    if (!reason || !reason.trim()) return;
    try {
      const link = await issue(current.rec, "download", reason.trim());
      const a = document.createElement("a");
      a.href = link.path;
      a.rel = "noreferrer";
      a.download = "";
      document.body.appendChild(a);
      a.click();
      a.remove();
    } catch (e) {
      $("p-error").textContent = e.message;
    }
  });

  // For tests and power users: open a recording by id.
  window.callvault = { open };
})();
