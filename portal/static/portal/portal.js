// The customer portal's few behaviours, without inline script (the CSP allows none).
"use strict";

// Copy buttons: <button data-copy="element-id">; the element is an input (its value) or any
// element (its text). The Clipboard API first; selecting and execCommand where it is refused
// (an iframe without clipboard-write permission).
document.addEventListener("click", function (event) {
    const button = event.target.closest("button[data-copy]");
    if (!button) {
        return;
    }
    event.preventDefault();
    const source = document.getElementById(button.dataset.copy);
    if (!source) {
        return;
    }
    const text = "value" in source ? source.value : source.textContent;
    const label = button.textContent;
    const say = function (words) {
        button.textContent = words;
        setTimeout(function () {
            button.textContent = label;
        }, 2500);
    };
    // Without the clipboard, the text is left selected for the reader to copy.
    const fallback = function () {
        if ("select" in source) {
            source.focus();
            source.select();
        }
        say(document.execCommand("copy") ? "Copied" : "Selected: press Ctrl+C");
    };
    const done = function () {
        say("Copied");
    };
    if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, fallback);
    } else {
        fallback();
    }
});

// "All events" and the event types exclude each other: choosing one clears the other.
document.addEventListener("change", function (event) {
    const box = event.target;
    if (!(box instanceof HTMLInputElement) || box.name !== "enabled_events" || !box.checked) {
        return;
    }
    const all = box.value === "*";
    document.querySelectorAll('input[name="enabled_events"]').forEach(function (other) {
        if (other !== box && (all || other.value === "*")) {
            other.checked = false;
        }
    });
});
