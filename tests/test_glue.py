"""companion.adapt.glue: the GLUE task registry, the local tsv files and the hub records.

The data tests read the GLUE copies in $COMPANION_DATA_DIR (CI) or ../shared/data/glue (see
its SOURCE.md); the expected numbers are the official GLUE row counts and label counts.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import types

import numpy as np
import pytest

from companion.adapt import glue as data
from companion.adapt.glue import (
    TASKS,
    Examples,
    available_tasks,
    from_hub_records,
    load_split,
    missing_tasks,
    read_tsv,
)

from conftest import LOCAL, needs_glue, write  # fixtures glue_dir, splits, tokenizer: conftest.py


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------

REGISTRY = [
    # name, folder, #texts, label_names, metrics, main, validation file, hub validation split
    ("cola", "CoLA", 1, ("unacceptable", "acceptable"), ("matthews",), "matthews", "dev.tsv", "validation"),
    ("mnli", "MNLI", 2, ("entailment", "neutral", "contradiction"), ("accuracy",), "accuracy",
     "dev_matched.tsv", "validation_matched"),
    ("mrpc", "MRPC", 2, ("not_equivalent", "equivalent"), ("accuracy", "f1"), "accuracy", "dev.tsv", "validation"),
    ("qnli", "QNLI", 2, ("entailment", "not_entailment"), ("accuracy",), "accuracy", "dev.tsv", "validation"),
    ("qqp", "QQP", 2, ("not_duplicate", "duplicate"), ("accuracy", "f1"), "accuracy", "dev.tsv", "validation"),
    ("rte", "RTE", 2, ("entailment", "not_entailment"), ("accuracy",), "accuracy", "dev.tsv", "validation"),
    ("sst2", "SST-2", 1, ("negative", "positive"), ("accuracy",), "accuracy", "dev.tsv", "validation"),
    ("stsb", "STS-B", 2, (), ("pearson", "spearman"), "pearson", "dev.tsv", "validation"),
]


def test_registry_has_the_eight_glue_tasks():
    assert list(TASKS) == ["cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb"]


@pytest.mark.parametrize("name, folder, n_texts, names, metrics, main, val_file, hub_val", REGISTRY)
def test_registry_entries(name, folder, n_texts, names, metrics, main, val_file, hub_val):
    spec = TASKS[name]
    assert spec.name == name and spec.hub_config == name
    assert spec.folder == folder
    assert len(spec.text_columns) == len(spec.hub_text_columns) == n_texts
    assert spec.label_names == names
    assert spec.is_regression == (name == "stsb")
    assert spec.num_labels == (1 if name == "stsb" else len(names))
    assert spec.metrics == metrics and spec.main_metric == main
    assert spec.file_name("train") == "train.tsv" and spec.file_name("validation") == val_file
    assert spec.hub_validation_split == hub_val
    assert spec.has_header == (name != "cola")


@pytest.mark.parametrize(
    "name, text_columns, label_column, label_values",
    [
        ("cola", ("sentence",), "label", ("0", "1")),
        ("mnli", ("sentence1", "sentence2"), "gold_label", ("entailment", "neutral", "contradiction")),
        ("mrpc", ("#1 String", "#2 String"), "Quality", ("0", "1")),
        ("qnli", ("question", "sentence"), "label", ("entailment", "not_entailment")),
        ("qqp", ("question1", "question2"), "is_duplicate", ("0", "1")),
        ("rte", ("sentence1", "sentence2"), "label", ("entailment", "not_entailment")),
        ("sst2", ("sentence",), "label", ("0", "1")),
        ("stsb", ("sentence1", "sentence2"), "score", ()),
    ],
)
def test_tsv_columns(name, text_columns, label_column, label_values):
    spec = TASKS[name]
    assert (spec.text_columns, spec.label_column, spec.label_values) == (
        text_columns, label_column, label_values,
    )


def test_cola_columns_by_position_and_stsb_range():
    assert TASKS["cola"].columns == ("source", "label", "original_label", "sentence")
    assert TASKS["stsb"].label_range == (0.0, 5.0)


def test_task_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TASKS["rte"].folder = "X"  # type: ignore[misc]
    with pytest.raises(TypeError):
        TASKS["new"] = TASKS["rte"]  # type: ignore[index]


def test_task_validation():
    with pytest.raises(ValueError, match="main_metric must be one of"):
        dataclasses.replace(TASKS["cola"], main_metric="accuracy")
    with pytest.raises(ValueError, match="unknown metric"):
        dataclasses.replace(TASKS["cola"], metrics=("mcc",), main_metric="mcc")


# --------------------------------------------------------------------------------------------
# data_dir, available/missing tasks
# --------------------------------------------------------------------------------------------


def test_data_dir_resolution(tmp_path, monkeypatch):
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setenv("COMPANION_DATA_DIR", str(tmp_path))
    assert data.data_dir() == tmp_path
    assert data.data_dir(other) == other  # the argument wins over the environment
    monkeypatch.setenv("COMPANION_DATA_DIR", "")  # empty counts as unset
    with pytest.raises(FileNotFoundError, match="set COMPANION_DATA_DIR.*online=True"):
        data.data_dir()
    monkeypatch.delenv("COMPANION_DATA_DIR")
    with pytest.raises(FileNotFoundError, match="set COMPANION_DATA_DIR"):
        data.data_dir()
    with pytest.raises(FileNotFoundError, match=r"nowhere \(from the data_dir argument\) does not exist"):
        data.data_dir(tmp_path / "nowhere")
    monkeypatch.setenv("COMPANION_DATA_DIR", str(tmp_path / "gone"))
    with pytest.raises(FileNotFoundError, match=r"gone \(from \$COMPANION_DATA_DIR\) does not exist"):
        data.data_dir()


def test_available_and_missing_tasks(tmp_path):
    write(tmp_path / "RTE" / "train.tsv", "")
    write(tmp_path / "RTE" / "dev.tsv", "")
    write(tmp_path / "MNLI" / "train.tsv", "")  # no dev_matched.tsv
    write(tmp_path / "MNLI" / "dev.tsv", "")  # the wrong validation file for MNLI
    write(tmp_path / "SST-2" / "dev.tsv", "")  # no train.tsv
    assert available_tasks(tmp_path) == ["rte"]
    assert missing_tasks(tmp_path) == ["cola", "mnli", "mrpc", "qnli", "qqp", "sst2", "stsb"]


def test_shared_folder_has_the_five_local_tasks(glue_dir):
    have, lack = available_tasks(glue_dir), missing_tasks(glue_dir)
    assert set(LOCAL) <= set(have)
    assert sorted(have + lack) == sorted(TASKS) and not set(have) & set(lack)


# --------------------------------------------------------------------------------------------
# The local files
# --------------------------------------------------------------------------------------------

COUNTS = [  # official GLUE sizes and label counts (index 0, index 1), the paper's tasks
    ("cola", "train", 8551, (2528, 6023)),
    ("cola", "validation", 1043, (322, 721)),  # 322 unacceptable, 721 acceptable
    ("mrpc", "train", 3668, (1194, 2474)),
    ("mrpc", "validation", 408, (129, 279)),
    ("rte", "train", 2490, (1249, 1241)),  # entailment, not_entailment
    ("rte", "validation", 277, (146, 131)),
    ("sst2", "train", 67349, (29780, 37569)),
    ("sst2", "validation", 872, (428, 444)),
    ("stsb", "train", 5749, None),
    ("stsb", "validation", 1500, None),
]


@needs_glue
@pytest.mark.parametrize("task, split, n, label_counts", COUNTS)
def test_row_counts_and_labels(splits, task, split, n, label_counts):
    ex = splits[task, split]
    assert len(ex) == len(ex.text_a) == ex.labels.shape[0] == n
    assert ex.task == task
    assert (ex.text_b is None) == (task in ("cola", "sst2"))
    if ex.text_b is not None:
        assert len(ex.text_b) == n
    if label_counts is None:
        assert ex.labels.dtype == np.float32
        assert 0.0 <= ex.labels.min() and ex.labels.max() <= 5.0
    else:
        assert ex.labels.dtype == np.int64
        assert tuple(np.bincount(ex.labels, minlength=2)) == label_counts
    assert not ex.labels.flags.writeable


@needs_glue
def test_stsb_scores(splits):
    dev = splits["stsb", "validation"]
    assert float(np.mean(dev.labels, dtype=np.float64)) == pytest.approx(2.3639, abs=5e-5)
    assert dev.labels[0] == np.float32(5.0) and dev.labels[1] == np.float32(4.75)
    assert splits["stsb", "train"].labels[1] == np.float32(3.8)


FIRST = [  # the first data row of each file, read by hand
    ("cola", "train", "Our friends won't buy this analysis, let alone the next one we propose.", None, 1),
    ("cola", "validation", "The sailors rode the breeze clear of the rocks.", None, 1),
    ("mrpc", "train",
     'Amrozi accused his brother, whom he called "the witness", of deliberately distorting his evidence.',
     'Referring to him as only "the witness", Amrozi accused his brother of deliberately distorting his evidence.',
     1),
    ("mrpc", "validation",
     "He said the foodservice pie business doesn't fit the company's long-term growth strategy.",
     '"The foodservice pie business does not fit our long-term growth strategy.',  # unbalanced "
     1),
    ("rte", "train", "No Weapons of Mass Destruction Found in Iraq Yet.",
     "Weapons of Mass Destruction Found in Iraq.", 1),  # not_entailment
    ("rte", "validation",
     "Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44, "
     "according to the Christopher Reeve Foundation.",
     "Christopher Reeve had an accident.", 1),
    ("sst2", "train", "hide new secretions from the parental units ", None, 0),  # trailing space kept
    ("sst2", "validation", "it 's a charming and often affecting journey . ", None, 1),
    ("stsb", "train", "A plane is taking off.", "An air plane is taking off.", 5.0),
    ("stsb", "validation", "A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", 5.0),
]


@needs_glue
@pytest.mark.parametrize("task, split, text_a, text_b, label", FIRST)
def test_first_example(splits, task, split, text_a, text_b, label):
    ex = splits[task, split]
    assert ex.text_a[0] == text_a
    assert (ex.text_b[0] if ex.text_b is not None else None) == text_b
    assert ex.labels[0] == label


@needs_glue
@pytest.mark.parametrize("task", LOCAL)
@pytest.mark.parametrize("split", data.SPLITS)
def test_agrees_with_a_plain_split_of_every_line(glue_dir, splits, task, split):
    """An independent reader: split each line on tabs, no csv module, no quoting."""
    spec = TASKS[task]
    raw = (glue_dir / spec.folder / spec.file_name(split)).read_text(encoding="utf-8")
    rows = [line.split("\t") for line in raw.split("\n") if line]
    if spec.has_header:
        header, rows = rows[0], rows[1:]
        header[0] = header[0].removeprefix("\ufeff")
    else:
        header = list(spec.columns)
    cols = [header.index(c) for c in spec.text_columns]
    ex = splits[task, split]
    assert ex.text_a == tuple(r[cols[0]] for r in rows)
    if spec.is_pair:
        assert ex.text_b == tuple(r[cols[1]] for r in rows)
    lab = header.index(spec.label_column)
    if spec.is_regression:
        np.testing.assert_array_equal(ex.labels, np.array([float(r[lab]) for r in rows], np.float32))
    else:
        np.testing.assert_array_equal(ex.labels, [spec.label_values.index(r[lab]) for r in rows])


@needs_glue
def test_mrpc_byte_order_mark_is_stripped(glue_dir, splits):
    assert (glue_dir / "MRPC" / "train.tsv").read_bytes().startswith(b"\xef\xbb\xbfQuality")
    for split in data.SPLITS:
        ex = splits["mrpc", split]
        assert not any("\ufeff" in t for t in ex.text_a + ex.text_b)


@needs_glue
def test_rte_rows_with_leading_quotes_are_intact(splits):
    ex = splits["rte", "train"]
    # Index 2164: the premise starts with ' "' and the hypothesis has a quoted title.
    assert ex.text_a[2164] == (
        " \"That film wasn't too successful, but then 'WarGames,' which was successful, came out "
        "right when I won the Tony for 'Brighton Beach' in 1983."
    )
    assert ex.text_b[2164] == 'The film "WarGames" was shot in 1983.'
    assert ex.labels[2164] == 1  # not_entailment
    # Index 50: a premise starting with a quote that closes mid-text; a quoting reader would
    # swallow tabs and lines here.
    assert ex.text_a[50].startswith('"Instead of action on crime, we got the federal long gun registry')
    assert 'reduce gun crime." said Harper. The Conservatives' in ex.text_a[50]
    assert ex.text_a[50].endswith("tabled the bill killing the long-gun registry.")
    assert ex.text_b[50] == "Garry Breitkreuz is a member of the Conservative Party."
    assert ex.labels[50] == 0  # entailment
    assert not any("\t" in t or "\n" in t for t in ex.text_a + ex.text_b)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_unknown_task_lists_the_eight(tmp_path):
    with pytest.raises(
        ValueError, match="unknown GLUE task 'sst-2'; choose one of cola, mnli, mrpc, qnli, qqp, rte, sst2, stsb"
    ):
        load_split("sst-2", "train", data_dir=tmp_path)


def test_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="unknown split 'test'.*not public"):
        load_split("rte", "test", data_dir=tmp_path)


def test_missing_file_names_the_expected_path(tmp_path):
    write(tmp_path / "RTE" / "train.tsv", "index\tsentence1\tsentence2\tlabel\n")
    expected = tmp_path / "QNLI" / "train.tsv"
    with pytest.raises(FileNotFoundError) as err:
        load_split("qnli", "train", data_dir=tmp_path)
    assert str(err.value) == (
        f"no GLUE data for 'qnli' in {tmp_path} (expected {expected}); "
        "set COMPANION_DATA_DIR or pass online=True"
    )
    with pytest.raises(FileNotFoundError, match=r"expected .*MNLI.dev_matched\.tsv"):
        load_split("mnli", "validation", data_dir=tmp_path)


def test_missing_tasks_of_the_shared_folder_raise(glue_dir):
    lack = missing_tasks(glue_dir)
    if not lack:
        pytest.skip(f"all eight GLUE tasks are present in {glue_dir}")
    for name in lack:
        with pytest.raises(FileNotFoundError, match=f"no GLUE data for '{name}' in "):
            load_split(name, "train", data_dir=glue_dir)


def test_no_data_dir_at_all(monkeypatch):
    monkeypatch.delenv("COMPANION_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="set COMPANION_DATA_DIR"):
        load_split("rte", "train")


def test_environment_variable_is_used(tmp_path, monkeypatch):
    write(tmp_path / "SST-2" / "dev.tsv", "sentence\tlabel\ngood \t1\nbad \t0\n")
    monkeypatch.setenv("COMPANION_DATA_DIR", str(tmp_path))
    ex = load_split("sst2", "validation")
    assert ex.text_a == ("good ", "bad ") and ex.labels.tolist() == [1, 0]


RTE_HEADER = "index\tsentence1\tsentence2\tlabel\n"
STSB_HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
STSB_ROW = "0\tg\tf\t2012\t0001\tnone\tnone\tA b.\tC d.\t{}\n"

MALFORMED = [
    # task, folder/file, content, message (regex after the file name)
    ("rte", "RTE/train.tsv", RTE_HEADER + "0\ta\tb\tentailment\n1\ta\tb\n",
     r", line 3: expected 4 tab-separated fields \(RTE layout\), got 3"),
    ("rte", "RTE/train.tsv", RTE_HEADER + "0\ta\tb\tentailment\n\n1\ta\tb\tentailment\n",
     r", line 3: expected 4 tab-separated fields \(RTE layout\), got 0"),  # blank line
    ("cola", "CoLA/train.tsv", "gj04\t1\t\tA b.\ngj04\t0\t*\tC d.\textra\n",
     r", line 2: expected 4 tab-separated fields \(CoLA layout\), got 5"),
    ("rte", "RTE/train.tsv", RTE_HEADER + "0\ta\tb\tentailment\n1\ta\tb\tneutral\n",
     r", line 3: unknown label 'neutral' in column 'label'; expected one of "
     r"\['entailment', 'not_entailment'\]"),
    ("cola", "CoLA/train.tsv", "gj04\t2\t\tA b.\n",
     r", line 1: unknown label '2' in column 'label'; expected one of \['0', '1'\]"),
    ("cola", "CoLA/train.tsv", "source\tlabel\toriginal\tsentence\n",  # a header CoLA lacks
     r", line 1: unknown label 'label'"),
    ("sst2", "SST-2/train.tsv", "sentence\tlabel\ngood \t1\nbad \tpositive\n",
     r", line 3: unknown label 'positive'"),
    ("stsb", "STS-B/train.tsv", STSB_HEADER + STSB_ROW.format("5.000") + STSB_ROW.format("n/a"),
     r", line 3: unparsable score 'n/a'; expected a number"),
    ("stsb", "STS-B/train.tsv", STSB_HEADER + STSB_ROW.format("5.5"), r", line 2: score '5.5' outside \[0, 5\]"),
    ("stsb", "STS-B/train.tsv", STSB_HEADER + STSB_ROW.format("nan"), r", line 2: score 'nan' outside \[0, 5\]"),
    ("sst2", "SST-2/train.tsv", "text\tlabel\ngood\t1\n",
     r", line 1: header lacks column\(s\) \['sentence'\] of SST-2"),
    ("sst2", "SST-2/train.tsv", "sentence\tlabel\n", r": no examples"),
    ("sst2", "SST-2/train.tsv", "", r": empty file; expected a SST-2 header line"),
]


@pytest.mark.parametrize("task, rel, content, message", MALFORMED)
def test_malformed_files_name_file_and_line(tmp_path, task, rel, content, message):
    path = write(tmp_path / rel, content)
    with pytest.raises(ValueError, match=r"^" + re.escape(str(path)) + message):
        load_split(task, "train", data_dir=tmp_path)


def test_read_tsv_reads_a_file_anywhere(tmp_path):
    path = write(tmp_path / "x.tsv", "\ufeff" + RTE_HEADER + '7\t"Quoted\tplain\tnot_entailment\n')
    ex = read_tsv("rte", path)
    assert ex.text_a == ('"Quoted',) and ex.text_b == ("plain",) and ex.labels.tolist() == [1]


# --------------------------------------------------------------------------------------------
# Examples and the hub mapping (no network)
# --------------------------------------------------------------------------------------------


def test_examples_checks_and_select():
    ex = Examples(text_a=("a", "b", "c"), text_b=("x", "y", "z"), labels=np.array([0, 1, 1]), task="rte")
    sub = ex.select([2, 0, 2])
    assert sub.text_a == ("c", "a", "c") and sub.text_b == ("z", "x", "z")
    assert sub.labels.tolist() == [1, 0, 1] and sub.labels.dtype == np.int64
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 3\)"):
        ex.select([3])
    with pytest.raises(ValueError, match="text_b is required"):
        Examples(text_a=("a",), text_b=None, labels=np.array([0]), task="rte")
    with pytest.raises(ValueError, match="text_b must be None"):
        Examples(text_a=("a",), text_b=("b",), labels=np.array([0]), task="sst2")
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
        Examples(text_a=("a",), text_b=("b",), labels=np.array([3]), task="mnli")
    with pytest.raises(ValueError, match="integer class indices"):
        Examples(text_a=("a",), text_b=None, labels=np.array([0.5]), task="cola")
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        Examples(text_a=("a", "b"), text_b=None, labels=np.array([0]), task="cola")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ex.task = "mnli"  # type: ignore[misc]


HUB = [
    ("mnli", [{"premise": "P0", "hypothesis": "H0", "label": 0, "idx": 0},
              {"premise": "P1", "hypothesis": "H1", "label": 1, "idx": 1},
              {"premise": "P2", "hypothesis": "H2", "label": 2, "idx": 2}],
     ("P0", "P1", "P2"), ("H0", "H1", "H2"), [0, 1, 2]),
    ("qnli", [{"question": "Q?", "sentence": "S.", "label": 1, "idx": 0}], ("Q?",), ("S.",), [1]),
    ("mrpc", [{"sentence1": "a", "sentence2": "b", "label": 1, "idx": 0}], ("a",), ("b",), [1]),
    ("qqp", [{"question1": "a?", "question2": "b?", "label": 0, "idx": 0}], ("a?",), ("b?",), [0]),
    ("cola", [{"sentence": "A b.", "label": 1, "idx": 0}], ("A b.",), None, [1]),
    ("sst2", [{"sentence": "good ", "label": 0, "idx": 0}], ("good ",), None, [0]),
    ("stsb", [{"sentence1": "a", "sentence2": "b", "label": 3.8, "idx": 0}], ("a",), ("b",), [3.8]),
]


@pytest.mark.parametrize("task, records, text_a, text_b, labels", HUB)
def test_hub_records_map_to_examples(task, records, text_a, text_b, labels):
    ex = from_hub_records(task, records)
    assert ex.task == task and ex.text_a == text_a and ex.text_b == text_b
    np.testing.assert_array_equal(ex.labels, np.array(labels, dtype=ex.labels.dtype))
    assert ex.labels.dtype == (np.float32 if task == "stsb" else np.int64)


def test_hub_mnli_labels_are_the_tsv_classes():
    # The hub encodes entailment 0, neutral 1, contradiction 2: the tsv reader's indices.
    assert TASKS["mnli"].label_names == ("entailment", "neutral", "contradiction")
    ex = from_hub_records("mnli", HUB[0][1])
    assert [TASKS["mnli"].label_names[i] for i in ex.labels] == ["entailment", "neutral", "contradiction"]


@pytest.mark.parametrize(
    "task, records, message",
    [
        ("rte", [{"sentence1": "a", "sentence2": "b", "label": 0},
                 {"sentence1": "a", "sentence2": "b", "label": -1}],
         r"rows, row 1: label -1 is not a class index in \[0, 2\).*test-split rows carry -1"),
        ("mnli", [{"sentence1": "a", "sentence2": "b", "label": 0}],
         r"row 0: missing column\(s\) \['premise', 'hypothesis'\] of hub config 'mnli'"),
        ("stsb", [{"sentence1": "a", "sentence2": "b", "label": 7.0}], r"row 0: score 7.0 outside \[0, 5\]"),
        ("cola", [{"sentence": None, "label": 0}], r"row 0: column 'sentence' holds None, not text"),
        ("cola", [], "no rows"),
    ],
)
def test_hub_records_errors(task, records, message):
    with pytest.raises(ValueError, match=message):
        from_hub_records(task, records, source="rows")


@pytest.fixture
def fake_hub(monkeypatch):
    """A fake hf_hub_download and pyarrow that serve hub-style rows without any network."""
    import huggingface_hub

    calls: list[dict] = []
    rows = {
        "qnli/train-00000-of-00001.parquet": [{"question": "Q?", "sentence": "S.", "label": 0}],
        "mnli/validation_matched-00000-of-00001.parquet":
            [{"premise": "P", "hypothesis": "H", "label": 2}],
        "stsb/validation-00000-of-00001.parquet": [{"sentence1": "a", "sentence2": "b", "label": 1.5}],
    }

    def hf_hub_download(**kwargs):
        calls.append(kwargs)
        return kwargs["filename"]  # the "local path" the fake parquet reader understands

    class Table:
        def __init__(self, records):
            self.records = records

        def to_pylist(self):
            return self.records

    parquet = types.ModuleType("pyarrow.parquet")
    parquet.read_table = lambda path, columns=None: Table(  # type: ignore[attr-defined]
        [{c: r[c] for c in columns} for r in rows[path]]
    )
    pyarrow = types.ModuleType("pyarrow")
    pyarrow.parquet = parquet  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pyarrow", pyarrow)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", parquet)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    return calls


@pytest.mark.parametrize(
    "task, split, filename, text_a, label",
    [
        ("qnli", "train", "qnli/train-00000-of-00001.parquet", "Q?", 0),
        ("mnli", "validation", "mnli/validation_matched-00000-of-00001.parquet", "P", 2),
        ("stsb", "validation", "stsb/validation-00000-of-00001.parquet", "a", 1.5),
    ],
)
def test_online_path_only_when_the_file_is_missing(
    tmp_path, fake_hub, task, split, filename, text_a, label
):
    ex = load_split(task, split, data_dir=tmp_path, online=True)
    assert fake_hub == [{"repo_id": "nyu-mll/glue", "repo_type": "dataset", "filename": filename}]
    assert ex.task == task and ex.text_a == (text_a,) and ex.labels[0] == label


def test_online_path_without_a_data_dir(monkeypatch, fake_hub):
    monkeypatch.delenv("COMPANION_DATA_DIR", raising=False)
    assert load_split("qnli", "train", online=True).text_b == ("S.",)
    assert len(fake_hub) == 1


def test_local_file_wins_over_online(tmp_path, fake_hub):
    write(tmp_path / "QNLI" / "train.tsv", "index\tquestion\tsentence\tlabel\n0\tq\ts\tnot_entailment\n")
    ex = load_split("qnli", "train", data_dir=tmp_path, online=True)
    assert ex.text_a == ("q",) and ex.labels.tolist() == [1]
    assert fake_hub == []  # no download


def test_online_path_needs_pyarrow(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` fail
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match="pip install pyarrow"):
        load_split("qnli", "train", data_dir=tmp_path, online=True)


def test_majority_score_is_the_constant_answers_main_metric():
    """Accuracy: the majority class's share (ties go to the lower class); Matthews: 0; STS-B: None."""
    two_thirds = Examples(("a", "b", "c"), ("x", "y", "z"), np.array([1, 1, 0]), "mrpc")
    assert data.majority_score(two_thirds) == pytest.approx(2 / 3, abs=1e-15)
    tie = Examples(("a", "b"), ("x", "y"), np.array([1, 0]), "rte")
    assert data.majority_score(tie) == 0.5
    assert data.majority_score(Examples(("a", "b", "c"), None, np.array([1, 1, 0]), "cola")) == 0.0
    assert data.majority_score(Examples(("a",), ("b",), np.array([3.5], np.float32), "stsb")) is None
    with pytest.raises(ValueError, match="no examples"):
        data.majority_score(Examples((), (), np.array([], np.int64), "mrpc"))


@needs_glue
@pytest.mark.parametrize("task, majority", [("mrpc", 279 / 408), ("rte", 146 / 277), ("sst2", 444 / 872)])
def test_majority_score_of_the_validation_splits(splits, task, majority):
    """The floors chapter 8 draws: always "paraphrase" scores 279 of MRPC's 408 validation pairs."""
    assert data.majority_score(splits[(task, "validation")]) == pytest.approx(majority, abs=1e-15)
