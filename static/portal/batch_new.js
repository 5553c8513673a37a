/* The new-batch page: the picked VMs, each with its destination (or the best fit), and
 * the batch's options become POST /api/migration-batches/; the answer's errors are shown
 * at their row or field, a started batch opens its page. */
(function () {
  "use strict";
  const { api, errorTie } = window.Portal;

  function text(messages) {
    if (typeof messages === "string") return messages;
    if (Array.isArray(messages)) return messages.map(text).join(" ");
    return Object.entries(messages || {}).map(([k, v]) => k + ": " + text(v)).join(" ");
  }

  document.addEventListener("DOMContentLoaded", () => {
    const form = document.getElementById("batch-form");
    if (!form) return;
    const rows = [...form.querySelectorAll("tr[data-uuid]")];
    const general = form.querySelector("[data-form-error]");

    function clear() {
      for (const el of form.querySelectorAll(".field-error")) { el.hidden = true; el.textContent = ""; }
      for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
      general.hidden = true;
    }

    function show(slot, input, message) {
      slot.textContent = message;
      slot.hidden = false;
      if (input) errorTie(slot, input, input.id ? input.id + "-error" : "e" + Math.random().toString(36).slice(2));
    }

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clear();
      const picked = rows.filter((row) => row.querySelector("[data-pick]").checked);
      const items = picked.map((row) => {
        const item = { vm: row.dataset.uuid };
        const destination = row.querySelector("[data-destination]").value;
        if (destination) item.destination = destination;
        return item;
      });
      const options = {};
      for (const input of form.querySelectorAll("[data-option]")) {
        if (input.type === "checkbox") { if (input.checked) options[input.name] = true; continue; }
        if (input.value === "") continue;
        options[input.name] = input.type === "number" ? Number(input.value) : input.value;
      }
      const body = {
        items, options,
        max_parallel: Number(form.elements.namedItem("max_parallel").value || 1),
        stop_on_failure: form.elements.namedItem("stop_on_failure").checked,
      };
      const notBefore = form.elements.namedItem("not_before").value;
      if (notBefore) body.not_before = new Date(notBefore).toISOString();
      const submit = document.getElementById("batch-submit");
      submit.disabled = true;
      const result = await api("POST", "/api/migration-batches/", body);
      submit.disabled = false;
      if (result.status === 202 || result.status === 201) {
        location.href = "/migration-batches/" + result.body.id + "/";
        return;
      }
      const errors = result.body || {};
      if (result.status !== 400 || errors.detail) {
        show(general, null, errors.detail || interpolate(gettext("The portal answered %s."), [result.status]));
        return;
      }
      for (const [field, messages] of Object.entries(errors)) {
        if (field === "items" && Array.isArray(messages) && messages.some((m) => typeof m === "object")) {
          messages.forEach((itemErrors, index) => {
            if (!itemErrors || !Object.keys(itemErrors).length) return;
            const row = picked[index];
            show(row.querySelector("[data-item-error]"), row.querySelector("[data-destination]"), text(itemErrors));
          });
          continue;
        }
        const nested = field === "options" ? Object.entries(messages) : [[field, messages]];
        for (const [name, list] of nested) {
          const slot = form.querySelector(`[data-error-for="${name}"]`);
          if (slot) show(slot, form.elements.namedItem(name), text(list));
          else show(general, null, name + ": " + text(list));
        }
      }
      const first = form.querySelector("[aria-invalid=true]");
      if (first) first.focus();
    });
  });
})();
