// An MLflow run link's fragment (#/experiments/<e>/runs/<run id>[/...]) → the run's job page.
(function () {
  "use strict";
  const found = /\/runs\/([0-9A-Za-z_-]+)/.exec(window.location.hash || "");
  window.location.replace(found ? "/runs/" + encodeURIComponent(found[1]) : "/jobs");
})();
