// cible studio: what every page shares. htmx sends the CSRF header itself (hx-headers on <body>);
// plain fetch() calls from page scripts use studio.post().
(function () {
  "use strict";
  const csrf = () => document.body.dataset.csrf || "";
  window.studio = {
    csrf: csrf,
    // A JSON GET of a studio data route; a lost session sends the browser to the sign-in page.
    getJSON: async function (url) {
      const response = await fetch(url, { credentials: "same-origin", headers: {
        "Accept": "application/json", "HX-Request": "true",
        "X-Studio-Page": window.location.pathname + window.location.search } });
      const to = response.headers.get("HX-Redirect");
      if (to) { window.location.assign(to); throw new Error("signed out"); }
      if (!response.ok) throw new Error(url + " answered " + response.status);
      return response;
    },
    post: function (url, body) {
      return fetch(url, { method: "POST", credentials: "same-origin", body: body,
                          headers: { "X-CSRF-Token": csrf(), "HX-Request": "true",
                                     "X-Studio-Page": window.location.pathname + window.location.search } });
    },
  };
})();
