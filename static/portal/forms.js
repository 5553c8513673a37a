/* Forms and buttons that call the API, declared in the template:
 *   <form data-api-form data-method="POST" data-url="/api/..." data-then="reload">
 *   <button data-api-button data-method="DELETE" data-url="/api/..." data-confirm="...">
 * Inputs become the JSON body by name (checkbox: true/false; several checkboxes of one
 * name, data-list: a list of their values; type=number or data-number: a number; an empty optional field is left
 * out, so the API's default applies). Errors are shown at the field the API names
 * (aria-invalid, aria-describedby), the rest in the form's [data-form-error], which is
 * an aria-live region. data-then: "reload", "redirect:/path/{id}/" (fields of the
 * answer), or "reveal:<element id>" (fills [data-answer=field] inside it and shows it). */
(function () {
  "use strict";
  const { api, errorTie } = window.Portal;

  function bodyOf(form) {
    const body = {};
    const lists = new Set(
      [...form.querySelectorAll("input[type=checkbox][data-list]")].map((i) => i.name)
    );
    for (const name of lists) body[name] = [];
    for (const input of form.querySelectorAll("input[name], select[name], textarea[name]")) {
      if (input.disabled) continue;
      if (input.type === "checkbox") {
        if (lists.has(input.name)) { if (input.checked) body[input.name].push(input.value); }
        else body[input.name] = input.checked;
        continue;
      }
      if (input.multiple) {
        body[input.name] = [...input.selectedOptions].map((o) => o.value);
        continue;
      }
      const value = input.value.trim();
      if (value === "" && !input.required) continue;
      if (input.type === "number" || "number" in input.dataset) body[input.name] = Number(value);
      else if (input.dataset.split === "lines") body[input.name] = value.split(/\n+/).map((s) => s.trim()).filter(Boolean);
      else body[input.name] = input.type === "password" ? input.value : value;
    }
    return body;
  }

  function flatten(messages) {
    if (typeof messages === "string") return [messages];
    if (Array.isArray(messages)) return messages.flatMap(flatten);
    if (messages && typeof messages === "object") {
      return Object.entries(messages).flatMap(([k, v]) => flatten(v).map((m) => k + ": " + m));
    }
    return [String(messages)];
  }

  function clearErrors(form) {
    for (const el of form.querySelectorAll("[data-error-for]")) { el.hidden = true; el.textContent = ""; }
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    const general = form.querySelector("[data-form-error]");
    if (general) { general.hidden = true; general.textContent = ""; }
  }

  function showErrors(form, result) {
    const body = result.body || {};
    const rest = [];
    if (result.status === 400 && !body.detail) {
      for (const [field, messages] of Object.entries(body)) {
        const slot = form.querySelector(`[data-error-for="${field}"]`);
        const input = form.querySelector(`[name="${field}"]`);
        if (slot) {
          slot.textContent = flatten(messages).join(" ");
          slot.hidden = false;
          if (input) errorTie(slot, input, (form.id || "form") + "-" + field + "-error");
        } else {
          rest.push(...flatten(field === "non_field_errors" ? messages : { [field]: messages }));
        }
      }
    } else {
      rest.push(body.detail || interpolate(gettext("The portal answered %s."), [result.status]));
    }
    const general = form.querySelector("[data-form-error]");
    if (general && rest.length) { general.textContent = rest.join(" "); general.hidden = false; }
    const first = form.querySelector("[aria-invalid=true]");
    if (first) first.focus();
  }

  function fill(template, answer) {
    return template.replace(/\{(\w+)\}/g, (_m, key) => encodeURIComponent(answer[key]));
  }

  function after(element, answer) {
    const then = element.dataset.then || "reload";
    if (then === "reload") { location.reload(); return; }
    if (then.startsWith("redirect:")) { location.href = fill(then.slice(9), answer); return; }
    if (then.startsWith("reveal:")) {
      const target = document.getElementById(then.slice(7));
      for (const slot of target.querySelectorAll("[data-answer]")) {
        slot.textContent = answer[slot.dataset.answer];
      }
      target.hidden = false;
      target.focus();
    }
  }

  async function submit(form) {
    clearErrors(form);
    const button = form.querySelector("[type=submit]");
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    if (button) button.disabled = true;
    form.setAttribute("aria-busy", "true");
    const result = await api(form.dataset.method || "POST", form.dataset.url, bodyOf(form));
    form.removeAttribute("aria-busy");
    if (button) button.disabled = false;
    if (result.status >= 200 && result.status < 300) {
      for (const input of form.querySelectorAll("input[type=password]")) input.value = "";
      after(form, result.body);
      return;
    }
    showErrors(form, result);
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const form of document.querySelectorAll("form[data-api-form]")) {
      form.addEventListener("submit", (event) => { event.preventDefault(); submit(form); });
    }
    for (const button of document.querySelectorAll("button[data-api-button]")) {
      button.addEventListener("click", async () => {
        if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
        button.disabled = true;
        const result = await api(button.dataset.method || "POST", button.dataset.url,
          button.dataset.body ? JSON.parse(button.dataset.body) : undefined);
        button.disabled = false;
        if (result.status >= 200 && result.status < 300) { after(button, result.body); return; }
        const slot = document.getElementById(button.dataset.errorIn || "page-error");
        if (slot) { slot.textContent = (result.body && result.body.detail) || flatten(result.body).join(" "); slot.hidden = false; }
      });
    }
  });
})();
