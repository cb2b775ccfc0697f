// Copy buttons: <button data-copy="ID"> copies the text of the element with that id.
// Loaded as a static file (the Content Security Policy forbids inline scripts).
(function () {
  "use strict";

  function selectText(element) {
    var range = document.createRange();
    range.selectNodeContents(element);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  function copied(button, ok) {
    var label = button.dataset.label || button.textContent;
    button.dataset.label = label;
    button.textContent = ok ? "Copied" : "Selected: press Ctrl+C";
    window.setTimeout(function () {
      button.textContent = label;
    }, 2500);
  }

  function copy(button) {
    var source = document.getElementById(button.dataset.copy);
    if (!source) {
      return;
    }
    var text = source.textContent;
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(
        function () {
          copied(button, true);
        },
        function () {
          selectText(source);
          copied(button, false);
        }
      );
      return;
    }
    selectText(source);
    copied(button, document.execCommand("copy"));
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-copy]");
    if (button) {
      copy(button);
    }
  });
})();
