// /docs: Swagger UI on the app's own /openapi.json. "Try it out" runs with the browser's session cookie; state-changing
// calls carry the CSRF token from the page's meta tag, as the app's own pages do.
window.addEventListener("DOMContentLoaded", function () {
  "use strict";
  var meta = document.querySelector('meta[name="csrf-token"]');
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    requestInterceptor: function (request) {
      if (meta && meta.content) { request.headers["X-CSRF-Token"] = meta.content; }
      return request;
    },
  });
});
