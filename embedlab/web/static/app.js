// embedlab pages: small behaviour on top of HTMX. No inline scripts anywhere (the Content-Security-Policy forbids
// them), so everything a page needs in JavaScript lives in files under /static.
(function () {
  "use strict";

  function showFlash(message, category) {
    var box = document.getElementById("flash");
    if (!box) { return; }
    var div = document.createElement("div");
    div.className = "flash flash-" + (category || "error");
    div.setAttribute("role", "alert");
    div.textContent = message;  // text, never HTML: the message may echo user input
    box.appendChild(div);
  }

  // An HTMX request that failed: the server answers {"error": "..."} (render.error_response); show it on the page.
  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    var message = "Request failed (" + xhr.status + ")";
    try {
      var body = JSON.parse(xhr.responseText);
      if (body && body.error) { message = body.error; }
    } catch (e) { /* not JSON: keep the status line */ }
    showFlash(message, "error");
  });
  document.addEventListener("htmx:sendError", function () {
    showFlash("The server cannot be reached.", "error");
  });

  window.embedlab = { showFlash: showFlash };
})();
