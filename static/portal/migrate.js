/* The VM page: actions menu and the migrate dialog (form -> pre-checks -> start ->
 * live progress). Validation messages are the API's; the two simple ones are also
 * checked here first so they show at once, together. */
(function () {
  "use strict";
  const { api, ProgressView, FINAL, POLICY_NAMES, decimal, readJson, errorTie } = window.Portal;

  const BLANK_HOST = gettext("Remote host field cannot be blank");
  const BOTH_CREDENTIALS = gettext("Both user and password fields must be filled");
  const CHECK_ICONS = { pass: "✔", fail: "✘", skipped: "–" };

  document.addEventListener("DOMContentLoaded", () => {
    const menu = document.getElementById("vm-actions");
    const actionError = document.getElementById("action-error");
    const dialog = document.getElementById("migrate-dialog");

    const refresh = document.querySelector("[data-action=refresh-host]");
    if (refresh) {
      refresh.addEventListener("click", async () => {
        refresh.disabled = true;
        const result = await api("POST", "/api/hosts/" + refresh.dataset.hostId + "/refresh/");
        if (result.status === 200) { location.reload(); return; }
        actionError.textContent = result.body.detail || JSON.stringify(result.body);
        actionError.hidden = false;
        refresh.disabled = false;
      });
    }
    if (menu) {
      // The actions menu closes when clicking anywhere else.
      document.addEventListener("click", (event) => {
        if (menu.open && !menu.contains(event.target)) menu.open = false;
      });
    }
    if (!dialog) return;

    const form = document.getElementById("migrate-form");
    const progressSection = document.getElementById("migrate-progress");
    const startButton = document.getElementById("mig-start");
    const checksList = document.getElementById("mig-checks");
    const deleteBox = document.getElementById("mig-delete-source");
    const deleteWarning = document.getElementById("mig-delete-warning");
    const uuid = dialog.dataset.vmUuid;
    const live = dialog.dataset.live === "true";
    let view = null;
    let socket = null;

    const input = (name) => form.elements.namedItem(name);

    function clearErrors() {
      form.querySelectorAll("[data-error-for]").forEach((el) => { el.hidden = true; el.textContent = ""; });
      form.querySelectorAll(".invalid").forEach((el) => {
        el.classList.remove("invalid");
        el.removeAttribute("aria-invalid");
        el.removeAttribute("aria-describedby");
      });
    }

    function showErrors(errors) {
      for (const [field, messages] of Object.entries(errors)) {
        const text = Array.isArray(messages) ? messages.join(" ") : String(messages);
        let target = form.querySelector("[data-error-for='" + field + "']");
        if (!target) target = form.querySelector("[data-error-for='__all__']");
        target.textContent = target.textContent ? target.textContent + " " + text : text;
        target.hidden = false;
        const control = input(field);
        if (control && control.classList) {
          control.classList.add("invalid");
          errorTie(target, control, "mig-" + field + "-error");
        }
        if (target.closest("details")) target.closest("details").open = true;
      }
      const first = form.querySelector(".invalid");
      if (first) first.focus();
    }

    function payload() {
      const body = {
        remote_host: input("remote_host").value.trim(),
        delete_source: deleteBox.checked,
        live,
        storage: input("storage").value,
        transport: input("transport").value,
        bandwidth_mib_s: Number(input("bandwidth_mib_s").value || 0),
        auto_converge: input("auto_converge").checked,
        allow_postcopy: input("allow_postcopy").checked,
        compressed: input("compressed").checked,
        compression_method: input("compression_method").value,
        parallel_connections: Number(input("parallel_connections").value || 0),
        tls: input("tls").checked,
      };
      const newName = input("new_name").value.trim();
      if (newName) body.new_name = newName;
      // Offline there is no copy to converge: the server refuses any policy but none.
      if (live) body.convergence_policy = input("convergence_policy").value;
      // The recommended policy needs post-copy allowed: choosing it allows it.
      if (body.convergence_policy === "postcopy_when_stalled") {
        input("allow_postcopy").checked = true;
        body.allow_postcopy = true;
      }
      const user = input("user").value.trim(), password = input("password").value;
      if (user || password) { body.user = user; body.password = password; }
      const downtime = input("max_downtime_ms").value;
      if (downtime !== "") body.max_downtime_ms = Number(downtime);
      const level = input("compression_level").value;
      if (level !== "") body.compression_level = Number(level);
      for (const name of ["not_before", "window_end"]) {
        const when = withOffset(input(name).value);
        if (when) body[name] = when;
      }
      return body;
    }

    /* A datetime-local value ("2026-11-23T22:00") as ISO 8601 with the browser's
     * offset at that time ("2026-11-23T22:00:00+01:00"); "" stays "". */
    function withOffset(value) {
      if (!value) return "";
      const offset = -new Date(value).getTimezoneOffset();
      const abs = Math.abs(offset);
      const pad = (n) => String(n).padStart(2, "0");
      const seconds = value.length === 16 ? ":00" : "";
      return value + seconds + (offset < 0 ? "-" : "+") + pad(Math.floor(abs / 60)) + ":" + pad(abs % 60);
    }

    function localErrors(body) {
      const errors = {};
      if (!body.remote_host) errors.remote_host = [BLANK_HOST];
      if (Boolean(body.user) !== Boolean(body.password)) {
        errors[body.user ? "password" : "user"] = [BOTH_CREDENTIALS];
      }
      return errors;
    }

    function showChecks(checks) {
      checksList.innerHTML = "";
      for (const check of checks) {
        const item = document.createElement("li");
        item.className = "check-" + check.status;
        item.dataset.check = check.name;
        const icon = document.createElement("span");
        icon.className = "icon";
        icon.textContent = CHECK_ICONS[check.status] || "?";
        const name = document.createElement("strong");
        name.textContent = check.name.replace(/_/g, " ");
        const message = document.createElement("span");
        message.textContent = " " + check.message;
        item.append(icon, name, message);
        checksList.append(item);
      }
      checksList.hidden = checks.length === 0;
    }

    function otherErrors(result) {
      if (result.status === 400) return result.body;
      return { __all__: [result.body.detail || interpolate(gettext("The portal answered %s."), [result.status])] };
    }

    async function start(event) {
      event.preventDefault();
      clearErrors();
      showChecks([]);
      forecastBox.hidden = true;
      const body = payload();
      const errors = localErrors(body);
      if (Object.keys(errors).length) { showErrors(errors); return; }
      startButton.disabled = true;
      startButton.textContent = gettext("Checking…");
      try {
        const check = await api("POST", "/api/vms/" + uuid + "/migrate/check/", body);
        if (check.status !== 200) { showErrors(otherErrors(check)); return; }
        showChecks(check.body.checks);
        if (!check.body.ok) {
          showErrors({ __all__: [gettext("The pre-checks failed: nothing was started.")] });
          return;
        }
        // A copy that will not converge and no policy to end it: warn and recommend,
        // and let the person choose (never refused).
        const forecast = check.body.convergence;
        if (forecast && forecast.outlook === "will_not_converge" && body.convergence_policy === "none") {
          showForecast(forecast);
          return;
        }
        startButton.textContent = gettext("Starting…");
        await migrate(body);
      } finally {
        startButton.disabled = false;
        startButton.textContent = gettext("Start");
      }
    }

    async function migrate(body) {
      const started = await api("POST", "/api/vms/" + uuid + "/migrate/", body);
      if (started.status !== 202) { showErrors(otherErrors(started)); return; }
      showProgress(started.body);
    }

    const forecastBox = document.getElementById("mig-forecast");
    const useRecommended = forecastBox.querySelector("[data-action=use-recommended]");
    const startAnyway = forecastBox.querySelector("[data-action=start-anyway]");

    function showForecast(forecast) {
      forecastBox.querySelector("[data-field=forecast-message]").textContent =
        forecast.message.charAt(0).toUpperCase() + forecast.message.slice(1) + ".";
      useRecommended.dataset.policy = forecast.recommended_policy || "";
      const recommended = forecast.recommended_policy || "";
      useRecommended.textContent = interpolate(gettext("Use %s and start"),
        [POLICY_NAMES[recommended] || recommended.replace(/_/g, " ")]);
      useRecommended.hidden = !forecast.recommended_policy;
      forecastBox.hidden = false;
      forecastBox.scrollIntoView({ block: "nearest" });  // below the checks: bring it into view
    }

    async function startAfterWarning(button, choosePolicy) {
      clearErrors();
      if (choosePolicy) {
        input("convergence_policy").value = useRecommended.dataset.policy;
        input("convergence_policy").dispatchEvent(new Event("change"));
      }
      forecastBox.querySelectorAll("button").forEach((b) => { b.disabled = true; });
      try {
        await migrate(payload());  // the payload ticks allow_postcopy for post-copy
      } finally {
        forecastBox.querySelectorAll("button").forEach((b) => { b.disabled = false; });
        forecastBox.hidden = true;
        button.blur();
      }
    }

    useRecommended.addEventListener("click", () => startAfterWarning(useRecommended, true));
    startAnyway.addEventListener("click", () => startAfterWarning(startAnyway, false));

    function showProgress(migration) {
      form.hidden = true;
      progressSection.hidden = false;
      progressSection.querySelector("[data-field=route]").textContent = migration.source + " → " + migration.destination;
      progressSection.querySelector("[data-field=detail-link]").href = "/migrations/" + migration.id + "/";
      if (!view) view = new ProgressView(progressSection.querySelector("[data-progress-view]"));
      view.snapshot(migration, []);
      if (socket) socket.close();
      if (!FINAL.includes(migration.status)) socket = view.follow(migration.id);
      if (!dialog.open) dialog.showModal();
    }

    // The destination ranking (GET .../destinations/): the host chips are put in its
    // order, the best fit one marked recommended, each with its reasons listed.
    let placementsLoaded = false;
    async function loadPlacements() {
      const choices = document.getElementById("mig-host-choices");
      const list = document.getElementById("mig-placements");
      if (!choices || !list || placementsLoaded) return;
      placementsLoaded = true;
      list.hidden = false;
      list.innerHTML = "";
      const ranking = document.createElement("li");
      ranking.className = "muted";
      ranking.textContent = gettext("Ranking the hosts…");
      list.append(ranking);
      const result = await api("GET", "/api/vms/" + uuid + "/destinations/");
      list.innerHTML = "";
      if (result.status !== 200) {
        const item = document.createElement("li");
        item.className = "muted";
        item.textContent = interpolate(gettext("No ranking: %s"), [result.body.detail || interpolate(gettext("the portal answered %s"), [result.status])]);
        list.append(item);
        placementsLoaded = false;
        return;
      }
      result.body.destinations.forEach((placement, index) => {
        const recommended = index === 0 && placement.fit;
        const chip = Array.from(choices.querySelectorAll("[data-host]")).find((c) => c.dataset.host === placement.host);
        if (chip) {
          choices.append(chip);  // in the ranking's order
          chip.classList.toggle("unfit", !placement.fit);
          chip.classList.toggle("recommended", recommended);
          chip.dataset.fit = String(placement.fit);
          chip.title = placement.reasons.join("\n");
        }
        const item = document.createElement("li");
        item.dataset.placement = placement.host;
        item.className = placement.fit ? "fit" : "unfit";
        const name = document.createElement("strong");
        name.textContent = placement.host;
        const badge = document.createElement("span");
        badge.className = "badge " + (placement.fit ? "badge-fit" : "badge-unfit");
        badge.textContent = recommended ? gettext("recommended") : placement.fit ? gettext("fit") : gettext("unfit");
        const score = document.createElement("span");
        score.className = "muted";
        score.textContent = " " + interpolate(gettext("score %s"), [decimal(placement.score, 1)]) + " · ";
        const reasons = document.createElement("span");
        reasons.className = "reasons";
        reasons.textContent = placement.reasons.join("; ");
        item.append(name, " ", badge, score, reasons);
        list.append(item);
      });
    }

    function openForm() {
      loadPlacements();
      if (menu) menu.open = false;
      clearErrors();
      showChecks([]);
      form.hidden = false;
      progressSection.hidden = true;
      dialog.showModal();
      input("remote_host").focus();
    }

    function close() {
      dialog.close();
    }

    dialog.addEventListener("close", () => {
      if (socket) { socket.close(); socket = null; }
      // The VM may have moved or a migration may be running: show the page as it is now.
      if (!progressSection.hidden) location.reload();
    });

    form.addEventListener("submit", start);
    // Editing a field takes its message away.
    form.addEventListener("input", (event) => {
      const name = event.target.name;
      if (!name) return;
      forecastBox.hidden = true;  // the options changed: Start checks and forecasts again
      event.target.classList.remove("invalid");
      const message = form.querySelector("[data-error-for='" + name + "']");
      if (message) { message.hidden = true; message.textContent = ""; }
    });
    dialog.querySelectorAll("[data-action=close]").forEach((b) => b.addEventListener("click", close));
    document.querySelectorAll("[data-action=migrate]").forEach((b) => b.addEventListener("click", openForm));
    dialog.querySelectorAll("#mig-host-choices [data-host]").forEach((chip) => {
      chip.addEventListener("click", () => {
        input("remote_host").value = chip.dataset.host;
        input("remote_host").dispatchEvent(new Event("input"));
      });
    });
    const syncWarning = () => { deleteWarning.hidden = deleteBox.checked; };
    deleteBox.addEventListener("change", syncWarning);
    syncWarning();

    const active = readJson("active-migration-data");
    const show = document.querySelector("[data-action=show-progress]");
    if (active && show) show.addEventListener("click", () => showProgress(active));
    // Reopening the page while a migration of this VM runs resumes its progress view.
    if (active && new URLSearchParams(location.search).get("progress") === String(active.id)) {
      showProgress(active);
    }
  });
})();
