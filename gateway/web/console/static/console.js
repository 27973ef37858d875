// The gateway console's script: a few conveniences on top of pages that work without it.
// No framework, nothing fetched from elsewhere (the Content-Security-Policy allows only this origin).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Dead letters: "select all in this group" ticks the group's rows.
  for (const box of document.querySelectorAll("input[data-select-group]")) {
    box.addEventListener("change", () => {
      for (const row of document.querySelectorAll(`input[data-group="${box.dataset.selectGroup}"]`)) {
        row.checked = box.checked;
      }
    });
  }

  // Playground: a chosen file fills the text area, so it can be read and edited before running.
  for (const input of document.querySelectorAll("input[type=file][data-fills]")) {
    input.addEventListener("change", async () => {
      const target = document.getElementById(input.dataset.fills);
      const file = input.files && input.files[0];
      if (target && file) {
        target.value = await file.text();
        input.value = "";  // the text area is what is sent, edits included
      }
    });
  }
});

// Events: while the first page is open, ask for newer events every few seconds and add them on top.
const LIVE_EVERY_MS = 5000;

function startLive(body) {
  const status = document.getElementById("live");
  const newest = () => {
    const first = body.querySelector("tr[data-cursor]");
    return first ? first.dataset.cursor : body.dataset.after;  // no row yet: what arrives after the page was made
  };
  const poll = async () => {
    if (document.hidden) {
      return;
    }
    const url = `${body.dataset.live}&after=${encodeURIComponent(newest())}`;
    const answer = await fetch(url, { credentials: "same-origin", redirect: "manual", cache: "no-store" });
    if (!answer.ok) {  // logged out, or the session ran out: stop, and say so
      clearInterval(timer);
      status.textContent = "Live updates stopped: reload the page.";
      return;
    }
    const rows = new DOMParser().parseFromString(`<table><tbody>${await answer.text()}</tbody></table>`, "text/html")
      .querySelectorAll("tr[data-cursor]");
    for (const row of Array.from(rows).reverse()) {
      row.classList.add("fresh");
      body.prepend(document.importNode(row, true));
    }
    if (rows.length) {
      status.textContent = `${rows.length} new event${rows.length === 1 ? "" : "s"} at ${new Date().toLocaleTimeString()}.`;
    }
  };
  const timer = setInterval(() => poll().catch(() => {}), LIVE_EVERY_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  const body = document.querySelector("tbody[data-live]");
  if (body) {
    startLive(body);
  }
});
