/* Live VM states: every element with data-live-state="<uuid>@<host>" follows what the
 * hosts' event listeners apply, over /ws/inventory/ (re-opened with backoff). */
(function () {
  "use strict";

  if (!document.querySelector("[data-live-state]")) return;
  let attempt = 0;

  function apply(message) {
    const key = message.vm.uuid + "@" + message.host;
    document.querySelectorAll("[data-live-state]").forEach((element) => {
      if (element.dataset.liveState !== key) return;
      element.className = element.className.replace(/\bstate-[a-z_]+/, "state-" + message.vm.state);
      element.textContent = message.vm.state_label;
      if (message.vm.state_reason) element.title = interpolate(gettext("libvirt: %s"), [message.vm.state_reason]);
      else element.removeAttribute("title");
      element.dataset.liveEvent = message.event;
    });
  }

  function open() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + "/ws/inventory/");
    socket.onopen = () => { attempt = 0; };
    socket.onmessage = (event) => apply(JSON.parse(event.data));
    socket.onclose = (event) => {
      if (event.code === 4401) return;  // logged out
      const delay = Math.min(10000, 500 * 2 ** attempt);
      attempt += 1;
      setTimeout(open, delay);
    };
  }

  open();
})();
