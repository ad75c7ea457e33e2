// The status page refreshes itself: every few seconds it fetches the
// sections, as HTML the server escaped, and puts them in place. A failed
// fetch leaves the last sections and says since when they are stale.
"use strict";

(function () {
  const sections = document.getElementById("sections");
  const connection = document.getElementById("connection");
  const every = Number(sections.dataset.refresh) || 3000;

  async function refresh() {
    try {
      const answer = await fetch("/status/sections", {
        credentials: "same-origin",
        cache: "no-store",
      });
      if (!answer.ok) {
        throw new Error("HTTP " + answer.status);
      }
      sections.innerHTML = await answer.text();
      connection.textContent = "";
      connection.className = "";
    } catch (error) {
      connection.textContent = "not refreshed since " + new Date().toISOString() + " (" + error.message + ")";
      connection.className = "stale";
    } finally {
      setTimeout(refresh, every);
    }
  }

  setTimeout(refresh, every);
})();
