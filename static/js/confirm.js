// The danger dialogs of the snapshots panel (restore, delete), without inline handlers:
// - a button with data-opens="<dialog id>" opens that dialog (static/js/berth.js);
// - the button marked data-confirmed in a dialog's form works only while the form's
//   input[data-expected] holds exactly its value (the workload's path);
// - a dialog closes as its confirmed button's request starts.
// Listeners sit on the document, so the panel can be swapped by htmx at any time.
(function () {
  "use strict";
  document.addEventListener("input", function (event) {
    var typed = event.target.closest("input[data-expected]");
    if (!typed || !typed.form) { return; }
    var button = typed.form.querySelector("button[data-confirmed]");
    if (button) { button.disabled = typed.value.trim() !== typed.dataset.expected; }
  });
  document.addEventListener("htmx:beforeRequest", function (event) {
    var button = event.target.closest && event.target.closest("button[data-confirmed]");
    var dialog = button && button.closest("dialog");
    if (dialog) { dialog.close(); }
  });
})();
