// CodeFormer extension: a before/after comparison on the Extras result, and tooltips for its controls.
// Works with the gradio 3 (AUTOMATIC1111, SD.Next) and gradio 4 (Forge) front ends: it only reads
// element ids and plain <img> tags. Every global name starts with codeformerExt; nothing runs at load
// time but the registration of one UI-update callback. The help texts come from codeformer_options.js,
// generated from the options the Python side defines (one wording everywhere).
//
// The comparison lets every click through to the result image except on the divider's handle: the
// WebUI opens its full-size viewer from a click listener on the <img> itself, so an overlay that caught
// clicks would stop it (seen in AUTOMATIC1111 1.10 and Forge).

const codeformerExtPrefix = "codeformer_ext_";

function codeformerExtRoot() {
    return typeof gradioApp === "function" ? gradioApp() : document;
}

// Put each control's explanation in a native tooltip (title) on the control.
function codeformerExtApplyTooltips(root) {
    if (typeof codeformerExtHelp !== "object") return;
    for (const [key, text] of Object.entries(codeformerExtHelp)) {
        for (const element of root.querySelectorAll(`[id^="${codeformerExtPrefix}"][id$="_${key}"]`)) {
            if (element.title !== text) element.title = text;
        }
    }
}

function codeformerExtEnabled(root) {
    const box = root.querySelector(`#${codeformerExtPrefix}extras-checkbox input, #${codeformerExtPrefix}extras_enable input`);
    return box ? box.checked : false;
}

// A draggable divider over `afterImage`: left of it the `beforeSource` image, right of it the result.
// Returns the widget element; calling it again for the same image only updates the "before" source.
function codeformerExtAttachCompare(afterImage, beforeSource) {
    const holder = afterImage.parentElement;
    let widget = holder.querySelector(":scope > .codeformer-ext-compare");
    if (!widget) {
        widget = document.createElement("div");
        widget.className = "codeformer-ext-compare";
        widget.innerHTML = '<img class="codeformer-ext-before" alt="before" draggable="false">' +
            '<div class="codeformer-ext-divider" role="slider" tabindex="0" aria-label="before / after" ' +
            'aria-valuemin="0" aria-valuemax="100"><span class="codeformer-ext-label">before | after</span></div>';
        if (getComputedStyle(holder).position === "static") holder.style.position = "relative";
        holder.appendChild(widget);
        codeformerExtBindDrag(widget);
        codeformerExtSetPosition(widget, 50);
    }
    widget.querySelector(".codeformer-ext-before").src = beforeSource;
    codeformerExtFit(widget, afterImage);
    codeformerExtSetPosition(widget, parseFloat(widget.dataset.position));
    return widget;
}

// Cover exactly the area where the result image is drawn (it may be letterboxed by object-fit: contain).
function codeformerExtFit(widget, afterImage) {
    const box = afterImage.getBoundingClientRect();
    const parent = afterImage.parentElement.getBoundingClientRect();
    let width = box.width, height = box.height, left = box.left - parent.left, top = box.top - parent.top;
    if (afterImage.naturalWidth && afterImage.naturalHeight && width && height) {
        const scale = Math.min(width / afterImage.naturalWidth, height / afterImage.naturalHeight);
        const drawnWidth = afterImage.naturalWidth * scale, drawnHeight = afterImage.naturalHeight * scale;
        left += (width - drawnWidth) / 2;
        top += (height - drawnHeight) / 2;
        width = drawnWidth;
        height = drawnHeight;
    }
    Object.assign(widget.style, {left: `${left}px`, top: `${top}px`, width: `${width}px`, height: `${height}px`});
}

function codeformerExtSetPosition(widget, percent) {
    const clamped = Math.max(0, Math.min(100, percent));
    widget.dataset.position = clamped.toFixed(1);
    widget.querySelector(".codeformer-ext-before").style.clipPath = `inset(0 ${100 - clamped}% 0 0)`;
    const divider = widget.querySelector(".codeformer-ext-divider");
    divider.style.left = `${clamped}%`;
    divider.setAttribute("aria-valuenow", clamped.toFixed(0));
    codeformerExtPlaceLabel(widget, clamped);
}

// Centre the label on the divider, but never past the image's edges (where it would be cut off).
function codeformerExtPlaceLabel(widget, percent) {
    const label = widget.querySelector(".codeformer-ext-label");
    const divider = widget.querySelector(".codeformer-ext-divider");
    const width = widget.clientWidth, labelWidth = label.offsetWidth;
    const centre = Math.max(labelWidth / 2, Math.min(width - labelWidth / 2, (width * percent) / 100));
    label.style.left = `${centre - labelWidth / 2 - divider.offsetLeft}px`;  // the label is placed within the divider
}

function codeformerExtBindDrag(widget) {
    const handle = widget.querySelector(".codeformer-ext-divider");
    const follow = (event) => {
        const rect = widget.getBoundingClientRect();
        if (rect.width > 0) codeformerExtSetPosition(widget, ((event.clientX - rect.left) / rect.width) * 100);
    };
    handle.addEventListener("pointerdown", (event) => {
        handle.dataset.dragging = "1";
        if (handle.setPointerCapture && event.pointerId !== undefined) {
            try { handle.setPointerCapture(event.pointerId); } catch (error) { /* synthetic events have no capture */ }
        }
        event.preventDefault();
        event.stopPropagation();
    });
    handle.addEventListener("pointermove", (event) => { if (handle.dataset.dragging === "1") follow(event); });
    const stop = () => { delete handle.dataset.dragging; };
    handle.addEventListener("pointerup", stop);
    handle.addEventListener("pointercancel", stop);
    handle.addEventListener("click", (event) => event.stopPropagation()); // a drag's click is not a click on the image
    handle.addEventListener("keydown", (event) => {
        const step = event.shiftKey ? 10 : 2;
        const now = parseFloat(widget.dataset.position);
        if (event.key === "ArrowLeft") codeformerExtSetPosition(widget, now - step);
        else if (event.key === "ArrowRight") codeformerExtSetPosition(widget, now + step);
        else return;
        event.preventDefault();
    });
}

// After each UI update: tooltips; and, on the Extras tab with our step enabled, the comparison.
function codeformerExtUpdate() {
    const root = codeformerExtRoot();
    codeformerExtApplyTooltips(root);
    const result = root.querySelector("#extras_gallery .preview img:not(.codeformer-ext-before), #extras_gallery img:not(.codeformer-ext-before)");
    const source = root.querySelector("#extras_image img");
    const existing = root.querySelector("#extras_gallery .codeformer-ext-compare");
    if (!result || !source || !source.src || !codeformerExtEnabled(root)) {
        if (existing) existing.remove();
        return;
    }
    codeformerExtAttachCompare(result, source.src);
}

if (typeof onAfterUiUpdate === "function") {
    onAfterUiUpdate(codeformerExtUpdate);
} else if (typeof onUiUpdate === "function") {
    onUiUpdate(codeformerExtUpdate);
}
