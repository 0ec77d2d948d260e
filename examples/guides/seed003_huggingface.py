"""Seed 003 (Hugging Face): Transformers, Datasets and Diffusers, the three libraries the guide compares.

The guide names BERT for Transformers and Stable Diffusion for Diffusers; pretrained checkpoints are
gigabytes from the Hub, so each is built small from its config (the same classes the pretrained ones
load into). Checked: a BERT classifier trained for a few steps on a Datasets dataset (loss falls), its
tokenizer-free forward shapes, and one DDPM denoising step of a small UNet (output shape).
"""

import torch
from datasets import Dataset
from diffusers import DDPMScheduler, UNet2DModel
from transformers import BertConfig, BertForSequenceClassification

torch.manual_seed(0)

# --- Datasets: a dataset from Python data, mapped and formatted for torch
rows = {"input_ids": [], "label": []}
for index in range(256):
    label = index % 2
    rows["input_ids"].append([101] + [10 + label * 50 + (index * 7 + j) % 40 for j in range(14)] + [102])
    rows["label"].append(label)
dataset = Dataset.from_dict(rows).map(lambda row: {"attention_mask": [1] * len(row["input_ids"])})
dataset.set_format("torch", columns=["input_ids", "attention_mask", "label"])
assert len(dataset) == 256 and dataset[0]["input_ids"].shape == (16,)

# --- Transformers: a small BERT for sequence classification
config = BertConfig(vocab_size=200, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
model = BertForSequenceClassification(config)
optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
loader = torch.utils.data.DataLoader(dataset, batch_size=32, shuffle=True)
losses = []
for _epoch in range(3):
    for batch in loader:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["label"])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
print(f"BERT loss {losses[0]:.3f} -> {losses[-1]:.3f}")
assert out.logits.shape[1] == 2
assert sum(losses[-4:]) < sum(losses[:4]), losses

# --- Diffusers: a small UNet and the DDPM scheduler (the pieces a Stable Diffusion pipeline chains)
unet = UNet2DModel(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    layers_per_block=1,
    block_out_channels=(32, 64),
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
)
scheduler = DDPMScheduler(num_train_timesteps=1000)
scheduler.set_timesteps(10)
sample = torch.randn(1, 3, 32, 32)
with torch.no_grad():
    t = scheduler.timesteps[0]
    noise_pred = unet(sample, t).sample
    previous = scheduler.step(noise_pred, t, sample).prev_sample
assert noise_pred.shape == sample.shape == previous.shape == (1, 3, 32, 32)
print("seed003: OK")
