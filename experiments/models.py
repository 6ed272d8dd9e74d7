"""A small CNN with both convolutional and fully-connected layers (so uniform+ and ERK mean something)."""

from torch import nn


def small_cnn(in_size: int = 28, classes: int = 10, width: int = 16) -> nn.Sequential:
    """conv(1->w) pool conv(w->2w) pool fc(->128) fc(->classes): 5x5 valid convs for 28x28 inputs (80k weights),
    3x3 same-padded convs for small inputs such as 8x8 digits."""
    k, pad = (5, 0) if in_size >= 28 else (3, 1)
    side = ((in_size + 2 * pad - k + 1) // 2 + 2 * pad - k + 1) // 2
    return nn.Sequential(
        nn.Conv2d(1, width, k, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, k, padding=pad), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(2 * width * side * side, 128), nn.ReLU(),
        nn.Linear(128, classes),
    )
