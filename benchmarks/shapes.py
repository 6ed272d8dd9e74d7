"""Weight shapes of real models (prunable conv/linear weights only)."""

import torch


def vgg16_cifar():
    """VGG-16 for CIFAR-10 (13 conv layers + one linear): 14.7M weights."""
    chans = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    return [(o, i, 3, 3) for i, o in zip(chans[:-1], chans[1:])] + [(10, 512)]


def resnet18_cifar():
    """ResNet-18 for CIFAR-10 (3x3 stem, 1x1 downsampling shortcuts): 11.2M weights."""
    shapes = [(64, 3, 3, 3)] + [(64, 64, 3, 3)] * 4
    for cin, cout in ((64, 128), (128, 256), (256, 512)):
        shapes += [(cout, cin, 3, 3), (cout, cout, 3, 3), (cout, cin, 1, 1), (cout, cout, 3, 3), (cout, cout, 3, 3)]
    return shapes + [(10, 512)]


def llama32_1b(blocks=16):
    """Llama-3.2-1B linear layers (hidden 2048, MLP 8192, 8 KV heads of 64): 0.97B weights in 16 blocks."""
    block = [(2048, 2048), (512, 2048), (512, 2048), (2048, 2048), (8192, 2048), (8192, 2048), (2048, 8192)]
    return block * blocks


def llama7b(blocks=32):
    """LLaMA-7B linear layers (hidden 4096, MLP 11008): 224 layers, 6.48B weights."""
    block = [(4096, 4096)] * 4 + [(11008, 4096), (11008, 4096), (4096, 11008)]
    return block * blocks


def make_weights(shapes, dtype=torch.float32, seed=0):
    """Kaiming-like random weights, generated layer by layer (no full-model float32 temporary)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in shapes:
        fan_in = 1
        for d in s[1:]:
            fan_in *= d
        out.append((torch.randn(s, generator=g) * (2.0 / fan_in) ** 0.5).to(dtype))
    return out


def numel(shapes):
    total = 0
    for s in shapes:
        n = 1
        for d in s:
            n *= d
        total += n
    return total
