// Crucible run browser: live refresh of a running run, copy-on-click, auto-applied filters.
"use strict";

function pollRun(box) {
  const url = box.dataset.live;
  let timer = null;
  async function tick() {
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { accept: "application/json" } });
      if (response.ok) {
        const data = await response.json();
        box.innerHTML = data.html; // rendered and escaped by the server
        if (!data.running) {
          delete box.dataset.live;
          clearInterval(timer);
        }
      }
    } catch (err) {
      // the server may be restarting: try again on the next tick
    }
  }
  timer = setInterval(tick, 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  const live = document.querySelector("[data-live]");
  if (live) pollRun(live);
  for (const form of document.querySelectorAll("form[data-autosubmit]")) {
    for (const select of form.querySelectorAll("select")) {
      select.addEventListener("change", () => form.requestSubmit());
    }
  }
});

document.addEventListener("click", (event) => {
  const el = event.target.closest("[data-full]");
  if (!el || !navigator.clipboard || window.getSelection().toString()) return;
  navigator.clipboard.writeText(el.dataset.full).then(() => {
    el.classList.add("copied");
    setTimeout(() => el.classList.remove("copied"), 800);
  }, () => {});
});
