"""Seed 000 (deep-learning basics): the CNN layers, LeNet-5, the RNNs and the LSTM, as written in the guide.

The guide defines the modules only; here each runs: the layers on a batch (output shapes checked), LeNet-5
trained on synthetic MNIST-shaped data (loss must fall), the RNN/LSTM on sequences (shapes, and the LSTM
trained to sum its inputs' signs).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(0)

# --- the layers
conv_layer = nn.Conv2d(in_channels=3, out_channels=16, kernel_size=3, stride=1, padding=1)
pool_layer = nn.MaxPool2d(kernel_size=2, stride=2)
fc_layer = nn.Linear(in_features=256, out_features=10)
x = torch.randn(8, 3, 32, 32)
assert conv_layer(x).shape == (8, 16, 32, 32)
assert pool_layer(conv_layer(x)).shape == (8, 16, 16, 16)
assert fc_layer(torch.randn(8, 256)).shape == (8, 10)


# --- LeNet-5
class LeNet5(nn.Module):
    def __init__(self):
        super(LeNet5, self).__init__()
        self.conv1 = nn.Conv2d(in_channels=1, out_channels=6, kernel_size=5, stride=1)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.conv2 = nn.Conv2d(in_channels=6, out_channels=16, kernel_size=5, stride=1)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.fc1 = nn.Linear(in_features=16 * 5 * 5, out_features=120)
        self.fc2 = nn.Linear(in_features=120, out_features=84)
        self.fc3 = nn.Linear(in_features=84, out_features=10)

    def forward(self, x):
        x = self.pool1(F.relu(self.conv1(x)))
        x = self.pool2(F.relu(self.conv2(x)))
        x = x.view(-1, 16 * 5 * 5)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        x = self.fc3(x)
        return x


# LeNet-5 takes 32x32 inputs (16 * 5 * 5 after two conv+pool): MNIST padded to 32x32, as in the paper
templates = torch.randn(10, 1, 32, 32)
labels = torch.randint(0, 10, (512,))
images = templates[labels] + 0.5 * torch.randn(512, 1, 32, 32)
model = LeNet5()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
losses = []
for step in range(60):
    batch = slice((step * 64) % 512, (step * 64) % 512 + 64)
    optimizer.zero_grad()
    loss = F.cross_entropy(model(images[batch]), labels[batch])
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
print(f"LeNet-5 loss {losses[0]:.3f} -> {losses[-1]:.3f}")
assert sum(losses[-5:]) < sum(losses[:5]), losses


# --- RNNs: the guide's two SimpleRNN versions and its LSTM
class SimpleRNN(nn.Module):
    def __init__(self, input_size, hidden_size, output_size):
        super(SimpleRNN, self).__init__()
        self.hidden_size = hidden_size
        self.i2h = nn.Linear(input_size + hidden_size, hidden_size)
        self.i2o = nn.Linear(input_size + hidden_size, output_size)

    def forward(self, input, hidden):
        combined = torch.cat((input, hidden), 1)
        hidden = self.i2h(combined)
        output = self.i2o(combined)
        return output, hidden


cell = SimpleRNN(input_size=4, hidden_size=8, output_size=3)
output, hidden = cell(torch.randn(2, 4), torch.zeros(2, 8))
assert output.shape == (2, 3) and hidden.shape == (2, 8)


class LSTM(nn.Module):
    def __init__(self, input_size, hidden_size, output_size):
        super(LSTM, self).__init__()
        self.hidden_size = hidden_size
        self.lstm = nn.LSTM(input_size, hidden_size, batch_first=True)
        self.fc = nn.Linear(hidden_size, output_size)

    def forward(self, x):
        h0 = torch.zeros(1, x.size(0), self.hidden_size).to(x.device)
        c0 = torch.zeros(1, x.size(0), self.hidden_size).to(x.device)
        output, (hn, cn) = self.lstm(x, (h0, c0))
        output = self.fc(output[:, -1, :])
        return output


lstm = LSTM(input_size=1, hidden_size=16, output_size=1)
sequences = torch.randn(256, 10, 1)
targets = sequences.sign().sum(dim=1)
optimizer = torch.optim.Adam(lstm.parameters(), lr=1e-2)
losses = []
for _ in range(60):
    optimizer.zero_grad()
    loss = F.mse_loss(lstm(sequences), targets)
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
print(f"LSTM loss {losses[0]:.3f} -> {losses[-1]:.3f}")
assert lstm(sequences).shape == (256, 1)
assert losses[-1] < losses[0] / 2, losses
print("seed000: OK")
