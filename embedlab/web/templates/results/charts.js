// Draws every chart of a results page: each <div data-vega-spec="ID"> gets the Vega-Lite spec held in the JSON data
// block <script type="application/json" id="ID"> (a data block, not a script: the CSP allows no inline script) and
// is rendered by the vendored vega-embed as SVG. Served by routes_results.py (GET /results/charts.js).
(function () {
  "use strict";

  function fail(el, message) {
    el.textContent = "The chart could not be drawn: " + message;  // text, never HTML
    el.className += " flash flash-error";
  }

  function draw(root) {
    var nodes = (root || document).querySelectorAll("[data-vega-spec]");
    Array.prototype.forEach.call(nodes, function (el) {
      if (el.getAttribute("data-drawn")) { return; }
      el.setAttribute("data-drawn", "1");
      var source = document.getElementById(el.getAttribute("data-vega-spec"));
      if (!source) { return fail(el, "its data is missing"); }
      if (typeof window.vegaEmbed !== "function") { return fail(el, "vega-embed did not load"); }
      var spec;
      try { spec = JSON.parse(source.textContent); } catch (e) { return fail(el, "bad chart data"); }
      window.vegaEmbed(el, spec, {
        renderer: "svg",
        // export as SVG / PNG only: no "open in the Vega editor" (an outside site) and no source view
        actions: { export: true, source: false, compiled: false, editor: false }
      }).catch(function (err) { fail(el, String(err && err.message ? err.message : err)); });
    });
  }

  document.addEventListener("DOMContentLoaded", function () { draw(document); });
  document.addEventListener("htmx:afterSettle", function (event) { draw(event.target); });
})();
