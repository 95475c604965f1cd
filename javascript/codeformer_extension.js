// CodeFormer extension: a before/after comparison on the Extras result, and tooltips for its controls.
// Works with the gradio 3 (AUTOMATIC1111, SD.Next) and gradio 4 (Forge) front ends: it only reads
// element ids and plain <img> tags. Every global name starts with codeformerExt; nothing runs at load
// time but the registration of one UI-update callback.

const codeformerExtPrefix = "codeformer_ext_";

const codeformerExtTooltips = {
    fidelity: "0 rebuilds the face from CodeFormer's codebook (cleanest); 1 keeps the most of the input (most faithful).",
    visibility: "Blend the whole restored image with the input: 1 shows only the result.",
    detector: "retinaface_resnet50: what AUTOMATIC1111 uses. yunet: built in, no download.",
    confidence: "Faces the detector is less sure of are ignored. 0: the detector's default.",
    faces: "all faces, only the largest, or only the one nearest the centre.",
    max_faces: "Restore at most this many faces, the largest first (0: no limit).",
    min_face_size: "Ignore faces smaller than this many pixels.",
    blend: "Per-face strength: 1 pastes the restored face, 0.5 mixes it with the original.",
    mask: "box: soft-edged square. parsing: only the face's parts (keeps hair and background).",
    color_correction: "Give the restored face the original face's colours.",
};

function codeformerExtRoot() {
    return typeof gradioApp === "function" ? gradioApp() : document;
}

// Put each control's explanation in a native tooltip (title) on the control.
function codeformerExtApplyTooltips(root) {
    for (const [key, text] of Object.entries(codeformerExtTooltips)) {
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
            'aria-valuemin="0" aria-valuemax="100"><span>before | after</span></div>';
        if (getComputedStyle(holder).position === "static") holder.style.position = "relative";
        holder.appendChild(widget);
        codeformerExtBindDrag(widget);
        codeformerExtSetPosition(widget, 50);
    }
    widget.querySelector(".codeformer-ext-before").src = beforeSource;
    codeformerExtFit(widget, afterImage);
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
}

function codeformerExtBindDrag(widget) {
    const follow = (event) => {
        const rect = widget.getBoundingClientRect();
        if (rect.width > 0) codeformerExtSetPosition(widget, ((event.clientX - rect.left) / rect.width) * 100);
    };
    widget.addEventListener("pointerdown", (event) => {
        widget.dataset.dragging = "1";
        if (widget.setPointerCapture && event.pointerId !== undefined) {
            try { widget.setPointerCapture(event.pointerId); } catch (error) { /* synthetic events have no capture */ }
        }
        follow(event);
        event.preventDefault();
        event.stopPropagation();
    });
    widget.addEventListener("pointermove", (event) => { if (widget.dataset.dragging === "1") follow(event); });
    const stop = () => { delete widget.dataset.dragging; };
    widget.addEventListener("pointerup", stop);
    widget.addEventListener("pointercancel", stop);
    widget.querySelector(".codeformer-ext-divider").addEventListener("keydown", (event) => {
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
    const result = root.querySelector("#extras_gallery .preview img, #extras_gallery img");
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
