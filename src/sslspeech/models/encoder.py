"""The speech encoder from small named parts (after torchaudio's wav2vec2 components).

waveforms (B, N) -> ConvFeatureExtractor -> (B, T, C) -> FeatureProjection -> (B, T, D)
-> Transformer (positional conv + layers) -> (B, T, D). `lengths` (valid samples per row, then
valid frames per row) is threaded through every block; frames past a row's length are padding.
Faster CPU inference variants of some blocks live in `cpu_inference`, applied from outside.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslspeech.errors import ConfigError, DataError
from sslspeech.models.compiled_conv import apply_conv
from sslspeech.models.configs import EncoderConfig
from sslspeech.models.dropin import lengths_from_attention_mask, native_state_dict_pre_hook
from sslspeech.models.pretrained import Pretrained


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of a (batch, channel, frame) tensor."""

    def forward(self, x: Tensor) -> Tensor:
        """[batch, channel, frame] -> [batch, channel, frame]."""
        x = F.layer_norm(x.transpose(1, 2), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.transpose(1, 2)


class ConvLayerBlock(nn.Module):
    """Conv1d -> optional norm -> GELU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int,
        *,
        bias: bool,
        norm: nn.Module | None,
    ) -> None:
        super().__init__()
        self.kernel = kernel
        self.stride = stride
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, stride, bias=bias)
        self.layer_norm = norm

    def forward(self, x: Tensor) -> Tensor:
        """[batch, in_channel, sample] -> [batch, out_channel, frame]."""
        x = apply_conv(self.conv, x)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return F.gelu(x)


class ConvFeatureExtractor(nn.Module):
    """The strided conv stack turning waveforms into frames (50 Hz for the base stack)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        blocks = []
        in_channels = 1
        for index, (channels, kernel, stride) in enumerate(config.extractor_conv_layers):
            norm: nn.Module | None = None
            if config.extractor_mode == "layer_norm":
                norm = ChannelLayerNorm(channels, eps=config.layer_norm_eps)
            elif index == 0:
                norm = nn.GroupNorm(channels, channels, eps=config.layer_norm_eps)
            blocks.append(
                ConvLayerBlock(
                    in_channels,
                    channels,
                    kernel,
                    stride,
                    bias=config.extractor_conv_bias,
                    norm=norm,
                )
            )
            in_channels = channels
        self.conv_layers = nn.ModuleList(blocks)

    def forward(
        self, waveforms: Tensor, lengths: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """[batch, sample] (+ valid samples [batch]) -> [batch, frame, channel] (+ valid frames).

        The convs run over the zero padding too (as every reference does); only the returned
        frame lengths say which frames are valid.
        """
        if waveforms.ndim != 2:
            raise DataError(
                f"Expected waveforms of shape (batch, time). Found: {tuple(waveforms.shape)}"
            )
        num_samples = waveforms.shape[1]
        if num_samples < self.config.receptive_field:
            raise DataError(
                f"waveforms have {num_samples} samples; the encoder needs at least "
                f"{self.config.receptive_field} ({self.config.receptive_field / 16000:.3f} s at "
                "16 kHz) for one frame"
            )
        x = self.convolve(waveforms).transpose(1, 2)
        if lengths is None:
            return x, None
        return x, self.frame_lengths(lengths, num_samples=num_samples, num_frames=x.shape[1])

    def convolve(self, waveforms: Tensor) -> Tensor:
        """[batch, sample] -> [batch, channel, frame]: the conv blocks in turn."""
        x = waveforms.unsqueeze(1)
        for block in self.conv_layers:
            x = block(x)
        return x

    def frame_lengths(
        self, lengths: Tensor, num_samples: int | None = None, num_frames: int | None = None
    ) -> Tensor:
        """Valid frames per row for valid samples `lengths`, by the config's `frame_rule`.

        "fairseq" depends on the padded batch size: `num_samples` (N, default max(lengths)) and
        `num_frames` (T, default the conv output of N).
        """
        lengths = torch.as_tensor(lengths, dtype=torch.long)
        if self.config.frame_rule == "conv":
            return conv_output_lengths(lengths, self.config)
        if num_samples is None:
            num_samples = int(lengths.max()) if lengths.numel() else 0
        if num_frames is None:
            num_frames = int(conv_output_lengths(torch.tensor([num_samples]), self.config)[0])
        return fairseq_frame_lengths(lengths, num_samples, num_frames)


def conv_output_lengths(lengths: Tensor, config: EncoderConfig) -> Tensor:
    """Conv-length formula floor((n - k) / s) + 1 per layer, clamped at 0 (HF, torchaudio)."""
    lengths = torch.as_tensor(lengths, dtype=torch.long)
    for _, kernel, stride in config.extractor_conv_layers:
        lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
    return lengths.clamp(min=0)


def fairseq_frame_lengths(lengths: Tensor, num_samples: int, num_frames: int) -> Tensor:
    """fairseq's rule: drop the last N % T samples, split the rest into T equal chunks, and call a
    frame padding only if all of its samples are. With right padding: ceil(n / (N // T)), <= T."""
    lengths = torch.as_tensor(lengths, dtype=torch.long)
    if num_frames <= 0:
        return torch.zeros_like(lengths)
    chunk = num_samples // num_frames
    if chunk == 0:
        return torch.full_like(lengths, num_frames)
    return torch.div(lengths + chunk - 1, chunk, rounding_mode="floor").clamp(0, num_frames)


def padding_mask(frame_lengths: Tensor, num_frames: int) -> Tensor:
    """[batch] valid frames -> [batch, frame] bool, True at padding."""
    frames = torch.arange(num_frames, device=frame_lengths.device)
    return frames.unsqueeze(0) >= frame_lengths.unsqueeze(1)


class FeatureProjection(nn.Module):
    """LayerNorm over conv channels, then Linear to the model width (absent when fairseq had
    none: channels == width), then dropout."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(config.conv_channels, eps=config.layer_norm_eps)
        self.projection = (
            nn.Linear(config.conv_channels, config.embed_dim) if config.feature_projection else None
        )
        self.dropout = nn.Dropout(config.projection_dropout)

    def forward(self, x: Tensor) -> Tensor:
        """[batch, frame, channel] -> [batch, frame, embed_dim]."""
        x = self.layer_norm(x)
        if self.projection is not None:
            x = self.projection(x)
        return self.dropout(x)


class ConvolutionalPositionalEmbedding(nn.Module):
    """One grouped conv of kernel K over frames, last frame dropped when K is even, GELU.

    Stores the effective weight (references keep it weight-normed: w = g * v / ||v|| over
    dim 2); readers fold the norm, so nothing is recomputed per forward.
    """

    def __init__(self, embed_dim: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv1d(embed_dim, embed_dim, kernel, padding=kernel // 2, groups=groups)
        self.num_remove = 1 if kernel % 2 == 0 else 0

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """[batch, frame, feature] (padding already zeroed) -> [batch, frame, feature]."""
        x = self.convolve(x.transpose(1, 2))
        if self.num_remove:
            x = x[..., : -self.num_remove]
        return F.gelu(x).transpose(1, 2)

    def convolve(self, x: Tensor) -> Tensor:
        """[batch, feature, frame] -> [batch, feature, frame + 1 if K is even]: the conv."""
        return apply_conv(self.conv, x)


class MultiConvPositionalEmbedding(nn.Module):
    """SpidR/DinoSR positional embedding: `depth` grouped convs of kernel max(3, K // depth),
    each as: zero padding frames -> conv -> drop last frame if the kernel is even -> LayerNorm
    over channels without affine parameters -> GELU; padding zeroed at the output."""

    def __init__(self, embed_dim: int, kernel: int, groups: int, depth: int, eps: float) -> None:
        super().__init__()
        self.layer_kernel = max(3, kernel // depth)
        self.num_remove = 1 if self.layer_kernel % 2 == 0 else 0
        self.eps = eps
        self.convs = nn.ModuleList(
            nn.Conv1d(
                embed_dim,
                embed_dim,
                self.layer_kernel,
                padding=self.layer_kernel // 2,
                groups=groups,
            )
            for _ in range(depth)
        )

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """[batch, frame, feature] -> [batch, frame, feature]."""
        keep = None
        if lengths is not None:
            keep = (~padding_mask(lengths, x.shape[1])).unsqueeze(1).to(x.dtype)
        x = x.transpose(1, 2)
        for conv in self.convs:
            if keep is not None:
                x = x * keep
            x = apply_conv(conv, x)
            if self.num_remove:
                x = x[..., : -self.num_remove]
            x = F.layer_norm(x.transpose(1, 2), (x.shape[1],), eps=self.eps).transpose(1, 2)
            x = F.gelu(x)
        if keep is not None:
            x = x * keep
        return x.transpose(1, 2)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused q/k/v projection and SDPA."""

    def __init__(self, embed_dim: int, num_heads: int, *, qkv_bias: bool, dropout: float) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=qkv_bias)
        self.proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """[batch, frame, feature] (+ bool [batch, 1, 1, frame], True = attend) -> same shape."""
        batch, frames, dim = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).view(batch, frames, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        dropout = self.dropout if self.training else 0.0
        x = F.scaled_dot_product_attention(
            qkv[0], qkv[1], qkv[2], attn_mask=attn_mask, dropout_p=dropout
        )
        return self.proj(x.transpose(1, 2).reshape(batch, frames, dim))


class FeedForward(nn.Module):
    """Linear -> GELU -> dropout -> Linear."""

    def __init__(self, embed_dim: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(embed_dim, ffn_dim)
        self.intermediate_dropout = nn.Dropout(dropout)
        self.output_dense = nn.Linear(ffn_dim, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        """[batch, frame, feature] -> [batch, frame, feature]."""
        hidden = F.gelu(self.intermediate_dense(x))
        return self.output_dense(self.intermediate_dropout(hidden))


class EncoderLayer(nn.Module):
    """Attention and feed-forward blocks, post-LN (norm after each residual add) or pre-LN."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        dim = config.embed_dim
        self.layer_norm_first = config.layer_norm_first
        self.attention = SelfAttention(
            dim, config.num_heads, qkv_bias=config.qkv_bias, dropout=config.attention_dropout
        )
        self.dropout = nn.Dropout(config.dropout)
        self.layer_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.feed_forward = FeedForward(dim, config.ffn_dim, config.activation_dropout)
        self.final_layer_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """[batch, frame, feature] -> (layer output, feed-forward output before the residual)."""
        if self.layer_norm_first:
            x = x + self.dropout(self.attention(self.layer_norm(x), attn_mask))
            ffn = self.feed_forward(self.final_layer_norm(x))
            return x + self.dropout(ffn), ffn
        x = self.layer_norm(x + self.dropout(self.attention(x, attn_mask)))
        ffn = self.feed_forward(x)
        return self.final_layer_norm(x + self.dropout(ffn)), ffn


class TransformerOutput(NamedTuple):
    """What `Transformer.forward` returns; every tensor is [batch, frame, feature]."""

    output: Tensor
    """Encoder output: the last layer run, with the pre-LN final norm when every layer ran."""
    layer_outputs: list[Tensor]
    """Full output of each layer run (fairseq `x_layer_i`, HF `hidden_states[i]`)."""
    ffn_outputs: list[Tensor]
    """Feed-forward output of each layer run, before the residual add."""
    layer_input: Tensor
    """Input of layer 1: x + pos_conv(x), normed first for post-LN (fairseq `x_layer_0`)."""


class Transformer(nn.Module):
    """Positional conv embedding, encoder norm and the stack of layers."""

    zero_padding: bool = True
    """Zero padding frames of the input (HF, fairseq). SpidR/DinoSR set False: the `spidr`
    package leaves them as computed, which its teacher's instance norm over time sees."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.pos_conv_embed: nn.Module
        if config.pos_conv_depth == 1:
            self.pos_conv_embed = ConvolutionalPositionalEmbedding(
                config.embed_dim, config.pos_conv_kernel, config.pos_conv_groups
            )
        else:
            self.pos_conv_embed = MultiConvPositionalEmbedding(
                config.embed_dim,
                config.pos_conv_kernel,
                config.pos_conv_groups,
                config.pos_conv_depth,
                config.layer_norm_eps,
            )
        self.layer_norm = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_layers))

    def forward(
        self,
        x: Tensor,
        lengths: Tensor | None = None,
        num_layers: int | None = None,
        *,
        padded: bool | None = None,
    ) -> TransformerOutput:
        """[batch, frame, feature] (+ valid frames [batch]) -> TransformerOutput.

        Padding frames are zeroed first and masked as attention keys. `num_layers` stops after
        that many layers (1-based, no final norm unless all layers run). In training, layer drop
        skips a layer's update of `x`; its outputs are still listed (as SpidR does). `padded`:
        whether any row is shorter than x (None: read from `lengths`, a host sync).
        """
        total = len(self.layers)
        if num_layers is None:
            num_layers = total
        if not 1 <= num_layers <= total:
            raise ConfigError(f"num_layers must be in [1, {total}]; got {num_layers}")
        attn_mask = None
        if lengths is not None:
            pad = padding_mask(lengths, x.shape[1])
            if bool(pad.any()) if padded is None else padded:
                if self.zero_padding:
                    x = x.masked_fill(pad.unsqueeze(-1), 0.0)
                attn_mask = (~pad)[:, None, None, :]
            else:
                lengths = None
        x = x + self.pos_conv_embed(x, lengths)
        if not self.config.layer_norm_first:
            x = self.layer_norm(x)
        x = self.dropout(x)
        layer_input = x
        layer_outputs: list[Tensor] = []
        ffn_outputs: list[Tensor] = []
        for layer in self.layers[:num_layers]:
            out, ffn = layer(x, attn_mask)
            layer_outputs.append(out)
            ffn_outputs.append(ffn)
            if self.training and self.config.layer_drop > 0:
                out = torch.where(torch.rand(()) < self.config.layer_drop, x, out)
            x = out
        if num_layers == total and self.config.layer_norm_first:
            x = self.layer_norm(x)
        return TransformerOutput(x, layer_outputs, ffn_outputs, layer_input)


class EncoderOutput(NamedTuple):
    """What `Encoder.forward` returns."""

    output: Tensor
    """[batch, frame, feature] encoder output (see `TransformerOutput.output`)."""
    layer_outputs: list[Tensor]
    """Full output of each layer run."""
    ffn_outputs: list[Tensor]
    """Feed-forward output of each layer run, before the residual add."""
    layer_input: Tensor
    """[batch, frame, feature] input of layer 1."""
    frame_lengths: Tensor | None
    """[batch] valid frames per row (None when no lengths were given)."""
    conv_features: Tensor
    """[batch, frame, channel] conv extractor output."""


class Encoder(nn.Module):
    """ConvFeatureExtractor -> FeatureProjection -> Transformer."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.feature_extractor = ConvFeatureExtractor(config)
        self.feature_projection = FeatureProjection(config)
        self.transformer = Transformer(config)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """fairseq's initialisation for training from scratch: kaiming-normal convs, N(0, 0.02)
        linear weights with zero biases, positional conv N(0, sqrt(4 / (K * D))) with zero bias."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for block in self.feature_extractor.conv_layers.modules():
            if isinstance(block, nn.Conv1d):
                nn.init.kaiming_normal_(block.weight)
        for conv in self.transformer.pos_conv_embed.modules():
            if isinstance(conv, nn.Conv1d) and conv.bias is not None:
                fan = conv.kernel_size[0] * self.config.embed_dim
                nn.init.normal_(conv.weight, std=(4.0 / fan) ** 0.5)
                nn.init.zeros_(conv.bias)

    def forward(
        self, waveforms: Tensor, lengths: Tensor | None = None, num_layers: int | None = None
    ) -> EncoderOutput:
        """[batch, sample] (+ valid samples [batch]) -> EncoderOutput; checks `lengths` (on
        the host: the training forwards call the blocks, on the collator's lengths)."""
        features, frame_lengths = self.extract(waveforms, lengths)
        if lengths is not None:
            check_lengths(lengths, waveforms.shape[1], self.config.receptive_field)
        x = self.feature_projection(features)
        padded = frame_lengths is not None and bool((frame_lengths < x.shape[1]).any())
        out = self.transformer(x, frame_lengths if padded else None, num_layers)
        return EncoderOutput(
            out.output,
            out.layer_outputs,
            out.ffn_outputs,
            out.layer_input,
            frame_lengths,
            features,
        )

    def extract(self, waveforms: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Conv features [batch, frame, channel] and valid frames per row (shapes checked)."""
        if lengths is not None:
            lengths = torch.as_tensor(lengths, dtype=torch.long, device=waveforms.device)
            if lengths.shape != waveforms.shape[:1]:
                raise DataError(
                    f"lengths must have shape ({waveforms.shape[0]},); got {tuple(lengths.shape)}"
                )
        return self.feature_extractor(waveforms, lengths)


def check_lengths(lengths: Tensor, num_samples: int, receptive_field: int) -> None:
    """Raise DataError unless every row's valid samples are in [receptive_field, num_samples]."""
    lengths = torch.as_tensor(lengths).cpu()
    short = (lengths < receptive_field).nonzero().flatten().tolist()
    if short:
        raise DataError(
            f"rows {short} have fewer than {receptive_field} valid samples "
            f"(lengths {lengths[short].tolist()}): too short for one frame"
        )
    if bool((lengths > num_samples).any()):
        raise DataError(f"lengths {lengths.tolist()} exceed the {num_samples} samples per row")


class EncoderModel(Pretrained):
    """A model built on an `Encoder` at `self.encoder`: the feature API that HuBERT, DinoSR and
    SpidR share (for DinoSR/SpidR, the student's)."""

    encoder: Encoder

    def __init__(self) -> None:
        super().__init__()
        # load_state_dict also takes fairseq / s3prl / torchaudio / HF / spidr state dicts.
        self.register_load_state_dict_pre_hook(native_state_dict_pre_hook)

    @property
    def num_layers(self) -> int:
        """Number of transformer layers."""
        return len(self.encoder.transformer.layers)

    def encode(self, waveforms: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Final encoder output [batch, frame, feature] (pre-LN: after the final norm)."""
        return self.encoder(waveforms, lengths).output

    def get_intermediate_outputs(
        self,
        waveforms: Tensor,
        lengths: Tensor | None = None,
        num_layers: int | None = None,
        before_residual: bool = True,
        *,
        attention_mask: Tensor | None = None,
    ) -> list[Tensor]:
        """One [batch, frame, feature] tensor per layer 1..num_layers: the feed-forward output
        before the residual add (True) or the full layer output (False). Never the final norm.
        `attention_mask` (HF convention, 1 = valid sample) may replace `lengths`."""
        lengths = lengths_from_attention_mask(attention_mask, lengths, waveforms)
        out = self.encoder(waveforms, lengths, num_layers)
        return out.ffn_outputs if before_residual else out.layer_outputs

    def frame_lengths(self, lengths: Tensor, num_samples: int | None = None) -> Tensor:
        """Valid frames per row for valid samples `lengths`, by the checkpoint's rule (fairseq's
        depends on the padded size `num_samples`, default max(lengths))."""
        return self.encoder.feature_extractor.frame_lengths(lengths, num_samples)
