"""Independent PyTorch re-implementation of the authors' NVAN / STE-NVAN models.

Used by the converter tests as ground truth: build a reference model, fill it
with random weights (`randomize_`), export `reference_state_dict` (the layout
of the released `nn.DataParallel` checkpoints), convert it to Keras and compare
embeddings. Written from docs/; module attribute names are chosen so that the
state_dict keys are exactly the authors' (`features.backbone.layer2.0.conv1`,
`features.backbone.NL_3.2.W.1.running_var`, `bottleneck.weight`, ...).

Inputs are channels-first clips, as in torch: (B, T, 3, H, W) float32.

    model = build_reference("ste-nvan", num_classes=625)
    randomize_(model, seed=0)
    model.eval()
    embedding = model(clip)  # (B, 2048)
"""

import torch
from torch import nn
from torch.nn import functional as F

VARIANTS = {
    "baseline": "resnet50_s1",
    "nvan": "normal",
    "nvan-stripe": "stripe",
    "nvan-temporal": "hr",
    "ste-nvan": "stripe_hr",
}

# (planes, blocks, stride) of layer1..layer4; layer4's stride is `last_stride`.
STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, None))
EXPANSION = 4


class Bottleneck(nn.Module):
    """torchvision v1.5 bottleneck: the stride sits on the 3x3 conv."""

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        out = planes * EXPANSION
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(y + shortcut)


def _attention(theta, phi, g):
    """Embedded-Gaussian attention on (b, c', n) tensors -> (b, c', n)."""
    f = torch.matmul(theta.transpose(1, 2), phi)  # (b, n_query, n_key)
    return torch.matmul(F.softmax(f, dim=-1), g.transpose(1, 2)).transpose(1, 2)


class NonLocalBlock(nn.Module):
    """Non-local block on (b, c, t, h, w); the identity at initialisation.

    `sub_sample` max-pools g and phi by (1, 2, 2) (the reference's stage-1
    option; then their keys become `g.0.*` / `phi.0.*`).
    """

    def __init__(self, channels, sub_sample=False):
        super().__init__()
        inter = max(channels // 2, 1)
        self.inter_channels = inter
        self.g = nn.Conv3d(channels, inter, 1)
        self.theta = nn.Conv3d(channels, inter, 1)
        self.phi = nn.Conv3d(channels, inter, 1)
        if sub_sample:
            self.g = nn.Sequential(self.g, nn.MaxPool3d((1, 2, 2)))
            self.phi = nn.Sequential(self.phi, nn.MaxPool3d((1, 2, 2)))
        self.W = nn.Sequential(nn.Conv3d(inter, channels, 1), nn.BatchNorm3d(channels))
        nn.init.zeros_(self.W[1].weight)
        nn.init.zeros_(self.W[1].bias)

    def forward(self, x):
        b = x.shape[0]
        y = _attention(*(m(x).reshape(b, self.inter_channels, -1)
                         for m in (self.theta, self.phi, self.g)))
        return x + self.W(y.reshape(b, self.inter_channels, *x.shape[2:]))


class StripeNonLocalBlock(nn.Module):
    """Non-local block over per-frame horizontal stripes, on (b, c, t, h, w).

    Each of `stripes` bands of h/stripes rows is average-pooled to one token;
    the attended token is broadcast back over its band and added to x.
    """

    def __init__(self, stripes, channels):
        super().__init__()
        inter = channels // 2
        self.stripes = stripes
        self.inter_channels = inter
        self.g = nn.Conv3d(channels, inter, 1)
        self.theta = nn.Conv3d(channels, inter, 1)
        self.phi = nn.Conv3d(channels, inter, 1)
        self.W = nn.Sequential(nn.Conv3d(inter, channels, 1), nn.BatchNorm3d(channels))
        nn.init.zeros_(self.W[1].weight)
        nn.init.zeros_(self.W[1].bias)

    def forward(self, x):
        b, c, t, h, w = x.shape
        s = self.stripes
        if h % s:
            raise ValueError(f"height {h} is not divisible by stripes={s}")
        tokens = x.reshape(b, c, t, s, (h // s) * w).mean(-1, keepdim=True)  # (b,c,t,s,1)
        y = _attention(*(m(tokens).reshape(b, self.inter_channels, -1)
                         for m in (self.theta, self.phi, self.g)))
        wy = self.W(y.reshape(b, self.inter_channels, t, s, 1))  # (b, c, t, s, 1)
        wy = wy.reshape(b, c, t, s, 1, 1).expand(b, c, t, s, h // s, w)
        return x + wy.reshape(b, c, t, h, w)


class VideoResNet50(nn.Module):
    """ResNet-50 (last stride 1, no stem ReLU) with non-local blocks.

    mode: "normal" (NL over all T frames), "stripe" (stripe NL over all T),
    "hr" (NL over all current frames, T halved by max after layer2 and layer3),
    "stripe_hr" (stripe NL over consecutive frame pairs, same halvings).
    forward: (B, T, C, H, W) -> (B, 2048, T', H', W').
    With non_layers all 0 and mode "normal" it is a plain per-frame ResNet-50.
    """

    def __init__(self, non_layers=(0, 0, 0, 0), mode="normal", stripes=16, last_stride=1, blocks=None):
        super().__init__()
        if mode not in ("normal", "stripe", "hr", "stripe_hr"):
            raise ValueError(f"unknown mode {mode!r}")
        self.mode = mode
        self.conv1 = nn.Conv2d(3, 64, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        inplanes = 64
        self.nl_positions = []
        counts = blocks or tuple(stage[1] for stage in STAGES)  # ResNet-50's unless given (toy models)
        for k, ((planes, _, stride), blocks, n) in enumerate(zip(STAGES, counts, non_layers), 1):
            stride = last_stride if stride is None else stride
            layer = [Bottleneck(inplanes, planes, stride)]
            inplanes = planes * EXPANSION
            layer += [Bottleneck(inplanes, planes) for _ in range(1, blocks)]
            setattr(self, f"layer{k}", nn.ModuleList(layer))
            if mode.startswith("stripe"):
                nl = [StripeNonLocalBlock(stripes, inplanes) for _ in range(n)]
            else:  # the reference sub-samples only NVAN's stage-1 blocks
                nl = [NonLocalBlock(inplanes, sub_sample=(k == 1 and mode == "normal"))
                      for _ in range(n)]
            setattr(self, f"NL_{k}", nn.ModuleList(nl))
            # NL blocks follow the last n residual blocks of the stage.
            self.nl_positions.append(list(range(blocks - n, blocks)))

    def _group(self, stage, t):
        """Frames one NL block attends over, as the reference reshapes them."""
        if self.mode == "stripe_hr" or (self.mode == "hr" and stage == 1):
            return 2
        return t

    def forward(self, x):
        b, t = x.shape[:2]
        x = self.maxpool(self.bn1(self.conv1(x.reshape(b * t, *x.shape[2:]))))
        for k in range(1, 5):
            layer, nl = getattr(self, f"layer{k}"), getattr(self, f"NL_{k}")
            positions = self.nl_positions[k - 1]
            for i, block in enumerate(layer):
                x = block(x)
                if i in positions:
                    _, c, h, w = x.shape
                    # (B*T, C, H, W) -> (-1, group, C, H, W): consecutive frames.
                    clip = x.reshape(-1, self._group(k, t), c, h, w).permute(0, 2, 1, 3, 4)
                    x = nl[positions.index(i)](clip).permute(0, 2, 1, 3, 4).reshape(-1, c, h, w)
            if self.mode in ("hr", "stripe_hr") and k in (2, 3):
                x = x.reshape(-1, 2, *x.shape[1:]).amax(dim=1)  # frames (2j, 2j+1)
                t //= 2
        return x.reshape(b, t, *x.shape[1:]).permute(0, 2, 1, 3, 4)


class ClipFeatures(nn.Module):
    """`features` of the NVAN models: backbone + 3D global average pool."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return self.backbone(x).mean(dim=(2, 3, 4))


class FrameFeatures(nn.Module):
    """`features` of the baseline: per-image ResNet-50 + 2D global average pool."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):  # (N, C, H, W) -> (N, 2048)
        return self.backbone(x[:, None])[:, :, 0].mean(dim=(2, 3))


class ReferenceCNN(nn.Module):
    """The authors' `CNN` head: features -> BNNeck -> classifier.

    Input (B, T, 3, H, W). Eval: (B, 2048) BN features (for the baseline, the
    mean over frames of the per-frame BN features). Train: (f, logits) (for the
    baseline, both averaged over frames).
    """

    def __init__(self, variant, num_classes, non_layers=(0, 2, 3, 0), stripes=16, blocks=None):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; expected one of {sorted(VARIANTS)}")
        self.variant = variant
        if variant == "baseline":
            self.features = FrameFeatures(VideoResNet50(blocks=blocks))
        else:
            self.features = ClipFeatures(
                VideoResNet50(non_layers, VARIANTS[variant], stripes, blocks=blocks))
        self.bottleneck = nn.BatchNorm1d(2048)
        self.bottleneck.bias.requires_grad_(False)
        self.classifier = nn.Linear(2048, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, x):
        b, t = x.shape[:2]
        if self.variant == "baseline":
            f = self.features(x.reshape(b * t, *x.shape[2:]))
        else:
            f = self.features(x)
        bn = self.bottleneck(f)
        if self.variant == "baseline":
            if not self.training:
                return bn.reshape(b, t, -1).mean(1)
            logits = self.classifier(bn)
            return f.reshape(b, t, -1).mean(1), logits.reshape(b, t, -1).mean(1)
        return bn if not self.training else (f, self.classifier(bn))


def build_reference(variant, num_classes, non_layers=(0, 2, 3, 0), stripes=16, blocks=None):
    """The reference model for a variant name (see VARIANTS), in train mode;
    ``blocks``: residual blocks per stage (default ResNet-50's 3, 4, 6, 3)."""
    return ReferenceCNN(variant, num_classes, tuple(non_layers), stripes, blocks)


@torch.no_grad()
def randomize_(model, seed, neck_bias=False):
    """Fills every parameter and buffer with deterministic random values.

    Convs: Kaiming normal (fan in), except theta/phi: N(0, 1.2 * fan_in**-0.75),
    so the attention logits have std ~1-7 at 256x128 (a soft, input-dependent
    softmax, neither uniform nor one-hot). BatchNorm: gamma ~ U(0.5, 1.5) (U(0.1, 0.4)
    on the last BN of each residual branch and on the non-local W BNs, so 16
    residual additions stay O(1)), beta ~ N(0, 0.1), running mean ~ N(0, 0.1),
    running var ~ U(0.5, 2), num_batches_tracked a random count. Conv biases
    ~ N(0, 0.05); classifier ~ N(0, 0.01). The BNNeck shift stays 0 as in
    every released checkpoint (frozen in the reference) unless `neck_bias`.
    Values depend only on the seed and the module structure. Returns model.
    """
    gen = torch.Generator().manual_seed(seed)

    def normal(t, std, mean=0.0):
        t.copy_(torch.randn(t.shape, generator=gen) * std + mean)

    def uniform(t, lo, hi):
        t.copy_(torch.rand(t.shape, generator=gen) * (hi - lo) + lo)

    for name, m in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            fan_in = m.weight[0].numel()
            if leaf in ("theta", "phi") or name.endswith(("theta.0", "phi.0")):
                normal(m.weight, 1.2 * fan_in ** -0.75)  # attention logits ~ N(0, 1..7)
            else:
                normal(m.weight, (2.0 / fan_in) ** 0.5)
            if m.bias is not None:
                normal(m.bias, 0.05)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            small = leaf == "bn3" or name.endswith(".W.1")
            uniform(m.weight, *((0.1, 0.4) if small else (0.5, 1.5)))
            if name == "bottleneck" and not neck_bias:
                m.bias.zero_()
            else:
                normal(m.bias, 0.1)
            normal(m.running_mean, 0.1)
            uniform(m.running_var, 0.5, 2.0)
            m.num_batches_tracked.fill_(int(torch.randint(1, 10**6, (1,), generator=gen)))
        elif isinstance(m, nn.Linear):
            normal(m.weight, 0.01)
            if m.bias is not None:
                normal(m.bias, 0.01)
    return model


def reference_state_dict(model):
    """state_dict with the `module.` prefix of an nn.DataParallel checkpoint."""
    return {f"module.{k}": v.detach().clone() for k, v in model.state_dict().items()}
