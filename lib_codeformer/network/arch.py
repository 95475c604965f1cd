"""The CodeFormer network, written from its published architecture.

CodeFormer (Zhou et al., "Towards Robust Blind Face Restoration with Codebook
Lookup Transformer", NeurIPS 2022) is a VQGAN whose encoder output is not
quantised by nearest neighbour but by a transformer that predicts, for each of
the 16 x 16 latent positions, which of the 1024 codebook entries to use. The
generator then decodes the looked-up codes; its features are modulated
(spatial feature transform, "SFT") by encoder features at four resolutions,
scaled by the fidelity weight ``w``: 0 trusts the codebook (best quality),
1 keeps the most of the input (most faithful).

Module and parameter names reproduce the released ``codeformer.pth``
(``params_ema``) exactly, so that file loads with ``strict=True``; the
constructor defaults are the released model. Numerical details that matter
(each one changes the result measurably when got wrong): GroupNorm eps 1e-6,
exact (erf) GELU, LayerNorm eps 1e-5, downsampling pads right/bottom only,
AdaIN with the unbiased variance plus 1e-5.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GROUP_NORM_GROUPS = 32
GROUP_NORM_EPS = 1e-6
ADAIN_EPS = 1e-5


def group_norm(channels: int) -> nn.GroupNorm:
    """The VQGAN's normalisation: 32 groups, eps 1e-6 (not PyTorch's 1e-5)."""
    return nn.GroupNorm(GROUP_NORM_GROUPS, channels, eps=GROUP_NORM_EPS, affine=True)


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 3x3 convolution that keeps the image size (zero padding 1)."""
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


class ResnetBlock(nn.Module):
    """Pre-activation residual block: (GroupNorm, SiLU, 3x3 conv) twice.

    A 1x1 convolution (``conv_out``) projects the shortcut when the channel
    count changes.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = conv3x3(in_channels, out_channels)
        self.norm2 = group_norm(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.conv_out = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        shortcut = x if self.conv_out is None else self.conv_out(x)
        return shortcut + h


class SpatialSelfAttention(nn.Module):
    """Single-head self-attention over all pixels of a feature map (used at 16 x 16)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        h = self.norm(x)
        # (B, 1, HW, C): one head whose tokens are the pixels.
        q, k, v = (proj(h).flatten(2).transpose(1, 2).unsqueeze(1) for proj in (self.q, self.k, self.v))
        attended = F.scaled_dot_product_attention(q, k, v)
        attended = attended.squeeze(1).transpose(1, 2).reshape(batch, channels, height, width)
        return x + self.proj_out(attended)


class Downsample(nn.Module):
    """Stride-2 3x3 convolution after zero-padding one pixel on the right and bottom only."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling followed by a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = conv3x3(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


@dataclass(frozen=True)
class VQGANShape:
    """The sizes the VQGAN encoder and generator share (defaults: the released model)."""

    base_channels: int = 64
    channel_multipliers: tuple[int, ...] = (1, 2, 2, 4, 4, 8)
    res_blocks: int = 2
    resolution: int = 512  # of the image; the latent is resolution / 2 ** (levels - 1) on a side
    attn_resolutions: frozenset[int] = frozenset({16})  # sizes at which residual blocks are followed by attention
    embed_dim: int = 256


class VQEncoder(nn.Module):
    """The VQGAN encoder: 512 x 512 RGB to a 256-channel 16 x 16 latent.

    ``blocks`` is one flat list (that is how the checkpoint names it).
    ``skip_blocks`` maps a resolution to the index of the block whose output
    is that resolution's skip feature for the generator's SFT fusion: the
    last residual block at each resolution.
    """

    def __init__(self, shape: VQGANShape | None = None, in_channels: int = 3) -> None:
        super().__init__()
        shape = shape or VQGANShape()
        blocks: list[nn.Module] = [conv3x3(in_channels, shape.base_channels)]
        self.skip_blocks: dict[int, int] = {}
        channels = shape.base_channels
        size = shape.resolution
        for level, multiplier in enumerate(shape.channel_multipliers):
            out_channels = shape.base_channels * multiplier
            for _ in range(shape.res_blocks):
                blocks.append(ResnetBlock(channels, out_channels))
                channels = out_channels
                self.skip_blocks[size] = len(blocks) - 1
                if size in shape.attn_resolutions:
                    blocks.append(SpatialSelfAttention(channels))
            if level != len(shape.channel_multipliers) - 1:
                blocks.append(Downsample(channels))
                size //= 2
        blocks += [
            ResnetBlock(channels, channels),
            SpatialSelfAttention(channels),
            ResnetBlock(channels, channels),
            group_norm(channels),
            conv3x3(channels, shape.embed_dim),
        ]
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor, skip_sizes: Iterable[int] = ()) -> tuple[Tensor, dict[int, Tensor]]:
        """Return the latent and the skip features at ``skip_sizes``."""
        wanted = {self.skip_blocks[size]: size for size in skip_sizes}
        skips: dict[int, Tensor] = {}
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in wanted:
                skips[wanted[index]] = x
        return x, skips


class VQGenerator(nn.Module):
    """The VQGAN decoder: 16 x 16 latent codes back to a 512 x 512 RGB image.

    ``fusion_blocks`` maps a resolution to the index of the block after which
    CodeFormer fuses the encoder's skip feature: the first residual block
    after upsampling to that resolution.
    """

    def __init__(self, shape: VQGANShape | None = None, out_channels: int = 3) -> None:
        super().__init__()
        shape = shape or VQGANShape()
        channels = shape.base_channels * shape.channel_multipliers[-1]
        size = shape.resolution // 2 ** (len(shape.channel_multipliers) - 1)
        blocks: list[nn.Module] = [
            conv3x3(shape.embed_dim, channels),
            ResnetBlock(channels, channels),
            SpatialSelfAttention(channels),
            ResnetBlock(channels, channels),
        ]
        self.fusion_blocks: dict[int, int] = {}
        for level in reversed(range(len(shape.channel_multipliers))):
            level_channels = shape.base_channels * shape.channel_multipliers[level]
            for _ in range(shape.res_blocks):
                blocks.append(ResnetBlock(channels, level_channels))
                channels = level_channels
                self.fusion_blocks.setdefault(size, len(blocks) - 1)
                if size in shape.attn_resolutions:
                    blocks.append(SpatialSelfAttention(channels))
            if level != 0:
                blocks.append(Upsample(channels))
                size *= 2
        blocks += [group_norm(channels), conv3x3(channels, out_channels)]
        self.blocks = nn.ModuleList(blocks)


class Codebook(nn.Module):
    """The VQGAN codebook: ``codebook_size`` vectors of ``embed_dim`` values."""

    def __init__(self, codebook_size: int = 1024, embed_dim: int = 256) -> None:
        super().__init__()
        self.embedding = nn.Embedding(codebook_size, embed_dim)

    def lookup(self, indices: Tensor, height: int, width: int) -> Tensor:
        """Code indices (B, H*W), row-major, to a (B, embed_dim, H, W) feature map."""
        vectors = self.embedding(indices)  # B, HW, C: exact rows, no arithmetic
        return vectors.transpose(1, 2).reshape(indices.shape[0], -1, height, width).contiguous()


class MultiheadSelfAttention(nn.Module):
    """Multi-head attention whose queries/keys and values come from different inputs.

    The parameters are named and packed like ``torch.nn.MultiheadAttention``
    (one ``in_proj_weight`` for q, k and v), as in the checkpoint; the layout
    here is batch-first.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)

    def forward(self, query_key: Tensor, value: Tensor) -> Tensor:
        batch, tokens, dim = value.shape
        q, k = F.linear(query_key, self.in_proj_weight[: 2 * dim], self.in_proj_bias[: 2 * dim]).chunk(2, dim=-1)
        v = F.linear(value, self.in_proj_weight[2 * dim :], self.in_proj_bias[2 * dim :])
        q, k, v = (t.view(batch, tokens, self.heads, dim // self.heads).transpose(1, 2) for t in (q, k, v))
        attended = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(attended.transpose(1, 2).reshape(batch, tokens, dim))


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer; the position embedding enters queries and keys only."""

    def __init__(self, dim: int = 512, heads: int = 8, mlp_dim: int = 1024) -> None:
        super().__init__()
        self.self_attn = MultiheadSelfAttention(dim, heads)
        self.linear1 = nn.Linear(dim, mlp_dim)
        self.linear2 = nn.Linear(mlp_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: Tensor, position: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.self_attn(h + position, h)
        return x + self.linear2(F.gelu(self.linear1(self.norm2(x))))


class SFTFusion(nn.Module):
    """Spatial feature transform: modulate decoder features by encoder features.

    ``out = dec + w * (dec * scale + shift)`` where scale and shift are
    predicted from both feature maps; w = 0 leaves the decoder untouched.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.encode_enc = ResnetBlock(2 * channels, channels)
        self.scale = self._modulation(channels)
        self.shift = self._modulation(channels)

    @staticmethod
    def _modulation(channels: int) -> nn.Sequential:
        return nn.Sequential(
            conv3x3(channels, channels),
            nn.LeakyReLU(0.2),
            conv3x3(channels, channels),
        )

    def forward(self, encoder_feature: Tensor, decoder_feature: Tensor, w: float | Tensor) -> Tensor:
        joint = self.encode_enc(torch.cat([encoder_feature, decoder_feature], dim=1))
        return decoder_feature + w * (decoder_feature * self.scale(joint) + self.shift(joint))


def adaptive_instance_norm(content: Tensor, style: Tensor, eps: float = ADAIN_EPS) -> Tensor:
    """Give ``content`` the per-channel mean and std of ``style`` (std from the unbiased variance + eps)."""

    def mean_std(feature: Tensor) -> tuple[Tensor, Tensor]:
        flat = feature.flatten(2)
        std = (flat.var(dim=2, unbiased=True) + eps).sqrt()
        return flat.mean(dim=2)[..., None, None], std[..., None, None]

    content_mean, content_std = mean_std(content)
    style_mean, style_std = mean_std(style)
    return (content - content_mean) / content_std * style_std + style_mean


class CodeFormer(nn.Module):
    """CodeFormer face restoration network; ``CodeFormer()`` is the released model.

    Input: B x 3 x 512 x 512 RGB in [-1, 1]. ``forward`` follows the official
    call convention and returns ``(image, logits, lq_feat)``.
    """

    def __init__(
        self,
        dim_embd: int = 512,
        n_head: int = 8,
        n_layers: int = 9,
        codebook_size: int = 1024,
        latent_size: int = 256,
        connect_list: Iterable[str | int] = ("32", "64", "128", "256"),
        base_channels: int = 64,
        channel_multipliers: Sequence[int] = (1, 2, 2, 4, 4, 8),
        res_blocks: int = 2,
        embed_dim: int = 256,
        attn_resolutions: Iterable[int] = (16,),
    ) -> None:
        super().__init__()
        self.resolution = round(latent_size**0.5) * 2 ** (len(channel_multipliers) - 1)
        self.latent_side = round(latent_size**0.5)
        if self.latent_side**2 != latent_size:
            raise ValueError(f"latent_size {latent_size} is not a square number of positions")
        self.connect_sizes = [int(size) for size in connect_list]
        vq_shape = VQGANShape(
            base_channels, tuple(channel_multipliers), res_blocks, self.resolution, frozenset(attn_resolutions), embed_dim
        )

        self.position_emb = nn.Parameter(torch.zeros(latent_size, dim_embd))
        self.encoder = VQEncoder(vq_shape)
        self.quantize = Codebook(codebook_size, embed_dim)
        self.generator = VQGenerator(vq_shape)
        self.feat_emb = nn.Linear(embed_dim, dim_embd)
        self.ft_layers = nn.ModuleList(TransformerLayer(dim_embd, n_head, 2 * dim_embd) for _ in range(n_layers))
        self.idx_pred_layer = nn.Sequential(nn.LayerNorm(dim_embd), nn.Linear(dim_embd, codebook_size, bias=False))

        unsupported = [s for s in self.connect_sizes if s not in self.generator.fusion_blocks]
        if unsupported:
            raise ValueError(f"connect_list sizes {unsupported} have no fusion point; use {sorted(self.generator.fusion_blocks)}")
        skip_channels = {size: self.encoder.blocks[index].conv2.out_channels for size, index in self.encoder.skip_blocks.items()}
        self.fuse_convs_dict = nn.ModuleDict({str(size): SFTFusion(skip_channels[size]) for size in self.connect_sizes})

    def predict_codes(self, lq_feat: Tensor) -> Tensor:
        """The transformer: encoder latent (B, C, 16, 16) to code logits (B, 256, codebook_size)."""
        tokens = self.feat_emb(lq_feat.flatten(2).transpose(1, 2))
        for layer in self.ft_layers:
            tokens = layer(tokens, self.position_emb)
        return self.idx_pred_layer(tokens)

    def forward(
        self,
        x: Tensor,
        w: float | Tensor | None = None,
        detach_16: bool = True,
        code_only: bool = False,
        adain: bool = False,
        *,
        weight: float | Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor] | tuple[Tensor, Tensor]:
        """Restore a batch of aligned faces.

        ``w`` (alias ``weight``, spandrel's name) is the fidelity weight: 0
        takes the face from the codebook, 1 keeps the most of the input.
        Returns ``(image, logits, lq_feat)``, or ``(logits, lq_feat)`` when
        ``code_only``. ``adain=True`` (what the official inference script
        uses) gives the decoded codes the input's feature statistics.
        """
        w = _fidelity(w, weight)
        self._check_input(x)
        lq_feat, skips = self.encoder(x, self.connect_sizes if _fuses(w) else ())
        logits = self.predict_codes(lq_feat)
        if code_only:
            return logits, lq_feat

        indices = logits.argmax(dim=2)
        quant_feat = self.quantize.lookup(indices, self.latent_side, self.latent_side)
        if detach_16:
            quant_feat = quant_feat.detach()
        if adain:
            quant_feat = adaptive_instance_norm(quant_feat, lq_feat)

        image = self.decode(quant_feat, skips, w)
        return image, logits, lq_feat

    def decode(self, quant_feat: Tensor, skips: dict[int, Tensor], w: float | Tensor) -> Tensor:
        """Run the generator, fusing the encoder skip features scaled by ``w``."""
        fusion_at = {self.generator.fusion_blocks[size]: size for size in self.connect_sizes} if _fuses(w) else {}
        x = quant_feat
        for index, block in enumerate(self.generator.blocks):
            x = block(x)
            size = fusion_at.get(index)
            if size is not None:
                x = self.fuse_convs_dict[str(size)](skips[size].detach(), x, w)
        return x

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2:] != (self.resolution, self.resolution):
            raise ValueError(
                f"CodeFormer takes a batch of aligned faces shaped (B, 3, {self.resolution}, {self.resolution}),"
                f" RGB in [-1, 1]; got {tuple(x.shape)}"
            )


def _fidelity(w: float | Tensor | None, weight: float | Tensor | None) -> float | Tensor:
    if w is not None and weight is not None:
        raise TypeError("pass the fidelity as w= or weight=, not both")
    value = w if w is not None else weight
    if value is None:
        return 0.0
    if isinstance(value, Tensor) and value.ndim == 1:
        return value.view(-1, 1, 1, 1)  # one weight per face of the batch
    return value


def _fuses(w: float | Tensor) -> bool:
    """The official network skips the fusion entirely at w == 0 (and so saves its cost)."""
    return bool((w > 0).any()) if isinstance(w, Tensor) else w > 0
