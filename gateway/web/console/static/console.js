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
