// Live progress on the dashboard: polls the progress JSON every 1.5 s while anything runs (and
// for the first minute after the page loads, to catch work just queued), redraws the progress
// bars, and refreshes the targets table when a run starts or ends. No build step, no library.
(function () {
  "use strict";
  var box = document.getElementById("running");
  if (!box || !window.fetch) return;
  var url = box.getAttribute("data-progress-url");
  var loaded = Date.now();
  var known = keys(box.querySelectorAll("[data-key]"), function (el) { return el.getAttribute("data-key"); });

  function keys(list, pick) {
    var found = {};
    Array.prototype.forEach.call(list, function (item) { found[pick(item)] = true; });
    return found;
  }

  function sameKeys(a, b) {
    var ka = Object.keys(a), kb = Object.keys(b);
    return ka.length === kb.length && ka.every(function (k) { return b[k]; });
  }

  function render(items) {
    box.textContent = "";
    if (!items.length) return;
    var title = document.createElement("h2");
    title.textContent = "Running now";
    box.appendChild(title);
    items.forEach(function (item) {
      var row = document.createElement("p");
      row.className = "progress-row";
      row.setAttribute("data-key", item.key);
      var link = document.createElement("a");
      link.href = item.url;
      link.textContent = item.label;
      var bar = document.createElement("progress");
      bar.max = 100;
      if (item.percent !== null) bar.value = item.percent;  // else indeterminate
      bar.setAttribute("aria-label", item.label);
      var text = document.createElement("span");
      text.className = "progress-text quiet";
      text.textContent = item.text;
      row.appendChild(link);
      row.appendChild(document.createTextNode(" "));
      row.appendChild(bar);
      row.appendChild(document.createTextNode(" "));
      row.appendChild(text);
      box.appendChild(row);
    });
  }

  function refreshPage() {
    return fetch(window.location.href, { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : ""; })
      .then(function (html) {
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html");
        ["#targets tbody", ".dash-totals", "#summary"].forEach(function (selector) {
          var old = document.querySelector(selector), replacement = fresh.querySelector(selector);
          if (old && replacement) old.replaceWith(replacement);
        });
      });
  }

  function tick() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error(response.status);
        return response.json();
      })
      .then(function (data) {
        render(data.running);
        var now = keys(data.running, function (item) { return item.key; });
        var changed = !sameKeys(now, known);
        known = now;
        return (changed ? refreshPage() : Promise.resolve()).then(function () {
          if (data.running.length || Date.now() - loaded < 60000) window.setTimeout(tick, 1500);
        });
      })
      .catch(function () { window.setTimeout(tick, 5000); });
  }

  tick();
})();
