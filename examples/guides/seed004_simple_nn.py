"""Seed 004 (PyTorch MNIST): SimpleNN trained with torchvision datasets, transforms and a DataLoader.

As in the guide, except that ``datasets.MNIST(root='./data', download=True)`` is replaced by a synthetic
dataset of 28x28 grey images (a fixed template per class plus noise) built with torchvision's own
``datasets.VisionDataset``, so the same ``transforms`` pipeline and ``DataLoader`` run without a download.
"""

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torchvision import datasets, transforms


class SyntheticMNIST(datasets.VisionDataset):
    """MNIST's shape and types: (PIL image 'L' 28x28, int label); learnable (templates + noise)."""

    def __init__(self, train: bool, transform=None, size: int = 2048) -> None:
        super().__init__(root="", transform=transform)
        rng = np.random.default_rng(0 if train else 1)
        templates = np.random.default_rng(42).uniform(0, 255, (10, 28, 28))
        self.labels = rng.integers(0, 10, size)
        noise = rng.normal(0, 40, (size, 28, 28))
        self.images = np.clip(templates[self.labels] + noise, 0, 255).astype(np.uint8)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index], mode="L")
        return (self.transform(image) if self.transform else image), int(self.labels[index])


# --- 4.2 the guide's dataset code (MNIST download replaced)
transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])

trainset = SyntheticMNIST(train=True, transform=transform)
trainloader = torch.utils.data.DataLoader(trainset, batch_size=64, shuffle=True)


# --- 4.3 the guide's model
class SimpleNN(nn.Module):
    def __init__(self):
        super(SimpleNN, self).__init__()
        self.fc1 = nn.Linear(28 * 28, 128)
        self.fc2 = nn.Linear(128, 64)
        self.fc3 = nn.Linear(64, 10)

    def forward(self, x):
        x = x.view(-1, 28 * 28)  # Flatten the input
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        x = self.fc3(x)
        return x


model = SimpleNN()

# --- 4.4 loss and optimizer
criterion = nn.CrossEntropyLoss()
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

# --- 4.5 training (the guide's loop; the epoch losses are kept to check them)
epoch_losses = []
epochs = 5
for epoch in range(epochs):
    total = 0.0
    for images, labels in trainloader:
        optimizer.zero_grad()  # Zero the gradients
        output = model(images)  # Forward pass
        loss = criterion(output, labels)  # Calculate loss
        loss.backward()  # Backward pass
        optimizer.step()  # Update weights
        total += loss.item()
    epoch_losses.append(total / len(trainloader))
    print(f"Epoch {epoch + 1}/{epochs}, Loss: {loss.item()}")

# --- 4.6 evaluation
testset = SyntheticMNIST(train=False, transform=transform, size=512)
testloader = torch.utils.data.DataLoader(testset, batch_size=64, shuffle=False)

correct = 0
total = 0
with torch.no_grad():
    for images, labels in testloader:
        outputs = model(images)
        _, predicted = torch.max(outputs.data, 1)
        total += labels.size(0)
        correct += (predicted == labels).sum().item()

accuracy = 100 * correct / total
print(f"Accuracy of the network on the {total} test images: {accuracy:.1f} %")
assert epoch_losses[-1] < epoch_losses[0], f"the loss did not fall: {epoch_losses}"
assert accuracy > 50, f"accuracy {accuracy:.1f} % on a learnable dataset"
print("seed004: OK")
