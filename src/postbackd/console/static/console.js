// The console works without this file; it only adds the copy buttons next to ids (a tracker
// id goes into the X campaign name). Served as a file: the pages allow no inline script.
"use strict";

function copyFrom(button) {
  const source = document.getElementById(button.dataset.copyFrom);
  if (!source) return;
  const text = source.textContent.trim();
  const done = () => {
    button.textContent = "Copied";
    button.classList.add("copied");
    window.setTimeout(() => {
      button.textContent = "Copy";
      button.classList.remove("copied");
    }, 2000);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, () => selectText(source));
  } else {
    // Plain HTTP to another host is no secure context: select the id for Ctrl+C instead.
    selectText(source);
    button.textContent = "Selected: press Ctrl+C";
  }
}

function selectText(element) {
  const range = document.createRange();
  range.selectNodeContents(element);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button[data-copy-from]")) {
    button.hidden = false;
    button.addEventListener("click", () => copyFrom(button));
  }
});
