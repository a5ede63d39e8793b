// Behaviour every page shares, without inline handlers (the Content-Security-Policy
// forbids them; docs/security.md):
// - a select marked data-autosubmit submits its form when changed;
// - a form marked data-mirror="attr:field" keeps data-attr equal to its field's value
//   (the CSS shows the fieldsets of the chosen kind);
// - a form marked data-confirm asks that question before it is submitted;
// - a button marked data-opens="<dialog id>" opens that dialog, and a button marked
//   data-closes-dialog closes its dialog as its request starts;
// - a poll marked data-visible-only asks nothing while the page is hidden;
// - after a swap into an element marked data-keep-rows="N", the rows list #log-lines keeps
//   its newest N rows and scrolls to the end.
// Listeners sit on the document, so content htmx swaps in works as well.
(function () {
  "use strict";
  document.addEventListener("change", function (event) {
    var select = event.target.closest("select[data-autosubmit]");
    if (select && select.form) { select.form.submit(); return; }
    var form = event.target.form;
    if (!form || !form.dataset.mirror) { return; }
    var parts = form.dataset.mirror.split(":");
    var field = form.elements[parts[1]];
    if (field) { form.dataset[parts[0]] = field.value; }
  });
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });
  document.addEventListener("click", function (event) {
    var opener = event.target.closest("button[data-opens]");
    if (!opener) { return; }
    var dialog = document.getElementById(opener.dataset.opens);
    if (dialog && !dialog.open) { dialog.showModal(); }
  });
  document.addEventListener("htmx:beforeRequest", function (event) {
    var elt = event.detail.elt;
    if (elt.matches("[data-visible-only]") && document.visibilityState !== "visible") {
      event.preventDefault();
      return;
    }
    var dialog = elt.matches("button[data-closes-dialog]") && elt.closest("dialog");
    if (dialog) { dialog.close(); }
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    var view = event.target.closest && event.target.closest("[data-keep-rows]");
    var keep = view && parseInt(view.dataset.keepRows, 10);
    var rows = document.getElementById("log-lines");
    if (!keep || !rows) { return; }
    while (rows.children.length > keep) { rows.firstElementChild.remove(); }
    rows.scrollTop = rows.scrollHeight;
  });
})();
