// Generated from lib_codeformer/options.py by `python -m lib_codeformer.options`: edit the help texts there.
const codeformerExtHelp = {
    "fidelity": "How much of the input face to keep. 0 rebuilds the face from CodeFormer's codebook (cleanest, may look less like the person); 1 keeps the most of the input (most faithful, keeps more of its defects).",
    "visibility": "Blend the whole restored image with the input: 1 shows only the result.",
    "detector": "auto: RetinaFace-ResNet50 where it can be had, else YuNet (the image's info says which ran). retinaface_resnet50: what AUTOMATIC1111 uses (104 MB download). retinaface_mobile0.25: smaller, less accurate. yunet: built in, no download.",
    "confidence": "Faces the detector is less sure of are ignored. 0: the detector's default (0.97 RetinaFace, 0.8 YuNet). Lower it to catch small or turned faces, raise it if non-faces get restored.",
    "faces": "all: every face found; largest: only the biggest; center: only the one nearest the image centre.",
    "max_faces": "Restore at most this many faces, the largest first (0: no limit).",
    "min_face_size": "Ignore faces whose box is smaller than this, in pixels (tiny background faces).",
    "blend": "Per-face strength: 1 pastes the restored face, 0.5 mixes it half and half with the original face.",
    "mask": "box: a soft-edged square around the face (fast, no download). parsing: only the face's parts, found by ParseNet (keeps hair and background untouched; 85 MB download).",
    "color_correction": "Give the restored face the original face's colours (CodeFormer can shift skin tones).",
    "face_upscaler": "Faces larger on the image than CodeFormer's 512 px are enlarged by this upscaler to their size there before they are pasted back, so they keep the detail of the skin and hair around them; smaller faces cost nothing. Command line: lanczos or a super-resolution model file (ESRGAN, Real-ESRGAN, SwinIR, DAT...); WebUI: one of the WebUI's upscalers."
};
