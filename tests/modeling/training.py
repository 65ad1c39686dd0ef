"""The plain SGD loop the overfit tests share."""
from typing import List, Sequence, Tuple

import torch


def train_losses(model, optimizer, batches: Sequence[Tuple[list, list]], steps: int) -> List[float]:
    """Runs ``steps`` steps over ``batches`` (cycled; each ``(images, targets)``) with gradient
    clipping at norm 10, and returns the total loss of each step."""
    totals = []
    for step in range(steps):
        images, targets = batches[step % len(batches)]
        total = sum(model(images, targets).values())
        optimizer.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        totals.append(float(total.detach()))
    return totals
