// promoguard dashboard: the whole of its script, no library. Pages work without it; with it,
// parts marked data-poll refresh themselves and deadlines count down.
(function () {
  "use strict";

  function poll(box) {
    var url = box.getAttribute("data-poll");
    var every = parseInt(box.getAttribute("data-every") || "5000", 10);
    function tick() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (r) {
          if (!r.ok || r.redirected) { throw new Error("refresh failed: " + r.status); }
          return r.text();
        })
        .then(function (html) {
          box.innerHTML = html;
          box.setAttribute("data-refreshed", new Date().toISOString());
          countdowns();
          if (!box.querySelector("[data-poll-stop]")) { setTimeout(tick, every); }
        })
        .catch(function () { setTimeout(tick, every * 3); });
    }
    setTimeout(tick, every);
  }

  function span(seconds) {
    var s = Math.abs(seconds), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    var text = (h ? h + " h " : "") + (h || m ? m + " min " : "") + (s % 60) + " s";
    return seconds < 0 ? "overdue by " + text : text;
  }

  function countdowns() {
    var now = Date.now();
    document.querySelectorAll("time[data-countdown]").forEach(function (t) {
      var seconds = Math.round((Date.parse(t.getAttribute("datetime")) - now) / 1000);
      t.textContent = span(seconds);
      t.classList.toggle("overdue", seconds < 0);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll]").forEach(poll);
    countdowns();
    setInterval(countdowns, 1000);
  });
})();
