/* Shared browser code of the portal: API calls with the CSRF token, formatting, the
 * live migration progress view (figures, bar, chart) and its websocket that re-opens
 * itself. No framework, no build step. */
(function () {
  "use strict";

  /* Statuses, phases and failure reasons with their labels, as Django has them
   * (migrations_app/lifecycle.py), written into every page by base.html. */
  const VOCABULARY = JSON.parse(document.getElementById("portal-vocabulary").textContent);
  const FINAL = VOCABULARY.final_statuses;
  const STATUS_LABELS = VOCABULARY.status_labels;
  const PHASE_LABELS = VOCABULARY.phase_labels;
  const REASON_LABELS = VOCABULARY.failure_reason_labels;
  const MIB = 1024 * 1024;
  // Numbers and dates in the page's language (<html lang>, set by Django's LocaleMiddleware).
  const LANG = document.documentElement.lang || "en";

  /* A number with a fixed count of decimals, in the page's language ("1.5", "1,5"). */
  function decimal(value, digits) {
    return new Intl.NumberFormat(LANG, {
      minimumFractionDigits: digits, maximumFractionDigits: digits, useGrouping: false,
    }).format(value);
  }

  function dateTime(value) { return new Date(value).toLocaleString(LANG); }
  // The convergence policies' short names (the API's values, in words).
  const POLICY_NAMES = {
    none: gettext("none"),
    minimal_downtime: gettext("minimal downtime"),
    postcopy_when_stalled: gettext("postcopy when stalled"),
    pause_when_stalled: gettext("pause when stalled"),
    abort_when_stalled: gettext("abort when stalled"),
  };

  function cookie(name) {
    const found = document.cookie.split(";").map((c) => c.trim()).find((c) => c.startsWith(name + "="));
    return found ? decodeURIComponent(found.slice(name.length + 1)) : "";
  }

  /* POST/GET JSON to the API; resolves to {status, body} whatever the status. */
  async function api(method, url, body) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") {
      headers["X-CSRFToken"] = cookie("csrftoken");
      headers["Content-Type"] = "application/json";
    }
    let response;
    try {
      response = await fetch(url, {
        method, headers, credentials: "same-origin",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      return { status: 0, body: { detail: interpolate(gettext("The portal did not answer: %s"), [err.message]) } };
    }
    let data = {};
    const text = await response.text();
    if (text) {
      try { data = JSON.parse(text); } catch (_err) { data = { detail: text.slice(0, 300) }; }
    }
    return { status: response.status, body: data };
  }

  function bytes(value) {
    if (value === null || value === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let v = Number(value), i = 0;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    return decimal(v, i === 0 ? 0 : 1) + " " + units[i];
  }

  function rate(value) { return value === null || value === undefined ? "–" : bytes(value) + "/s"; }

  function seconds(value) {
    if (value === null || value === undefined) return "–";
    const s = Number(value);
    if (s < 60) return decimal(s, s < 10 ? 1 : 0) + " s";
    const m = Math.floor(s / 60), rest = Math.round(s % 60);
    if (m < 60) return m + " min " + rest + " s";
    return Math.floor(m / 60) + " h " + (m % 60) + " min";
  }

  function millis(value) {
    if (value === null || value === undefined) return "–";
    return Number(value) < 1000 ? decimal(Number(value), 0) + " ms" : seconds(Number(value) / 1000);
  }

  // A tune to "unlimited" sets this; libvirt reads back this or more (migrations_app/requests.py).
  const UNLIMITED_MIB_S = 8388607;

  function limits(m) {
    const parts = [];
    const downtime = m.max_downtime_read_ms, speed = m.bandwidth_read_mib_s;
    if (downtime !== null && downtime !== undefined) {
      parts.push(interpolate(gettext("downtime %s"), [millis(downtime)]));
    }
    if (speed !== null && speed !== undefined) {
      parts.push(speed >= UNLIMITED_MIB_S ? gettext("bandwidth unlimited")
        : interpolate(gettext("bandwidth %s MiB/s"), [speed]));
    }
    return parts.length ? parts.join(" · ") : "–";
  }

  function wsUrl(path) {
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
  }

  /* The websocket of one migration: the server sends a snapshot first, then updates, and
   * closes after the final one. A dropped socket is re-opened with backoff; each
   * (re)connect starts with a fresh snapshot. */
  class MigrationSocket {
    constructor(migrationId, handlers) {
      this.path = "/ws/migrations/" + migrationId + "/";
      this.handlers = handlers;
      this.attempt = 0;
      this.finished = false;
      this.stopped = false;
      this.socket = null;
      this.timer = null;
    }

    open() {
      if (this.stopped || this.finished) return;
      this.handlers.connection(gettext("connecting"));
      const socket = new WebSocket(wsUrl(this.path));
      this.socket = socket;
      socket.onopen = () => { this.attempt = 0; this.handlers.connection(gettext("live")); };
      socket.onmessage = (event) => {
        const message = JSON.parse(event.data);
        if (FINAL.includes(message.migration.status)) this.finished = true;
        this.handlers.message(message);
      };
      socket.onclose = (event) => {
        if (this.socket !== socket) return;
        this.socket = null;
        if (this.finished || this.stopped) { this.handlers.connection("closed"); return; }
        if (event.code === 4401 || event.code === 4403) {
          this.stopped = true;
          this.handlers.connection(event.code === 4401 ? gettext("refused: log in again") : gettext("refused: not yours to see"));
          return;
        }
        const delay = Math.min(10000, 500 * 2 ** this.attempt);
        this.attempt += 1;
        this.handlers.connection(interpolate(gettext("reconnecting in %s s"), [decimal(delay / 1000, 1)]));
        this.timer = setTimeout(() => this.open(), delay);
      };
    }

    close() {
      this.stopped = true;
      clearTimeout(this.timer);
      if (this.socket) this.socket.close();
    }
  }

  /* Throughput and remaining data over elapsed time, drawn on a <canvas>. */
  class ProgressChart {
    constructor(canvas) {
      this.canvas = canvas;
      this.samples = [];
      this.pending = false;
      window.addEventListener("resize", () => this.draw());
    }

    set(samples) { this.samples = samples.slice(); this.schedule(); }

    add(sample) {
      const last = this.samples[this.samples.length - 1];
      if (last && sample.elapsed_ms < last.elapsed_ms) return;  // out of order
      this.samples.push(sample);
      if (this.samples.length > 2000) this.samples.splice(0, this.samples.length - 2000);
      this.schedule();
    }

    schedule() {
      if (this.pending) return;
      this.pending = true;
      requestAnimationFrame(() => { this.pending = false; this.draw(); });
    }

    draw() {
      const canvas = this.canvas;
      const width = canvas.clientWidth || 600, height = canvas.clientHeight || 180;
      const ratio = window.devicePixelRatio || 1;
      canvas.width = width * ratio; canvas.height = height * ratio;
      const ctx = canvas.getContext("2d");
      ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
      ctx.clearRect(0, 0, width, height);
      const pad = { left: 44, right: 50, top: 10, bottom: 22 };
      const w = width - pad.left - pad.right, h = height - pad.top - pad.bottom;
      ctx.strokeStyle = "#e2e6ee"; ctx.fillStyle = "#6b7280"; ctx.font = "11px sans-serif";
      ctx.strokeRect(pad.left, pad.top, w, h);
      const points = this.samples.filter((s) => s.elapsed_ms !== null && s.elapsed_ms !== undefined);
      if (points.length === 0) {
        ctx.fillText(gettext("waiting for progress samples…"), pad.left + 8, pad.top + 18);
        return;
      }
      const t0 = points[0].elapsed_ms, t1 = Math.max(points[points.length - 1].elapsed_ms, t0 + 1000);
      const throughput = points.map((s) => (s.throughput_bytes_s || 0) / MIB);
      const remaining = points.map((s) => (s.data_remaining_bytes || 0) / MIB);
      const maxT = Math.max(1, ...throughput) * 1.1, maxR = Math.max(1, ...remaining) * 1.1;
      const x = (ms) => pad.left + (w * (ms - t0)) / (t1 - t0);
      const line = (values, max, color) => {
        ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.beginPath();
        points.forEach((s, i) => {
          const y = pad.top + h - (h * values[i]) / max;
          if (i === 0) ctx.moveTo(x(s.elapsed_ms), y); else ctx.lineTo(x(s.elapsed_ms), y);
        });
        ctx.stroke();
      };
      line(remaining, maxR, "#d97706");
      line(throughput, maxT, "#1f6feb");
      ctx.fillStyle = "#1f6feb"; ctx.textAlign = "right";
      ctx.fillText(decimal(maxT, 0), pad.left - 4, pad.top + 10); ctx.fillText("0", pad.left - 4, pad.top + h);
      ctx.fillStyle = "#d97706"; ctx.textAlign = "left";
      ctx.fillText(decimal(maxR, 0), pad.left + w + 4, pad.top + 10); ctx.fillText("0", pad.left + w + 4, pad.top + h);
      ctx.fillStyle = "#6b7280"; ctx.textAlign = "center";
      ctx.fillText(decimal((t1 - t0) / 1000, 0) + " s", pad.left + w - 10, height - 6);
      ctx.fillText(decimal(0, 0) + " s", pad.left + 8, height - 6);
    }
  }

  /* Fills a portal/_progress.html block from migration JSON and samples. */
  class ProgressView {
    constructor(root) {
      this.root = root;
      this.migration = null;
      this.chart = new ProgressChart(this.field("chart"));
      this.onFinal = null;
      const cancel = root.querySelector("[data-action=cancel-migration]");
      const postcopy = root.querySelector("[data-action=postcopy]");
      if (cancel) cancel.addEventListener("click", () => this.control("cancel", cancel, gettext("Cancelling…")));
      if (postcopy) postcopy.addEventListener("click", () => this.control("postcopy", postcopy, gettext("Switching…")));
      const tune = root.querySelector("[data-action=tune]");
      if (tune) tune.addEventListener("click", () => this.tune(tune));
    }

    /* POST .../tune/ with what was filled in; the answer carries libvirt's read-back. */
    async tune(button) {
      if (!this.migration) return;
      const body = {};
      const downtime = this.field("tune-downtime").value, speed = this.field("tune-bandwidth").value;
      if (downtime !== "") body.max_downtime_ms = Number(downtime);
      if (speed !== "") body.bandwidth_mib_s = Number(speed);
      const error = this.field("control-error");
      if (!Object.keys(body).length) {
        error.textContent = gettext("Fill in a max downtime and/or a bandwidth to apply.");
        error.hidden = false;
        return;
      }
      button.disabled = true; button.textContent = gettext("Applying…");
      const result = await api("POST", "/api/migrations/" + this.migration.id + "/tune/", body);
      button.disabled = false; button.textContent = gettext("Apply");
      if (result.status === 200) {
        error.hidden = true;
        this.field("tune-downtime").value = "";
        this.field("tune-bandwidth").value = "";
        this.render(result.body);
        return;
      }
      // 400 names the field (max_downtime_ms, bandwidth_mib_s); 409 says why not now.
      const b = result.body;
      error.textContent = Object.entries(b).map(([k, v]) => (k === "detail" ? "" : k + ": ") + [].concat(v).join(" ")).join(" ");
      error.hidden = false;
    }

    field(name) { return this.root.querySelector("[data-field='" + name + "']"); }

    setText(name, text) { const el = this.field(name); if (el) el.textContent = text; }

    async control(action, button, busyText) {
      if (!this.migration) return;
      const label = button.textContent;
      button.disabled = true; button.textContent = busyText;
      const result = await api("POST", "/api/migrations/" + this.migration.id + "/" + action + "/");
      const error = this.field("control-error");
      if (result.status >= 200 && result.status < 300) {
        error.hidden = true;
        this.render(result.body);
      } else {
        error.textContent = result.body.detail || JSON.stringify(result.body);
        error.hidden = false;
        button.disabled = false; button.textContent = label;
      }
    }

    connection(state) { this.setText("connection", state === "closed" ? "" : "● " + state); }

    snapshot(migration, samples) {
      this.chart.set(samples || []);
      this.render(migration);
    }

    update(message) {
      if (message.sample) this.chart.add(message.sample);
      this.render(message.migration);
    }

    render(m) {
      if (this.migration && this.migration.id === m.id && FINAL.includes(this.migration.status) && !FINAL.includes(m.status)) {
        return;  // a late update after the outcome
      }
      this.migration = m;
      const final = FINAL.includes(m.status);
      // Shown as the server has it: it never lowers percent (dirtied memory makes the
      // total grow, not the share sent), so neither does the page.
      const percent = m.status === "succeeded" ? 100 : Number(m.percent || 0);
      this.root.dataset.percent = percent.toFixed(1);
      this.root.dataset.status = m.status;
      const badge = this.field("status");
      badge.textContent = STATUS_LABELS[m.status] || m.status;
      badge.className = "badge badge-" + m.status;
      if (m.status === "scheduled" && m.not_before) {
        this.setText("phase", interpolate(gettext("starts %s"), [dateTime(m.not_before)]));
      } else {
        this.setText("phase", m.phase ? PHASE_LABELS[m.phase] || m.phase : "");
      }
      this.setText("percent", decimal(percent, 1));
      this.field("fill").style.width = percent + "%";
      this.field("bar").setAttribute("aria-valuenow", percent.toFixed(1));
      this.setText("processed", bytes(m.data_processed_bytes));
      this.setText("remaining", bytes(m.data_remaining_bytes));
      this.setText("total", bytes(m.data_total_bytes));
      this.setText("throughput", rate(m.throughput_bytes_s));
      this.setText("dirty", rate(m.memory_dirty_rate_bytes_s));
      this.setText("iteration", m.memory_iteration === null || m.memory_iteration === undefined ? "–" : String(m.memory_iteration));
      // The server gives an ETA only while the copy converges (domain/convergence.py).
      this.setText("eta", final ? "–" : seconds(m.eta_s));
      const policy = m.convergence_policy || "none";
      this.setText("policy", POLICY_NAMES[policy] || policy.replace(/_/g, " "));
      // The downtime and bandwidth libvirt has now: read back when the job starts, after
      // each tune and each minimal_downtime step.
      this.setText("limits", limits(m));
      const trend = m.remaining_trend_bytes || [];
      this.setText("trend", trend.length ? trend.slice(-6).map(bytes).join(" → ") : "–");
      const note = this.field("convergence");
      if (note) {
        note.hidden = final || !m.convergence_note;
        note.textContent = m.convergence_note || "";
        note.className = "convergence" + (m.phase === "not_converging" ? " not-converging" : "");
      }
      // Copied disks (storage "copy"): shown once libvirt reports a disk job.
      const disks = this.field("disks-box");
      if (disks) {
        disks.hidden = !m.disk_total_bytes;
        if (m.disk_total_bytes) this.setText("disks", interpolate(gettext("%(done)s of %(total)s"), { done: bytes(m.disk_processed_bytes), total: bytes(m.disk_total_bytes) }, true));
      }

      const controls = this.field("controls");
      if (controls) {
        controls.hidden = final;
        const cancel = controls.querySelector("[data-action=cancel-migration]");
        if (m.cancel_requested_at) { cancel.disabled = true; cancel.textContent = gettext("Cancel requested…"); }
        // Steering makes sense while the pre-copy runs (not once switched or paused to finish).
        const tune = this.field("tune");
        if (tune) tune.hidden = !(m.status === "migrating" && m.live && !m.postcopy_started_at && !m.paused_for_convergence_at);
        const postcopy = controls.querySelector("[data-action=postcopy]");
        postcopy.hidden = !(m.allow_postcopy && m.status === "migrating");
        if (m.postcopy_started_at) { postcopy.disabled = true; postcopy.textContent = gettext("In post-copy"); }
      }

      const box = this.field("outcome-box");
      box.hidden = !final;
      if (final) {
        const titles = { succeeded: gettext("Migration succeeded"), failed: gettext("Migration failed"), cancelled: gettext("Migration cancelled") };
        const outcome = this.field("outcome");
        outcome.textContent = titles[m.status] + " · " + m.source + " → " + m.destination;
        outcome.className = "outcome-title outcome-" + m.status;
        let total = m.total_time_ms;
        if ((total === null || total === undefined) && m.started_at && m.finished_at) {
          total = new Date(m.finished_at) - new Date(m.started_at);
        }
        this.setText("total-time", millis(total));
        this.setText("downtime", millis(m.downtime_ms));
        this.setText("moved", bytes(m.transferred_bytes !== null && m.transferred_bytes !== undefined ? m.transferred_bytes : m.data_processed_bytes));
        const error = this.field("error");
        const reason = m.failure_reason ? REASON_LABELS[m.failure_reason] || m.failure_reason : gettext("Reason");
        error.textContent = m.error ? reason + ": " + m.error : "";
        error.hidden = !m.error;
        if (this.onFinal) this.onFinal(m);
      }
    }

    /* Follow the migration live; returns the socket (close() it to stop). */
    follow(migrationId) {
      const socket = new MigrationSocket(migrationId, {
        connection: (state) => this.connection(state),
        message: (message) => {
          if (message.event === "snapshot") this.snapshot(message.migration, message.samples);
          else this.update(message);
        },
      });
      socket.open();
      return socket;
    }
  }

  /* An error shown at its field: a screen reader reads it with the field (aria). */
  function errorTie(slot, input, fallbackId) {
    if (!slot.id) slot.id = fallbackId;
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", slot.id);
  }

  function readJson(id) {
    const el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }

  window.Portal = { api, bytes, rate, seconds, millis, decimal, dateTime, POLICY_NAMES, FINAL, MigrationSocket, ProgressView, readJson, errorTie };

  /* Dashboard: accept a host's changed ssh key. The fingerprint shown is the one sent:
   * the portal refuses it if the pending key has changed since the page was drawn. */
  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("[data-action=accept-host-key]").forEach((button) => {
      button.addEventListener("click", async () => {
        const { hostId, hostName, fingerprint } = button.dataset;
        if (!window.confirm(interpolate(gettext("Accept %(fingerprint)s as the ssh host key of %(host)s?"), { fingerprint, host: hostName }, true))) return;
        button.disabled = true;
        const result = await api("POST", "/api/hosts/" + hostId + "/accept-host-key/", { fingerprint });
        if (result.status === 200) { location.reload(); return; }
        const error = button.parentElement.querySelector("[data-field=accept-error]");
        const body = result.body;
        error.textContent = (body.fingerprint || body.non_field_errors || [body.detail || JSON.stringify(body)]).join(" ");
        error.hidden = false;
        button.disabled = false;
      });
    });
  });

  /* Migration detail page: draw what is recorded; follow it live while it runs. */
  document.addEventListener("DOMContentLoaded", () => {
    const root = document.querySelector("#migration-page [data-progress-view]");
    if (!root) return;
    const view = new ProgressView(root);
    const migration = readJson("migration-data");
    view.snapshot(migration, readJson("samples-data") || []);
    if (!FINAL.includes(migration.status)) {
      view.follow(migration.id);
      view.onFinal = () => setTimeout(() => location.reload(), 1500);
    }
  });
})();
