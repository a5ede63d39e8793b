// "Add a row" under a workload form's list: a copy of the formset's empty row
// (<template data-empty-row>), numbered next, and TOTAL_FORMS counted up.
(function () {
  "use strict";
  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-add-row]");
    if (!button) { return; }
    var fieldset = button.closest("fieldset.rows");
    var prefix = fieldset.dataset.part;
    var total = fieldset.querySelector('input[name="' + prefix + '-TOTAL_FORMS"]');
    var index = parseInt(total.value, 10);
    var html = fieldset.querySelector("template[data-empty-row]").innerHTML
      .replace(/__prefix__/g, String(index));
    fieldset.querySelector("tbody").insertAdjacentHTML("beforeend", html);
    total.value = String(index + 1);
    var first = fieldset.querySelector('tbody tr:last-child input:not([type=hidden]), tbody tr:last-child select');
    if (first) { first.focus(); }
  });
})();
