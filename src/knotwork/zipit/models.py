"""Reference architectures for the ZipIt! experiments and tests: CIFAR ResNet-20, VGG-style CNNs, MLPs.

Each backbone maps images (or vectors) to an embedding; :class:`ClassEmbeddingHead` turns embeddings into
cosine logits against frozen class vectors, so that models trained on disjoint tasks share one output space
(the paper uses CLIP text embeddings; we use any fixed vectors, e.g. MiniLM embeddings of class names).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from knotwork._errors import ZipitError

__all__ = ["ClassEmbeddingHead", "HeadedModel", "MLP", "ResNet20", "SmallCNN", "VGG", "build_from_state",
           "state_difference"]


class ClassEmbeddingHead(nn.Module):
    """Frozen cosine head: ``scale * normalize(x) @ normalize(class_vectors).T``.

    The class vectors are a buffer, never trained, so every model that uses the same vectors speaks the same
    output language and a fully zipped model needs no task-specific layer.

    Parameters
    ----------
    class_vectors : Tensor of shape (n_classes, dim)
        One fixed vector per class; normalised here.
    scale : float, default=100.0
        Logit temperature; 100 as CLIP and the ZipIt! training scripts use.
    """

    #: The zipit tracer leaves this module whole and keeps its input space unmerged (it is the output space).
    zipit_fixed_input = True

    def __init__(self, class_vectors: torch.Tensor, scale: float = 100.0) -> None:
        super().__init__()
        if class_vectors.ndim != 2:
            raise ZipitError(f"class_vectors must have shape (n_classes, dim); got {tuple(class_vectors.shape)}")
        self.register_buffer("class_vectors", F.normalize(class_vectors.detach().float(), dim=1))
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(x, dim=1) @ self.class_vectors.T


class HeadedModel(nn.Module):
    """A backbone followed by a :class:`ClassEmbeddingHead`; outputs logits over all classes."""

    def __init__(self, backbone: nn.Module, head: ClassEmbeddingHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class BasicBlock(nn.Module):
    """ResNet basic block; the shortcut is a 3x3 conv + BN when the shape changes, as in ZipIt!'s ResNet-20."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """CIFAR ResNet-20 of width multiplier ``width`` (channels 16w, 32w, 64w), as in ZipIt!'s ``resnet20``.

    Parameters
    ----------
    width : int, default=1
        Width multiplier; the paper uses 4 (CIFAR-10) and 8 (CIFAR-100).
    out_dim : int, default=10
        Size of the final linear layer (the embedding size when a class-embedding head follows).
    in_channels : int, default=3
    """

    def __init__(self, width: int = 1, out_dim: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        w = 16 * width
        self.conv1 = nn.Conv2d(in_channels, w, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.layer1 = self._stage(w, w, 1)
        self.layer2 = self._stage(w, 2 * w, 2)
        self.layer3 = self._stage(2 * w, 4 * w, 2)
        self.linear = nn.Linear(4 * w, out_dim)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(in_planes: int, planes: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes), BasicBlock(planes, planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU layers, global average pooling and a linear layer (the MNIST 5+5 model)."""

    def __init__(self, width: int = 64, out_dim: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width // 2, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width, 3, 2, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.linear = nn.Linear(width, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        return self.linear(x.mean(dim=(2, 3)))


class VGG(nn.Module):
    """VGG-style CNN: conv-BN-ReLU blocks with max-pooling ('M'), then flatten into a two-layer classifier.

    The flatten of a spatial map into a linear layer is deliberate: it exercises the ``U ⊗ I`` expansion of the
    unmerge matrix over spatial positions.
    """

    def __init__(self, cfg: tuple = (16, "M", 32, "M"), out_dim: int = 10, in_channels: int = 3,
                 image_size: int = 8, hidden: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c, size = in_channels, image_size
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                size //= 2
            else:
                layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.BatchNorm2d(int(v)), nn.ReLU()]
                c = int(v)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(c * size * size, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class MLP(nn.Module):
    """Plain MLP ``in -> hidden -> ... -> out`` with ReLU; ``residual=True`` adds ``h + relu(W h)`` blocks."""

    def __init__(self, in_dim: int = 16, hidden: int = 32, out_dim: int = 10, depth: int = 2,
                 residual: bool = False) -> None:
        super().__init__()
        self.inp = nn.Linear(in_dim, hidden)
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth - 1))
        self.out = nn.Linear(hidden, out_dim)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x.flatten(1)))
        for layer in self.hidden:
            h = h + torch.relu(layer(h)) if self.residual else torch.relu(layer(h))
        return self.out(h)


#: Architectures the CLI can rebuild from a checkpoint: name -> constructor(width, out_dim, in_channels).
ARCHITECTURES = {
    "resnet20": lambda width, out_dim, in_channels: ResNet20(width, out_dim, in_channels),
    "cnn": lambda width, out_dim, in_channels: SmallCNN(width, out_dim, in_channels),
}


def state_difference(state: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], ref_name: str) -> str | None:
    """The first way ``state`` differs from ``ref`` (named ``ref_name``) in tensor names or shapes, or None.

    A phrase for an error message: "has no tensor 'k' that <ref_name> has", "tensor 'k' has shape (8,) but (4,)
    in <ref_name>", or "has tensor 'k' that <ref_name> lacks".
    """
    for key, tensor in ref.items():
        if key not in state:
            return f"has no tensor {key!r} that {ref_name} has"
        if state[key].shape != tensor.shape:
            return f"tensor {key!r} has shape {tuple(state[key].shape)} but {tuple(tensor.shape)} in {ref_name}"
    extra = next((key for key in state if key not in ref), None)
    return None if extra is None else f"has tensor {extra!r} that {ref_name} lacks"


def build_from_state(arch: str, state: dict[str, torch.Tensor], *, width: int) -> nn.Module:
    """Rebuild a registered architecture (optionally with its class-embedding head) around a state dict.

    The output size, input channels and class vectors are read from the tensors; ``width`` must be given.

    Raises
    ------
    knotwork.zipit.ZipitError
        An unregistered ``arch``, or a state dict that is not that architecture at that width: the first
        missing or unexpected tensor, or the first tensor of another shape, is named.
    """
    if arch not in ARCHITECTURES:
        raise ZipitError(f"unknown architecture {arch!r}; registered: {sorted(ARCHITECTURES)}")
    headed = "head.class_vectors" in state
    prefix = "backbone." if headed else ""
    for key in (prefix + "linear.weight", prefix + "conv1.weight"):
        if key not in state:
            raise ZipitError(f"missing tensor {key!r}: not a {arch} checkpoint")
    linear, conv = state[prefix + "linear.weight"], state[prefix + "conv1.weight"]
    if linear.ndim != 2 or conv.ndim != 4:
        raise ZipitError(f"tensors {prefix}linear.weight {tuple(linear.shape)} / {prefix}conv1.weight "
                         f"{tuple(conv.shape)} have the wrong rank: not a {arch} checkpoint")
    backbone = ARCHITECTURES[arch](width, linear.shape[0], conv.shape[1])
    model = HeadedModel(backbone, ClassEmbeddingHead(state["head.class_vectors"])) if headed else backbone
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    what = f"{arch} of width {width}"
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ZipitError(f"missing tensor {missing[0]!r}{more}: not a {what} checkpoint")
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise ZipitError(f"unexpected tensor {unexpected[0]!r}{more}: not a {what} checkpoint")
    for key, t in expected.items():
        if state[key].shape != t.shape:
            raise ZipitError(f"tensor {key!r} has shape {tuple(state[key].shape)} but a {what} needs "
                             f"{tuple(t.shape)}; is the width right?")
    model.load_state_dict(state)
    return model.eval()
