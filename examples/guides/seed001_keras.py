"""Seed 001 (TensorFlow/Keras): the guide's CNN, LSTM text model and VGG16 transfer-learning head.

The guide's code, unchanged, with the data it leaves to the reader made up (MNIST-shaped images from class
templates, random word sequences) and VGG16's ImageNet weights replaced by ``weights=None`` (no download).
Each model is compiled as in the guide and fitted briefly: the CNN's loss must fall, the others must
produce outputs of the right shape.
"""

import numpy as np
import tensorflow as tf
from tensorflow.keras.layers import LSTM, Conv2D, Dense, Embedding, Flatten, MaxPooling2D
from tensorflow.keras.models import Sequential

rng = np.random.default_rng(0)

# --- CNN (the guide's model)
model = Sequential()
model.add(Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)))
model.add(MaxPooling2D((2, 2)))
model.add(Conv2D(64, (3, 3), activation="relu"))
model.add(MaxPooling2D((2, 2)))
model.add(Conv2D(64, (3, 3), activation="relu"))
model.add(Flatten())
model.add(Dense(64, activation="relu"))
model.add(Dense(10, activation="softmax"))

model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])

templates = rng.uniform(0, 1, (10, 28, 28, 1)).astype("float32")
labels = rng.integers(0, 10, 1024)
images = np.clip(templates[labels] + rng.normal(0, 0.2, (1024, 28, 28, 1)), 0, 1).astype("float32")
history = model.fit(images, tf.keras.utils.to_categorical(labels, 10), epochs=3, batch_size=64, verbose=2)
losses = history.history["loss"]
assert losses[-1] < losses[0], f"the CNN's loss did not fall: {losses}"

# --- LSTM text model (the guide's model)
model = Sequential()
model.add(Embedding(input_dim=1000, output_dim=128, input_length=20))
model.add(LSTM(128))
model.add(Dense(1000, activation="softmax"))

model.compile(optimizer="adam", loss="categorical_crossentropy")

words = rng.integers(0, 1000, (64, 20))
next_words = tf.keras.utils.to_categorical(rng.integers(0, 1000, 64), 1000)
model.fit(words, next_words, epochs=1, batch_size=32, verbose=2)
assert model.predict(words[:4], verbose=0).shape == (4, 1000)

# --- VGG16 transfer learning (the guide's code; weights=None instead of 'imagenet': no download)
from tensorflow.keras.applications.vgg16 import VGG16  # noqa: E402 - the guide imports it here
from tensorflow.keras.models import Model  # noqa: E402

base_model = VGG16(weights=None, include_top=False, input_shape=(224, 224, 3))

for layer in base_model.layers:
    layer.trainable = False

x = base_model.output
x = Flatten()(x)
x = Dense(256, activation="relu")(x)
output = Dense(10, activation="softmax")(x)

model = Model(inputs=base_model.input, outputs=output)

model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])

photos = rng.uniform(0, 255, (4, 224, 224, 3)).astype("float32")
model.fit(photos, tf.keras.utils.to_categorical(rng.integers(0, 10, 4), 10), epochs=1, batch_size=2, verbose=2)
assert model.predict(photos, verbose=0).shape == (4, 10)
assert not any(layer.trainable for layer in base_model.layers), "the base should stay frozen"
print("seed001: OK")
