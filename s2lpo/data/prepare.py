"""Public datasets (local copies in their usual Hugging Face layouts) → verl's parquet schema.

Every output row has ``data_source``, ``prompt`` (chat messages), ``ability``,
``reward_model: {style: rule, ground_truth}``, ``extra_info: {split, index}`` and, where the source has
one, ``reference_solution`` (G²RPO-A's guidance). Nothing is downloaded.

Input layouts (``.parquet``, ``.jsonl`` or ``.json``; detected by their columns):

=============  ==========================================================================================
dapo_math      BytedTsinghua-SIA/DAPO-Math-17k: ``prompt`` (messages), ``reward_model.ground_truth``
               (+ ``data_source``, ``ability``, ``extra_info``); deduplicated by question text
aime24         Maxwell-Jia/AIME_2024: ``ID, Problem, Solution, Answer``
aime25         opencompass/AIME2025 / yentinglin/aime_2025: ``problem`` or ``question``, ``answer``
math500        HuggingFaceH4/MATH-500: ``problem, solution, answer, subject, level, unique_id``
csqa           tau/commonsense_qa: ``id, question, question_concept, choices{label,text}, answerKey``
=============  ==========================================================================================
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

MATH_SUFFIX = "\n\nPlease reason step by step, and put your final answer within \\boxed{}."
CSQA_SUFFIX = "\n\nAnswer with the letter of the correct choice, in the form \"Answer: X\"."


class DataError(ValueError):
    pass


@dataclass(frozen=True)
class Dataset:
    name: str
    data_source: str
    ability: str
    reward: str  # the reward registry's name for it
    default_split: str


DATASETS = {
    "dapo_math": Dataset("dapo_math", "dapo_math", "math", "math", "train"),
    "aime24": Dataset("aime24", "aime24", "math", "math", "test"),
    "aime25": Dataset("aime25", "aime25", "math", "math", "test"),
    "math500": Dataset("math500", "math500", "math", "math", "test"),
    "csqa": Dataset("csqa", "csqa", "commonsense", "mcq", "validation"),
    "toy": Dataset("toy", "toy", "arithmetic", "toy_arith", "test"),  # written by toy_rows, not read from files
}


def toy_rows(problems, split: str = "test") -> list[dict]:
    """The toy task's problems in the same schema (evaluation files for the toy family)."""
    return [{"data_source": "toy", "prompt": _messages(p.prompt), "ability": "arithmetic",
             "reward_model": {"style": "rule", "ground_truth": str(p.answer)}, "extra_info": {"split": split, "index": i},
             "reference_solution": p.solution} for i, p in enumerate(problems)]


def read_rows(path: Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file; put a local copy of the dataset there (nothing is downloaded)")
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if path.suffix == ".jsonl":
        rows = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}: line {i + 1} is not JSON ({e.msg})") from None
        return rows
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, list) else data.get("data", data.get("rows", []))
    raise DataError(f"{path}: unknown file type {path.suffix!r}; use .parquet, .jsonl or .json")


def _first(row: dict, *names: str):
    for n in names:
        if n in row and row[n] not in (None, ""):
            return row[n]
    return None


def _messages(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def convert(name: str, rows: list[dict], path: Path, split: str | None = None) -> list[dict]:
    """Rows of one dataset's layout → verl rows (raises DataError naming the file and row)."""
    if name not in DATASETS or name == "toy":
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(d for d in DATASETS if d != 'toy')}")
    ds = DATASETS[name]
    split = split or ds.default_split
    if not rows:
        raise DataError(f"{path}: no rows")
    cols = set(rows[0])
    out: list[dict] = []
    seen: set[str] = set()
    for i, row in enumerate(rows):
        ref = None
        if name == "dapo_math":
            if not {"prompt", "reward_model"} <= cols:
                raise DataError(f"{path}: not the DAPO-Math-17k layout (columns {sorted(cols)}; expected prompt, "
                                "reward_model)")
            msgs = row["prompt"]
            question = msgs[-1]["content"] if isinstance(msgs, list) and msgs else None
            truth = (row.get("reward_model") or {}).get("ground_truth")
            if question in seen:  # DAPO-Math-17k repeats each question many times
                continue
            prompt = [{"role": m["role"], "content": m["content"]} for m in msgs] if question else None
        elif name == "csqa":
            if not {"question", "choices", "answerKey"} <= cols:
                raise DataError(f"{path}: not the CommonsenseQA layout (columns {sorted(cols)}; expected question, "
                                "choices, answerKey)")
            question, truth = row.get("question"), row.get("answerKey")
            ch = row.get("choices") or {}
            options = "\n".join(f"{lab}. {txt}" for lab, txt in zip(ch.get("label", []), ch.get("text", [])))
            prompt = _messages(f"{question}\n\n{options}{CSQA_SUFFIX}") if question else None
        else:
            question = _first(row, "Problem", "problem", "question", "Question")
            truth = _first(row, "Answer", "answer")
            if question is None and i == 0:
                raise DataError(f"{path}: not a {name} layout (columns {sorted(cols)}; expected problem/Problem/"
                                "question and answer/Answer)")
            ref = _first(row, "Solution", "solution")
            prompt = _messages(f"{question}{MATH_SUFFIX}") if question else None
        if question is None or prompt is None:
            raise DataError(f"{path}: row {i} has no question; fix or drop that row")
        if truth is None or str(truth).strip() == "":
            raise DataError(f"{path}: row {i} has no answer; fix or drop that row")
        seen.add(question)
        out.append({"data_source": ds.data_source, "prompt": prompt, "ability": ds.ability,
                    "reward_model": {"style": "rule", "ground_truth": str(truth).strip()},
                    "extra_info": {"split": split, "index": len(out)},
                    "reference_solution": None if ref is None else str(ref)})
    return out


def write_parquet(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    tmp.replace(path)
    return path


def prepare(name: str, src: Path, out_dir: Path, split: str | None = None) -> tuple[Path, int, int]:
    """Convert one dataset file; returns (output path, rows read, rows written)."""
    rows = read_rows(src)
    converted = convert(name, rows, src, split)
    ds = DATASETS[name]
    path = write_parquet(converted, Path(out_dir) / name / f"{split or ds.default_split}.parquet")
    return path, len(rows), len(converted)


def load_prepared(path: Path) -> list[dict]:
    """Rows of a prepared file (verl schema)."""
    return pq.read_table(path).to_pylist()
