"""Online codebooks, prediction heads and the per-frame loss of DinoSR and SpidR.

The K codebooks are held as two stacked buffers so that assignment and update run as one
batched operation for every codebook: `sums` (K, V, D), the running sums of assigned targets,
and `counts` (K, V), the running assignment counts; a codeword is `sums / counts`.

Updates follow the optimizer, not the forward: in training each forward adds its batch's
per-codeword counts and target sums to pending statistics (`accumulate`), and
`apply_update`, called once after each optimizer step, applies their EMA. So K accumulated
micro-batches on one process update the codebooks exactly as K ranks of one step do.

Distributed training: `apply_update` runs the one collective the model runs itself,
`torch.distributed.all_reduce(SUM)` of the pending counts and target sums over the default
process group (one call per optimizer step), so every rank applies the same update and the
codebooks stay identical across ranks. `perplexities` all-reduces its sums (logged statistics
only) in the same way. Both are skipped when `torch.distributed` is not initialized.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, distributed, nn

PERPLEXITY_EPS = 1e-8


def _distributed() -> bool:
    return distributed.is_available() and distributed.is_initialized()


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum `tensor` in place over the default process group; a no-op in a single process."""
    if _distributed():
        distributed.all_reduce(tensor)
    return tensor


class OnlineCodebooks(nn.Module):
    """K codebooks of V codewords, updated by an exponential moving average of their targets."""

    sums: Tensor
    counts: Tensor

    def __init__(self, num_codebooks: int, codebook_size: int, dim: int, decay: float) -> None:
        super().__init__()
        self.num_codebooks = num_codebooks
        self.codebook_size = codebook_size
        self.dim = dim
        self.decay = decay
        # Each codebook starts as standard normal codewords normalized per dimension.
        init = F.instance_norm(torch.randn(num_codebooks, dim, codebook_size)).transpose(1, 2)
        self.register_buffer("sums", init.contiguous())
        self.register_buffer("counts", torch.ones(num_codebooks, codebook_size))
        self.pending: Tensor | None = None
        """Statistics gathered since the last `apply_update` (not model state: empty between
        optimizer steps, where checkpoints are taken): [codebook, codeword, feature + 1]."""

    def extra_repr(self) -> str:
        return f"num_codebooks={self.num_codebooks}, codebook_size={self.codebook_size}, " + (
            f"dim={self.dim}, decay={self.decay}"
        )

    def centroids(self) -> Tensor:
        """Codewords: [codebook, codeword, feature]."""
        return self.sums.float() / self.counts.float().unsqueeze(-1)

    @torch.no_grad()
    def assign(self, targets: Tensor) -> Tensor:
        """Nearest codeword of each target.

        Args:
            targets: [codebook, frame, feature] float32.
        Returns:
            [codebook, frame] int64 codeword indices.
        """
        centroids = self.centroids()
        with torch.autocast(targets.device.type, enabled=False):
            # ||c||^2 - 2 t.c has the argmin of ||t - c||^2 without the (constant) ||t||^2.
            distances = torch.baddbmm(
                centroids.square().sum(-1).unsqueeze(1),
                targets.float(),
                centroids.transpose(1, 2),
                alpha=-2,
            )
        return distances.argmin(-1)

    @torch.no_grad()
    def accumulate(self, targets: Tensor, labels: Tensor) -> None:
        """Add a batch's per-codeword counts and target sums to the pending statistics.

        Args:
            targets: [codebook, frame, feature]; labels: [codebook, frame] from `assign`.
        """
        if self.decay >= 1.0:
            return
        # F.one_hot would read the labels' range on the host (a sync); scatter does not.
        onehot = targets.new_zeros(*labels.shape, self.codebook_size)
        onehot.scatter_(-1, labels.unsqueeze(-1), 1.0)
        count = onehot.sum(1, keepdim=True).transpose(1, 2)  # [codebook, codeword, 1]
        memory = torch.bmm(onehot.transpose(1, 2), targets)
        packed = torch.cat([memory, count], dim=-1)  # [codebook, codeword, feature + 1]
        self.pending = packed if self.pending is None else self.pending + packed

    @torch.no_grad()
    def apply_update(self) -> None:
        """Move each assigned codeword towards the mean of its pending targets (EMA of sums and
        counts), then clear them. The pending statistics are all-reduced over the process group
        first (see module docstring); codewords without any assignment anywhere are unchanged.
        """
        if self.pending is None:
            return
        # The collective the model runs itself: one all-reduce per optimizer step (module doc).
        packed = all_reduce_sum(self.pending)
        self.pending = None
        memory, count = packed[..., :-1], packed[..., -1]
        alpha = torch.where(count != 0, self.decay, 1.0)
        self.counts.copy_(alpha * self.counts + (1 - alpha) * count)
        alpha, beta = alpha.unsqueeze(-1), (1 - alpha).unsqueeze(-1)
        self.sums.copy_(alpha * self.sums + beta * memory)


class PredictionHeads(nn.Module):
    """K linear heads with log-softmax, stored as one stacked weight for batched matmuls."""

    def __init__(self, num_heads: int, dim: int, num_classes: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.num_classes = num_classes
        self.weight = nn.Parameter(torch.empty(num_heads, num_classes, dim))
        self.bias = nn.Parameter(torch.empty(num_heads, num_classes))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Linear's default initialization, head by head."""
        bound = self.weight.shape[-1] ** -0.5
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        """Log-probabilities.

        Args:
            x: [frame, feature] (one input shared by every head) or [head, frame, feature].
        Returns:
            [head, frame, class] log-probabilities.
        """
        if x.dim() == 2:
            logits = F.linear(x, self.weight.flatten(0, 1), self.bias.flatten())
            logits = logits.view(x.shape[0], self.num_heads, self.num_classes).transpose(0, 1)
        else:
            logits = torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))
        return logits.log_softmax(-1)


@torch.no_grad()
def perplexities(sums: Tensor, count: int) -> Tensor:
    """2^H of mean distributions from their sums over `count` frames (all-reduced when distributed).

    Args:
        sums: [..., class] sums of one-hot targets or predicted probabilities over frames.
    Returns:
        [...] perplexities, H in bits with log2(p + 1e-8).
    """
    if _distributed():
        # One collective for the sums and the frame count (a fill, not a copy from the host).
        packed = torch.cat([sums.flatten(), sums.new_full((1,), float(count))])
        distributed.all_reduce(packed)
        mean = packed[:-1].view_as(sums) / packed[-1]
    else:
        mean = sums / count
    return torch.exp2(-(mean * (mean + PERPLEXITY_EPS).log2()).sum(-1))


def masked_prediction_loss(log_probs: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-frame loss (mean over codebooks of cross-entropy) and the target/prediction perplexities.

    Args:
        log_probs: [codebook, frame, class]; labels: [codebook, frame] target codewords.
    Returns:
        ([frame] loss, {"target_ppl", "pred_ppl"} scalars averaged over codebooks).
    """
    num_codebooks, num_frames = labels.shape
    nll = -log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    loss = nll.sum(0) / num_codebooks
    with torch.no_grad():
        target_sums = torch.zeros(num_codebooks, log_probs.shape[-1], device=labels.device)
        target_sums.scatter_add_(1, labels, torch.ones(labels.shape, device=labels.device))
        pred_sums = log_probs.detach().float().exp().sum(1)
    ppl = perplexities(torch.cat([target_sums, pred_sums]), num_frames)
    stats = {
        "target_ppl": ppl[:num_codebooks].sum() / num_codebooks,
        "pred_ppl": ppl[num_codebooks:].sum() / num_codebooks,
    }
    return loss, stats
