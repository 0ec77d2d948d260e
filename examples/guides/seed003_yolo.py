"""Seed 003 (YOLO): a YOLO detector built from its model YAML, as the guide describes it (one pass over the
image, a grid of box and class predictions), on a headless host.

``YOLO("yolov8n.yaml")`` builds the network from Ultralytics' own model definition without downloading
weights (the pretrained ``yolov8n.pt`` would come from the internet). Checked: the raw output of the
detection head has the shape YOLOv8 defines for a 640x640 image (4 box coordinates + 80 classes, for
8400 grid cells over three scales), and ``predict`` runs end to end on an image array.
"""

import numpy as np
import torch
from ultralytics import YOLO

model = YOLO("yolov8n.yaml")  # the model's YAML: architecture only, random weights
model.model.eval()
with torch.no_grad():
    predictions = model.model(torch.zeros(1, 3, 640, 640))
head = predictions[0] if isinstance(predictions, (list, tuple)) else predictions
print(f"detection head output: {tuple(head.shape)}")
assert tuple(head.shape) == (1, 4 + 80, 80 * 80 + 40 * 40 + 20 * 20), tuple(head.shape)

image = np.random.default_rng(0).integers(0, 255, (640, 640, 3), dtype=np.uint8)
results = model.predict(image, verbose=False)
assert results[0].orig_shape == (640, 640)
print("seed003: OK")
