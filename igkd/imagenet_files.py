"""ImageNet copies on disk: reading the CIFAR-aligned subset (`igkd.imagenet_subset`) from an
ILSVRC-style folder or the downsampled ImageNet pickle, finding a copy, and writing a generated
stand-in folder for tests and the ci profile.

Images come from the downsampled ImageNet 32x32 validation pickle the paper used (`read_pickle`)
or from any ILSVRC-style folder `<wnid>/<file>` (`read_folder`), which is box-resized to 32x32 the
way the downsampled ImageNet was made.
"""

from __future__ import annotations

import pickle
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from igkd import paths
from igkd.data import Dataset
from igkd.errors import ConfigError, DataNotFoundError
from igkd.imagenet_subset import WNID, Subset, Synset, make_subset, synsets

GENERATED_MARKER = "GENERATED-NOT-IMAGENET.txt"  # written by write_example_folder
PICKLE_SOURCE = "ImageNet32 validation (downsampled ImageNet), CIFAR-aligned subset"

# Where `find_source()` looks when no source is given (under $IGKD_DATA).
DEFAULT_LOCATIONS = ("imagenet32/val_data", "Imagenet32_val/val_data", "imagenet/val")

WHERE_TO_GET_IT = (
    "The paper used the downsampled ImageNet 32x32 validation set: download Imagenet32_val.zip from "
    "image-net.org (Download -> 'Downsampled ImageNet', login needed; it holds the pickle `val_data`) "
    "and the class list map_clsloc.txt from github.com/PatrykChrabaszcz/Imagenet32_Scripts, and put "
    "both in $IGKD_DATA/imagenet32/. Any ILSVRC-style folder <wnid>/<image> works too (e.g. the "
    "ILSVRC2012 validation images sorted into class folders, at $IGKD_DATA/imagenet/val/). Or point "
    "the `source` parameter (papermill -p source PATH) at either"
)


# --- ILSVRC-style folders --------------------------------------------------------------------------


def to_32(image) -> np.ndarray:
    """A PIL image of any size and mode -> (3, 32, 32) uint8 RGB, box-resized.

    Chrabaszcz et al. (2017) made the downsampled ImageNet with Pillow's box filter over the whole
    image (no crop), so a folder of full-size images read this way matches the pickle's pixels as
    closely as the decoders allow. Palette images go through RGBA so their transparency is read; alpha
    is then dropped, as torchvision's loader does. CMYK uses Pillow's plain conversion.
    """
    from PIL import Image

    if image.mode in ("P", "PA"):
        image = image.convert("RGBA")
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != (32, 32):
        image = image.resize((32, 32), Image.Resampling.BOX)
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def _read_image(path: Path) -> np.ndarray | str:
    """(3, 32, 32) uint8, or the reason the file could not be read."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return to_32(im)
    except Exception as e:  # any decoder failure (truncated, not an image, bomb, odd mode) skips it
        return f"{type(e).__name__}: {e}"


def read_folder(root: str | Path, workers: int = 2, progress: bool = True) -> Subset:
    """The CIFAR-aligned images of an ILSVRC-style folder `root/<wnid>/<file>`.

    Folders whose WordNet ID is not in the map are counted (per ID, `Subset.ignored`) and not read;
    files that cannot be decoded are skipped, named in a warning and listed in `Subset.unreadable`.
    Images are ordered by WordNet ID, then file name. `workers` threads decode in parallel.
    """
    from tqdm.auto import tqdm

    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"{root} is not a folder; {WHERE_TO_GET_IT}")
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and WNID.match(d.name))
    if not dirs:
        raise DataNotFoundError(
            f"{root} has no <wnid>/ class folders (named like n02690373); point the source at the "
            "folder that holds them (ILSVRC validation images must first be sorted into class folders)"
        )
    smap = synsets()
    ignored: Counter = Counter()
    files: list[tuple[Path, str]] = []
    for d in dirs:
        entries = sorted(f for f in d.iterdir() if f.is_file() and not f.name.startswith("."))
        if d.name in smap:
            files += [(f, d.name) for f in entries]
        else:
            ignored[d.name] = len(entries)
    images = np.empty((len(files), 3, 32, 32), dtype=np.uint8)
    keep, unreadable = [], []
    # Pillow decodes without holding the GIL, so threads help. Its notes on odd EXIF, palettes and
    # large images are not errors; the filter is set here, once, because it is process-global.
    with warnings.catch_warnings(), ThreadPoolExecutor(max(1, workers)) as pool:
        warnings.filterwarnings("ignore", module="PIL")
        results = pool.map(_read_image, (f for f, _ in files))
        for i, out in enumerate(tqdm(results, total=len(files), disable=not progress, leave=False)):
            if isinstance(out, str):
                unreadable.append(f"{files[i][0].relative_to(root)} ({out})")
            else:
                images[i] = out
                keep.append(i)
    if unreadable:
        shown = "; ".join(unreadable[:5]) + (" ..." if len(unreadable) > 5 else "")
        warnings.warn(f"{len(unreadable)} unreadable image(s) skipped: {shown}", stacklevel=2)
    generated = (root / GENERATED_MARKER).is_file()
    source = (
        f"generated images in ILSVRC layout ({root.name}), NOT ImageNet"
        if generated
        else f"ImageNet-style folder {root.name}, CIFAR-aligned subset, box-resized to 32x32"
    )
    return make_subset(
        images[keep],
        [files[i][1] for i in keep],
        [str(files[i][0].relative_to(root)) for i in keep],
        ignored,
        unreadable,
        source,
        generated,
    )


# --- the downsampled ImageNet pickle ---------------------------------------------------------------


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts of NumPy arrays and lists only: a pickle that names any other code is refused."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles store bytes
        *(
            (m, n)
            for m in ("numpy.core.multiarray", "numpy._core.multiarray")
            for n in ("_reconstruct", "scalar")
        ),
        *((m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        if module.startswith("numpy.core.") and int(np.__version__.split(".")[0]) >= 2:
            module = module.replace("numpy.core.", "numpy._core.")  # NumPy 2 renamed it
        return super().find_class(module, name)


def read_class_index(path: str | Path) -> dict[int, str]:
    """1-based class index -> WordNet ID from a downsampled-ImageNet `map_clsloc.txt`.

    Lines are `<wnid> <index> <name>`; a file with one WordNet ID per line is read in line order.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataNotFoundError(f"no class-index file at {path}; {WHERE_TO_GET_IT}")
    out: dict[int, str] = {}
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    for n, tokens in enumerate(lines, start=1):
        if not WNID.match(tokens[0]):
            raise ConfigError(
                f"{path} line {n} does not start with a WordNet ID: {' '.join(tokens)!r}"
            )
        index = int(tokens[1]) if len(tokens) > 1 and tokens[1].isdigit() else n
        if index in out:
            raise ConfigError(f"{path} gives class index {index} twice; is it map_clsloc.txt?")
        out[index] = tokens[0]
    missing = sorted(set(synsets()) - set(out.values()))
    if missing:
        raise ConfigError(
            f"{path} lacks {len(missing)} of the 105 mapped WordNet IDs (e.g. {missing[0]}); "
            "use the downsampled ImageNet's map_clsloc.txt"
        )
    return out


def _default_mapping(pickle_path: Path) -> Path:
    for candidate in (
        pickle_path.parent / "map_clsloc.txt",
        paths.data_dir() / "imagenet32" / "map_clsloc.txt",
    ):
        if candidate.is_file():
            return candidate
    raise DataNotFoundError(
        f"the pickle {pickle_path} stores class indices, not WordNet IDs, and their order is not in "
        "the paper: pass mapping= the downsampled ImageNet's map_clsloc.txt (from "
        "github.com/PatrykChrabaszcz/Imagenet32_Scripts), or put it beside the pickle"
    )


def read_pickle(path: str | Path, mapping: str | Path | None = None) -> Subset:
    """The CIFAR-aligned images of the downsampled ImageNet validation pickle (`val_data`).

    The pickle is {'data': (N, 3072) uint8, R then G then B planes of 32x32, 'labels': 1-based class
    indices}; `mapping` (default: `map_clsloc.txt` beside the pickle or in $IGKD_DATA/imagenet32)
    turns the indices into WordNet IDs. Only NumPy arrays and plain containers are unpickled.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "val_data"
    if not path.is_file():
        raise DataNotFoundError(f"no downsampled-ImageNet pickle at {path}; {WHERE_TO_GET_IT}")
    index = read_class_index(mapping if mapping is not None else _default_mapping(path))
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="latin1").load()
    except Exception as e:
        raise DataNotFoundError(f"{path} is not a downsampled-ImageNet pickle ({e})") from None
    if isinstance(obj, dict):
        obj = {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}
    if not isinstance(obj, dict) or "data" not in obj or "labels" not in obj:
        raise DataNotFoundError(
            f"{path} holds no {{'data', 'labels'}} dict: not a downsampled-ImageNet pickle"
        )
    pixels = np.asarray(obj["data"])
    labels = np.asarray(obj["labels"]).astype(np.int64).reshape(-1)
    if (
        pixels.dtype != np.uint8
        or pixels.ndim != 2
        or pixels.shape[1] != 3072
        or len(pixels) != len(labels)
    ):
        raise DataNotFoundError(
            f"{path} has data {pixels.dtype} {pixels.shape} and {len(labels)} labels; expected "
            "(N, 3072) uint8 with N labels (the 32x32 version)"
        )
    unknown = sorted(set(np.unique(labels).tolist()) - set(index))
    if unknown:
        raise ConfigError(f"the mapping file has no entry for class index {unknown[0]} of {path}")
    smap = synsets()
    wnids = [index[i] for i in labels.tolist()]
    keep = [i for i, w in enumerate(wnids) if w in smap]
    ignored = Counter(w for w in wnids if w not in smap)
    return make_subset(
        pixels[keep].reshape(-1, 3, 32, 32),
        [wnids[i] for i in keep],
        [f"{path.name}[{i}]" for i in keep],
        ignored,
        [],
        PICKLE_SOURCE,
    )


# --- finding and loading a copy --------------------------------------------------------------------


def find_source(source: str | Path | None = None) -> Path:
    """The ImageNet copy to read: `source` if given (it must exist), else the first of
    DEFAULT_LOCATIONS under $IGKD_DATA; DataNotFoundError saying where to get one otherwise."""
    if source is not None:
        p = Path(source).expanduser()
        if not p.exists():
            raise DataNotFoundError(f"source {str(source)!r} does not exist. {WHERE_TO_GET_IT}")
        return p
    for rel in DEFAULT_LOCATIONS:
        if (p := paths.data_dir() / rel).exists():
            return p
    raise DataNotFoundError(
        f"no ImageNet copy given or found under {paths.data_dir()}. {WHERE_TO_GET_IT}"
    )


# --- generated stand-in ----------------------------------------------------------------------------

EXAMPLE_UNMAPPED_WNID = "n01440764"  # tench: an ImageNet class with no CIFAR-10 counterpart


def write_example_folder(
    root: str | Path,
    per_wnid: int = 2,
    images: Dataset | None = None,
    wnids_per_class: int | None = None,
    seed: int = 0,
) -> Path:
    """Write a small ILSVRC-style folder of generated images, for tests and the ci profile only.

    For each mapped class, `wnids_per_class` of its WordNet IDs (None: all) get `per_wnid` files:
    an image of that CIFAR-10 class from `images` (when given; else a smooth random colour field)
    upscaled to a random size between 24 and 160 pixels a side, saved in a rotating mode as ILSVRC
    does (RGB, L and CMYK JPEG; P and RGBA PNG; all named .JPEG). One unreadable file and one folder
    of an unmapped WordNet ID are added, and a marker file that makes `read_folder` label the subset
    as generated. The images say nothing about ImageNet.
    """
    from PIL import Image

    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    (root / GENERATED_MARKER).write_text(
        "Generated by igkd.imagenet.write_example_folder: not ImageNet.\n"
    )
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[Synset]] = {}
    for s in synsets().values():
        by_class.setdefault(s.label, []).append(s)
    labels = images.labels.numpy() if images is not None else None
    pools = {c: np.flatnonzero(labels == c) for c in by_class} if images is not None else {}
    modes = ("RGB", "L", "CMYK", "P", "RGBA")
    count = 0

    def picture(label: int) -> Image.Image:
        if images is not None and len(pools[label]):
            arr = images.images[int(rng.choice(pools[label]))].numpy().transpose(1, 2, 0)
        else:
            arr = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        w, h = (int(v) for v in rng.integers(24, 161, 2))
        return Image.fromarray(arr).resize((w, h), Image.Resampling.BILINEAR)

    for label, group in sorted(by_class.items()):
        for s in group[:wnids_per_class]:
            (root / s.wnid).mkdir(exist_ok=True)
            for k in range(per_wnid):
                mode = modes[count % len(modes)]
                im = picture(label)
                im = im.quantize(64) if mode == "P" else im.convert(mode)
                fmt = "PNG" if mode in ("P", "RGBA") else "JPEG"
                im.save(root / s.wnid / f"{s.wnid}_{k:05d}.JPEG", format=fmt)
                count += 1
    unmapped = root / EXAMPLE_UNMAPPED_WNID
    unmapped.mkdir(exist_ok=True)
    for k in range(per_wnid):
        picture(0).save(unmapped / f"{EXAMPLE_UNMAPPED_WNID}_{k:05d}.JPEG", format="JPEG")
    first = next(iter(synsets()))
    (root / first / f"{first}_corrupt.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    return root
