// Light progressive enhancement: drag-and-drop on the import form, live progress. The page works without it.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const zone = document.querySelector(".dropzone");
  if (zone) {
    const input = zone.querySelector("input[type=file]");
    zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      zone.classList.remove("over");
      if (e.dataTransfer && e.dataTransfer.files.length) {
        input.files = e.dataTransfer.files;
        zone.closest("form").submit();
      }
    });
  }
  const bar = document.querySelector("progress[data-poll]");
  if (bar) {
    const poll = async () => {
      try {
        const r = await fetch(bar.dataset.poll, { credentials: "same-origin" });
        const s = await r.json();
        bar.value = s.percent;
        if (s.state === "running" || s.state === "uploaded") { setTimeout(poll, 500); } else { location.reload(); }
      } catch (err) { setTimeout(poll, 2000); }
    };
    setTimeout(poll, 300);
  }
});
