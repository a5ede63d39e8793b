// A snapshot archive sent to the import endpoint with XHR, for its upload progress.
// The form: data-url (the endpoint), data-csrf, data-refresh (the snapshots panel's URL).
(function () {
  "use strict";
  function setup(form) {
    var bar = form.querySelector("progress");
    var status = form.querySelector("[data-status]");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var file = form.elements.archive.files[0];
      if (!file) { return; }
      var body = new FormData();
      body.append("archive", file);
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.dataset.url);
      xhr.setRequestHeader("X-CSRFToken", form.dataset.csrf);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.onprogress = function (e) {
        if (e.lengthComputable) { bar.max = e.total; bar.value = e.loaded; }
      };
      xhr.onload = function () {
        form.elements.upload.disabled = false;
        if (xhr.status === 201) {
          status.textContent = form.dataset.done;
          form.dataset.state = "done";
          if (window.htmx && document.getElementById("snapshots")) {
            window.htmx.ajax("GET", form.dataset.refresh, {target: "#snapshots", swap: "outerHTML"});
          }
          return;
        }
        var detail = form.dataset.failed;
        try {
          var answer = JSON.parse(xhr.responseText);
          var first = answer.detail || (answer.archive && answer.archive[0]);
          if (typeof first === "string") { detail = detail + " " + first; }
        } catch (ignored) { /* not JSON: the generic message stands */ }
        status.textContent = detail;
        form.dataset.state = "failed";
      };
      xhr.onerror = function () {
        form.elements.upload.disabled = false;
        status.textContent = form.dataset.failed;
        form.dataset.state = "failed";
      };
      form.elements.upload.disabled = true;
      form.dataset.state = "uploading";
      bar.hidden = false;
      bar.value = 0;
      status.textContent = form.dataset.uploading;
      xhr.send(body);
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form[data-import]").forEach(setup);
  });
})();
