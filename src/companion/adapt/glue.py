"""The GLUE tasks of the Deep LoRA experiments: registry, files and examples.

arXiv:2406.04112, Deep LoRA experiments (few-shot STS-B, limited-data GLUE): the eight GLUE
tasks, scored on their validation splits (MNLI: matched). This module knows where each task's
data lives and how to read it; tokenisation and batching are ``companion.adapt.batching``.

- ``TASKS`` describes the eight GLUE tasks: where their files are, which columns hold the
  text and the label, how labels map to class indices and which metrics score them.
- ``load_split`` reads the official GLUE tsv files from a local folder (``data_dir`` argument
  or the ``COMPANION_DATA_DIR`` environment variable). Only when asked (``online=True``) and
  only when the local file is missing does it fetch the Hugging Face hub's parquet copy.
- ``available_tasks`` / ``missing_tasks`` say which tasks a folder holds.

Class indices agree between the tsv and the hub: for every task the hub's integer label is the
index into ``GlueTask.label_names`` (e.g. MNLI entailment 0, neutral 1, contradiction 2).
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numpy as np

from companion.adapt.metrics import METRICS

__all__ = [
    "ENV_VAR",
    "HUB_REPO",
    "SPLITS",
    "TASKS",
    "Examples",
    "GlueTask",
    "available_tasks",
    "data_dir",
    "from_hub_records",
    "get_task",
    "hub_file",
    "load_split",
    "majority_score",
    "missing_tasks",
    "read_tsv",
]

ENV_VAR = "COMPANION_DATA_DIR"  # folder holding CoLA/, MNLI/, MRPC/, ... as in GLUE's download
HUB_REPO = "nyu-mll/glue"  # Hugging Face dataset repository of the online path
SPLITS = ("train", "validation")  # the paper evaluates on validation (GLUE test labels are hidden)


# --------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task: file layout, label encoding and metrics.

    Main metrics as in arXiv:2406.04112 (Deep LoRA experiments): CoLA Matthews correlation,
    STS-B Pearson correlation, every other task accuracy.
    """

    name: str  # registry key, lowercase ("sst2")
    folder: str  # GLUE folder name under the data directory ("SST-2")
    text_columns: tuple[str, ...]  # one or two columns holding the text(s), in pair order
    label_column: str  # column holding the label (MNLI: gold_label)
    label_names: tuple[str, ...]  # class names in class-index order; () for regression
    label_values: tuple[str, ...]  # the tsv spelling of each class, same order; () for regression
    is_regression: bool  # STS-B: a float score, not a class
    metrics: tuple[str, ...]  # names in companion.adapt.metrics.METRICS that GLUE reports
    main_metric: str  # paper: CoLA Matthews, STS-B Pearson, others accuracy
    hub_config: str  # config (folder) of the task in the hub repository HUB_REPO
    hub_text_columns: tuple[str, ...]  # the hub's names for text_columns, same order
    train_file: str = "train.tsv"  # file of the train split inside folder
    validation_file: str = "dev.tsv"  # file of the validation split (MNLI: dev_matched.tsv)
    has_header: bool = True  # CoLA's files have no header row
    columns: tuple[str, ...] = ()  # names of the columns by position, for files without header
    hub_validation_split: str = "validation"  # the hub's split name (MNLI: validation_matched)
    label_range: tuple[float, float] | None = None  # regression targets must lie in [lo, hi]

    def __post_init__(self) -> None:
        if len(self.text_columns) not in (1, 2):
            raise ValueError(f"task {self.name!r}: text_columns must name one or two columns")
        if len(self.hub_text_columns) != len(self.text_columns):
            raise ValueError(f"task {self.name!r}: hub_text_columns must match text_columns")
        if len(self.label_names) != len(self.label_values):
            raise ValueError(f"task {self.name!r}: label_names and label_values differ in length")
        if self.is_regression != (len(self.label_names) == 0):
            raise ValueError(f"task {self.name!r}: regression tasks (and only they) have no labels")
        if self.is_regression and self.label_range is None:
            raise ValueError(f"task {self.name!r}: a regression task needs label_range")
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"task {self.name!r}: unknown metric(s) {unknown}")
        if self.main_metric not in self.metrics:
            raise ValueError(f"task {self.name!r}: main_metric must be one of {self.metrics}")
        if not self.has_header:
            missing = [c for c in (*self.text_columns, self.label_column) if c not in self.columns]
            if missing:
                raise ValueError(f"task {self.name!r}: columns lacks {missing}")

    @property
    def is_pair(self) -> bool:
        """Whether examples are sentence pairs (text_a, text_b)."""
        return len(self.text_columns) == 2

    @property
    def num_labels(self) -> int:
        """Outputs of the classifier head: classes, or 1 for regression."""
        return 1 if self.is_regression else len(self.label_names)

    def file_name(self, split: str) -> str:
        """The tsv file of ``split`` ("train" or "validation") inside ``folder``."""
        _check_split(split)
        return self.train_file if split == "train" else self.validation_file


def _binary(name: str, folder: str, names: tuple[str, str], **kw: Any) -> GlueTask:
    """A GLUE task whose tsv labels are "0"/"1"."""
    return GlueTask(
        name=name, folder=folder, label_names=names, label_values=("0", "1"),
        is_regression=False, hub_config=name, **kw,
    )


TASKS: Mapping[str, GlueTask] = MappingProxyType({
    # CoLA: no header; columns are source, label, original mark (often empty), sentence.
    "cola": _binary(
        "cola", "CoLA", ("unacceptable", "acceptable"),
        text_columns=("sentence",), label_column="label",
        metrics=("matthews",), main_metric="matthews",
        has_header=False, columns=("source", "label", "original_label", "sentence"),
        hub_text_columns=("sentence",),
    ),
    "mnli": GlueTask(
        name="mnli", folder="MNLI",
        text_columns=("sentence1", "sentence2"), label_column="gold_label",
        label_names=("entailment", "neutral", "contradiction"),
        label_values=("entailment", "neutral", "contradiction"),
        is_regression=False, metrics=("accuracy",), main_metric="accuracy",
        hub_config="mnli", hub_text_columns=("premise", "hypothesis"),
        # paper: MNLI is evaluated on the matched validation split
        validation_file="dev_matched.tsv", hub_validation_split="validation_matched",
    ),
    # MRPC: header "Quality  #1 ID  #2 ID  #1 String  #2 String", file starts with a BOM.
    "mrpc": _binary(
        "mrpc", "MRPC", ("not_equivalent", "equivalent"),
        text_columns=("#1 String", "#2 String"), label_column="Quality",
        metrics=("accuracy", "f1"), main_metric="accuracy",
        hub_text_columns=("sentence1", "sentence2"),
    ),
    "qnli": GlueTask(
        name="qnli", folder="QNLI",
        text_columns=("question", "sentence"), label_column="label",
        label_names=("entailment", "not_entailment"),
        label_values=("entailment", "not_entailment"),
        is_regression=False, metrics=("accuracy",), main_metric="accuracy",
        hub_config="qnli", hub_text_columns=("question", "sentence"),
    ),
    "qqp": _binary(
        "qqp", "QQP", ("not_duplicate", "duplicate"),
        text_columns=("question1", "question2"), label_column="is_duplicate",
        metrics=("accuracy", "f1"), main_metric="accuracy",
        hub_text_columns=("question1", "question2"),
    ),
    "rte": GlueTask(
        name="rte", folder="RTE",
        text_columns=("sentence1", "sentence2"), label_column="label",
        label_names=("entailment", "not_entailment"),
        label_values=("entailment", "not_entailment"),
        is_regression=False, metrics=("accuracy",), main_metric="accuracy",
        hub_config="rte", hub_text_columns=("sentence1", "sentence2"),
    ),
    "sst2": _binary(
        "sst2", "SST-2", ("negative", "positive"),
        text_columns=("sentence",), label_column="label",
        metrics=("accuracy",), main_metric="accuracy",
        hub_text_columns=("sentence",),
    ),
    "stsb": GlueTask(
        name="stsb", folder="STS-B",
        text_columns=("sentence1", "sentence2"), label_column="score",
        label_names=(), label_values=(), is_regression=True, label_range=(0.0, 5.0),
        metrics=("pearson", "spearman"), main_metric="pearson",
        hub_config="stsb", hub_text_columns=("sentence1", "sentence2"),
    ),
})


def get_task(task: str | GlueTask) -> GlueTask:
    """The registered task of that name (a ``GlueTask`` is returned as is)."""
    if isinstance(task, GlueTask):
        return task
    if not isinstance(task, str) or task not in TASKS:
        raise ValueError(f"unknown GLUE task {task!r}; choose one of {', '.join(TASKS)}")
    return TASKS[task]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(
            f"unknown split {split!r}; choose 'train' or 'validation' "
            "(GLUE test labels are not public)"
        )


def is_int(value: Any) -> bool:
    """A Python or numpy integer, not a bool (the adapt half's one check of integer settings)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_positive_int(value: Any) -> bool:
    """An integer (``is_int``) ≥ 1."""
    return is_int(value) and value >= 1


# --------------------------------------------------------------------------------------------
# Examples
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Examples:
    """The examples of one split of one task.

    Attributes:
        text_a: (N,) first (or only) texts.
        text_b: (N,) second texts of pair tasks; None for single-sentence tasks.
        labels: (N,) read-only; int64 class indices into ``GlueTask.label_names``, or float32
            scores for STS-B.
        task: the task's registry key ("rte").
    """

    text_a: tuple[str, ...]
    text_b: tuple[str, ...] | None
    labels: np.ndarray
    task: str

    def __post_init__(self) -> None:
        if not isinstance(self.task, str):
            raise ValueError(f"task must be a task name such as 'rte', got {self.task!r}")
        spec = get_task(self.task)
        object.__setattr__(self, "text_a", tuple(self.text_a))
        if (self.text_b is not None) != spec.is_pair:
            if spec.is_pair:
                raise ValueError(f"task {spec.name!r} has pairs: text_b is required")
            raise ValueError(f"task {spec.name!r} has single texts: text_b must be None")
        if self.text_b is not None:
            object.__setattr__(self, "text_b", tuple(self.text_b))
            if len(self.text_b) != len(self.text_a):
                raise ValueError(
                    f"text_a has {len(self.text_a)} entries but text_b has {len(self.text_b)}"
                )
        labels = np.asarray(self.labels)
        if labels.shape != (len(self.text_a),):
            raise ValueError(f"labels must have shape ({len(self.text_a)},), got {labels.shape}")
        if spec.is_regression:
            labels = np.array(labels, dtype=np.float32)
        else:
            if labels.size and not np.issubdtype(labels.dtype, np.integer):
                raise ValueError(f"labels of {spec.name!r} must be integer class indices")
            labels = np.array(labels, dtype=np.int64)
            if labels.size and (labels.min() < 0 or labels.max() >= spec.num_labels):
                raise ValueError(
                    f"labels of {spec.name!r} must lie in [0, {spec.num_labels}), "
                    f"got range [{labels.min()}, {labels.max()}]"
                )
        labels.setflags(write=False)  # an Examples is immutable, its labels too
        object.__setattr__(self, "labels", labels)

    def __len__(self) -> int:
        return len(self.text_a)

    @property
    def spec(self) -> GlueTask:
        """The task's ``GlueTask``."""
        return TASKS[self.task]

    def select(self, indices: Sequence[int] | np.ndarray) -> Examples:
        """The examples at ``indices`` (repeats allowed), in that order.

        Args:
            indices: (K,) integer positions in [0, N).

        Returns:
            An ``Examples`` of length K.
        """
        idx = np.asarray(indices)
        if idx.size == 0:
            idx = idx.astype(np.int64)  # np.asarray([]) is float64
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError("indices must be a 1-D array of integer positions")
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise ValueError(
                f"indices must lie in [0, {len(self)}), got [{idx.min()}, {idx.max()}]"
            )
        return Examples(
            text_a=tuple(self.text_a[i] for i in idx),
            text_b=None if self.text_b is None else tuple(self.text_b[i] for i in idx),
            labels=self.labels[idx],
            task=self.task,
        )


def majority_score(examples: Examples) -> float | None:
    """The task's main metric of always answering the most frequent class of ``examples``.

    The floor a classifier must clear before its score says it learned anything: on an accuracy
    task it is the majority class's share (MRPC's validation split: 279 of 408 pairs are
    paraphrases, 0.684), on CoLA's Matthews correlation it is 0 (a constant prediction
    correlates with nothing). arXiv:2406.04112 (limited-data GLUE) reports the main metrics only,
    so this is the reader's yardstick, not one of the paper's numbers.

    Args:
        examples: (N,) labelled examples of one split, N ≥ 1.

    Returns:
        The main metric (``GlueTask.main_metric``) of the constant prediction; None for STS-B's
        regression, where a constant has no correlation.

    Raises:
        ValueError: ``examples`` is empty.
    """
    spec = examples.spec
    if len(examples) == 0:
        raise ValueError(f"{spec.name!r}: no examples, so no majority class; pass a non-empty split")
    if spec.is_regression:
        return None
    majority = int(np.bincount(examples.labels, minlength=spec.num_labels).argmax())  # ties: the lower class
    return float(METRICS[spec.main_metric](np.full(len(examples), majority), examples.labels))


# --------------------------------------------------------------------------------------------
# Local GLUE files
# --------------------------------------------------------------------------------------------


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding the GLUE task folders (CoLA/, MNLI/, ..., as GLUE distributes them).

    Args:
        explicit: a folder given by the caller; wins over the environment.

    Returns:
        ``explicit`` if given, else ``$COMPANION_DATA_DIR`` (an empty value counts as unset).

    Raises:
        FileNotFoundError: neither is set, or the folder does not exist.
    """
    if explicit is not None:
        path, source = Path(explicit).expanduser(), "the data_dir argument"
    else:
        env = os.environ.get(ENV_VAR, "")
        if not env:
            raise FileNotFoundError(
                f"no GLUE data directory: set {ENV_VAR} to the folder holding CoLA/, MRPC/, ... "
                "(or pass data_dir=...), or pass online=True to read the Hugging Face hub copy"
            )
        path, source = Path(env).expanduser(), f"${ENV_VAR}"
    if not path.is_dir():
        raise FileNotFoundError(
            f"GLUE data directory {path} (from {source}) does not exist; point {ENV_VAR} "
            "(or data_dir=...) at the folder holding CoLA/, MRPC/, ..., or pass online=True"
        )
    return path


_data_dir = data_dir  # load_split's parameter of the same name shadows the function


def read_tsv(task: str | GlueTask, path: str | os.PathLike[str]) -> Examples:
    """Read one official GLUE tsv file.

    Fields are tab-separated with no quoting at all (``csv.QUOTE_NONE``): GLUE texts contain
    unbalanced double quotes (e.g. an RTE premise starting with ``"``) that a quoting reader
    would merge across lines. Texts are kept exactly as in the file (no stripping).

    Args:
        task: task name or ``GlueTask``.
        path: the tsv file.

    Returns:
        The file's examples in file order.

    Raises:
        ValueError: a missing header column, a row with the wrong number of fields, an unknown
            label or an unparsable / out-of-range score, naming the file and line.
    """
    spec = get_task(task)
    path = Path(path)
    text_a: list[str] = []
    text_b: list[str] = []
    labels: list[Any] = []
    classes = {value: i for i, value in enumerate(spec.label_values)}
    # utf-8-sig strips the BOM that starts GLUE's MRPC files and reads other files as UTF-8.
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if spec.has_header:
            header = next(reader, None)
            if header is None:
                raise ValueError(f"{path}: empty file; expected a {spec.folder} header line")
            names = tuple(header)
            missing = [c for c in (*spec.text_columns, spec.label_column) if c not in names]
            if missing:
                raise ValueError(
                    f"{path}, line 1: header lacks column(s) {missing} of {spec.folder} "
                    f"(header is {list(names)}); is this the GLUE {spec.folder} file?"
                )
        else:
            names = spec.columns
        width = len(names)
        text_idx = [names.index(c) for c in spec.text_columns]
        label_idx = names.index(spec.label_column)
        for row in reader:
            line = reader.line_num  # QUOTE_NONE: one physical line per row
            if len(row) != width:
                raise ValueError(
                    f"{path}, line {line}: expected {width} tab-separated fields "
                    f"({spec.folder} layout), got {len(row)}"
                )
            raw = row[label_idx]
            if spec.is_regression:
                labels.append(_parse_score(spec, raw, f"{path}, line {line}"))
            elif raw in classes:
                labels.append(classes[raw])
            else:
                raise ValueError(
                    f"{path}, line {line}: unknown label {raw!r} in column "
                    f"{spec.label_column!r}; expected one of {list(spec.label_values)}"
                )
            text_a.append(row[text_idx[0]])
            if spec.is_pair:
                text_b.append(row[text_idx[1]])
    if not labels:
        raise ValueError(f"{path}: no examples; the GLUE {spec.folder} file looks truncated")
    return Examples(
        text_a=tuple(text_a),
        text_b=tuple(text_b) if spec.is_pair else None,
        labels=np.asarray(labels),
        task=spec.name,
    )


def _parse_score(spec: GlueTask, raw: Any, where: str) -> float:
    """A regression target, checked to be a finite number inside ``spec.label_range``."""
    try:
        score = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: unparsable score {raw!r}; expected a number") from None
    lo, hi = spec.label_range  # type: ignore[misc]  # set for every regression task
    if not (math.isfinite(score) and lo <= score <= hi):
        raise ValueError(f"{where}: score {raw!r} outside [{lo:g}, {hi:g}]")
    return score


def load_split(
    task: str | GlueTask,
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    online: bool = False,
) -> Examples:
    """Load the train or validation split of a GLUE task.

    Reads ``<data_dir>/<folder>/<file>`` (``GlueTask.train_file`` / ``validation_file``; MNLI
    validation is ``dev_matched.tsv``). Only with ``online=True`` and only when that file is
    missing (or no data directory is configured) is the Hugging Face hub copy used.

    Args:
        task: task name ("cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb").
        split: "train" or "validation".
        data_dir: folder holding the GLUE task folders; default ``$COMPANION_DATA_DIR``.
        online: allow the download from ``HUB_REPO`` when the local file is missing.

    Returns:
        The split's ``Examples``.

    Raises:
        ValueError: unknown task or split, or a malformed file.
        FileNotFoundError: the local file is missing and ``online`` is False.
    """
    spec = get_task(task)
    _check_split(split)
    try:
        root: Path | None = _data_dir(data_dir)
    except FileNotFoundError:
        if not online:
            raise
        root = None
    if root is not None:
        path = root / spec.folder / spec.file_name(split)
        if path.is_file():
            return read_tsv(spec, path)
        if not online:
            raise FileNotFoundError(
                f"no GLUE data for {spec.name!r} in {root} (expected {path}); "
                f"set {ENV_VAR} or pass online=True"
            )
    return _load_from_hub(spec, split)


def available_tasks(data_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Tasks whose train and validation files both exist locally, in ``TASKS`` order."""
    root = _data_dir(data_dir)
    return [
        name for name, spec in TASKS.items()
        if all((root / spec.folder / spec.file_name(s)).is_file() for s in SPLITS)
    ]


def missing_tasks(data_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Tasks lacking a local train or validation file, in ``TASKS`` order."""
    have = set(available_tasks(data_dir))
    return [name for name in TASKS if name not in have]


# --------------------------------------------------------------------------------------------
# Online path: the Hugging Face hub's parquet copy (never used by the tests)
# --------------------------------------------------------------------------------------------


def hub_file(task: str | GlueTask, split: str) -> str:
    """Path of one split's parquet file inside the hub repository ``HUB_REPO``.

    Args:
        task: task name or ``GlueTask``.
        split: "train" or "validation" (MNLI: the matched validation split).

    Returns:
        e.g. "stsb/validation-00000-of-00001.parquet".
    """
    spec = get_task(task)
    _check_split(split)
    name = "train" if split == "train" else spec.hub_validation_split
    return f"{spec.hub_config}/{name}-00000-of-00001.parquet"


def _load_from_hub(spec: GlueTask, split: str) -> Examples:
    """Download one split's parquet file from ``HUB_REPO`` and map it to ``Examples``."""
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(
            "reading GLUE from the Hugging Face hub needs pyarrow: pip install pyarrow "
            f"(or put the GLUE tsv files under ${ENV_VAR})"
        ) from err
    import huggingface_hub

    filename = hub_file(spec, split)
    local = huggingface_hub.hf_hub_download(
        repo_id=HUB_REPO, repo_type="dataset", filename=filename
    )
    table = pq.read_table(local, columns=[*spec.hub_text_columns, "label"])
    return from_hub_records(spec, table.to_pylist(), source=f"{HUB_REPO}/{filename}")


def from_hub_records(
    task: str | GlueTask, records: Sequence[Mapping[str, Any]], source: str = "hub records"
) -> Examples:
    """Map rows of the hub's GLUE table to ``Examples``.

    The hub names text columns differently (``GlueTask.hub_text_columns``; MNLI premise /
    hypothesis) and stores labels as class indices in ``label_names`` order (MNLI entailment 0,
    neutral 1, contradiction 2) or, for STS-B, as the float score. Test-split rows (label −1)
    are rejected.

    Args:
        task: task name or ``GlueTask``.
        records: (N,) rows as mappings from column name to value.
        source: where the rows came from, for error messages.

    Returns:
        The rows as ``Examples``.
    """
    spec = get_task(task)
    text_a: list[str] = []
    text_b: list[str] = []
    labels: list[Any] = []
    for i, record in enumerate(records):
        where = f"{source}, row {i}"
        missing = [c for c in (*spec.hub_text_columns, "label") if c not in record]
        if missing:
            raise ValueError(
                f"{where}: missing column(s) {missing} of hub config {spec.hub_config!r}"
            )
        texts = [record[c] for c in spec.hub_text_columns]
        for column, text in zip(spec.hub_text_columns, texts):
            if not isinstance(text, str):
                raise ValueError(f"{where}: column {column!r} holds {text!r}, not text")
        value = record["label"]
        if spec.is_regression:
            labels.append(_parse_score(spec, value, where))
        elif is_int(value) and 0 <= value < spec.num_labels:
            labels.append(int(value))
        else:
            raise ValueError(
                f"{where}: label {value!r} is not a class index in [0, {spec.num_labels}) "
                f"({', '.join(spec.label_names)}); test-split rows carry -1"
            )
        text_a.append(texts[0])
        if spec.is_pair:
            text_b.append(texts[1])
    if not labels:
        raise ValueError(f"{source}: no rows")
    return Examples(
        text_a=tuple(text_a),
        text_b=tuple(text_b) if spec.is_pair else None,
        labels=np.asarray(labels),
        task=spec.name,
    )
