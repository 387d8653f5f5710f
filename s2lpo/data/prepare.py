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
    # data_source as DAPO-Math-17k ships it: verl routes math_dapo rows to its DAPO scorer (our ``dapo`` reward)
    "dapo_math": Dataset("dapo_math", "math_dapo", "math", "dapo", "train"),
    "aime24": Dataset("aime24", "aime24", "math", "math", "test"),
    "aime25": Dataset("aime25", "aime25", "math", "math", "test"),
    "math500": Dataset("math500", "math500", "math", "math", "test"),
    "csqa": Dataset("csqa", "csqa", "commonsense", "mcq", "validation"),
    "toy": Dataset("toy", "toy", "arithmetic", "toy_arith", "test"),  # written by toy_rows, not read from files
}


BY_SOURCE = {d.data_source: d for d in DATASETS.values()}


def reward_for_source(data_source: str) -> str:
    """The reward registry's name for a row's ``data_source`` (``math`` for sources we did not prepare)."""
    ds = BY_SOURCE.get(str(data_source))
    return ds.reward if ds else "math"


def toy_rows(problems, split: str = "test") -> list[dict]:
    """The toy task's problems in the same schema (evaluation files for the toy family)."""
    return [{"data_source": "toy", "prompt": _messages(p.prompt), "ability": "arithmetic",
             "reward_model": {"style": "rule", "ground_truth": str(p.answer)}, "extra_info": {"split": split, "index": i},
             "reference_solution": p.solution} for i, p in enumerate(problems)]


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}); is it the right file?") from None


def read_rows(path: Path) -> list[dict]:
    """The rows of a dataset file; one DataError naming the file (and the 1-based line or row) otherwise."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file; put a local copy of the dataset there (nothing is downloaded)")
    if path.is_dir():
        raise DataError(f"{path}: is a directory; pass the dataset file itself (.parquet, .jsonl or .json)")
    if path.suffix not in (".parquet", ".jsonl", ".json"):
        raise DataError(f"{path}: unknown file type {path.suffix!r}; use .parquet, .jsonl or .json")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty; download or copy it again")
    if path.suffix == ".parquet":
        try:
            rows = pq.read_table(path).to_pylist()
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{path}: not a readable parquet file ({str(e).strip().splitlines()[0]}); "
                            "download or copy it again") from None
    elif path.suffix == ".jsonl":
        rows = []
        for i, line in enumerate(_text(path).splitlines()):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}: line {i + 1} is not JSON ({e.msg})") from None
    else:
        try:
            data = json.loads(_text(path))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not JSON ({e.msg}, line {e.lineno})") from None
        if isinstance(data, dict):
            data = data.get("data", data.get("rows"))
        if not isinstance(data, list):
            raise DataError(f"{path}: holds {type(data).__name__ if data is not None else 'no rows'}; expected a list "
                            "of rows (objects), or {\"data\": [...]}")
        rows = data
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise DataError(f"{path}: row {i + 1} is a {type(r).__name__}, not an object with the dataset's columns")
    return rows


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
            msgs, rm = row["prompt"], row.get("reward_model")
            if not (isinstance(msgs, list) and msgs and all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                                            and m.get("role") for m in msgs)):
                raise DataError(f"{path}: row {i + 1}: prompt must be a list of messages with role and content "
                                f"(got {str(msgs)[:60]!r}); fix or drop that row")
            if not isinstance(rm, dict):
                raise DataError(f"{path}: row {i + 1}: reward_model is a {type(rm).__name__}; expected "
                                "{ground_truth: ...}")
            question = msgs[-1]["content"]
            truth = rm.get("ground_truth")
            if question in seen:  # DAPO-Math-17k repeats each question many times
                continue
            prompt = [{"role": m["role"], "content": m["content"]} for m in msgs] if question else None
            ref = _first(row, "solution", "reference_solution")
        elif name == "csqa":
            if not {"question", "choices", "answerKey"} <= cols:
                raise DataError(f"{path}: not the CommonsenseQA layout (columns {sorted(cols)}; expected question, "
                                "choices, answerKey)")
            question, truth = row.get("question"), row.get("answerKey")
            ch = row.get("choices") or {}
            if not isinstance(ch, dict) or truth not in (ch.get("label") or []):
                raise DataError(f"{path}: row {i + 1}: answerKey {truth!r} is not one of its choices' labels "
                                f"{(ch.get('label') if isinstance(ch, dict) else None)!r}; fix or drop that row")
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
            raise DataError(f"{path}: row {i + 1} has no question; fix or drop that row")
        if truth is None or str(truth).strip() == "":
            raise DataError(f"{path}: row {i + 1} has no answer; fix or drop that row")
        if not isinstance(truth, str | int | float) or isinstance(truth, bool):
            raise DataError(f"{path}: row {i + 1}: the answer is a {type(truth).__name__} ({str(truth)[:40]}); expected "
                            "a string or a number")
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


_DAPO_HEAD = "Solve the following math problem step by step."
_DAPO_TAIL = "\n\nRemember to put your answer on its own line after"


def question_key(text: str) -> str:
    """A question as solution files name it: DAPO-Math-17k's instruction wrapper removed, whitespace collapsed."""
    text = str(text)
    if text.startswith(_DAPO_HEAD) and "\n\n" in text:
        text = text.split("\n\n", 1)[1]
    if _DAPO_TAIL in text:
        text = text[: text.rindex(_DAPO_TAIL)]
    return " ".join(text.split())


def join_solutions(rows: list[dict], path: Path) -> tuple[list[dict], int]:
    """Give every row the solution its question has in ``path`` (columns ``problem``/``question``/``prompt`` and
    ``solution``/``reference_solution``, any layout ``read_rows`` reads); rows left without one are dropped,
    G²RPO-A cannot guide them. Returns (rows kept, rows dropped)."""
    sols = read_rows(path)
    table: dict[str, str] = {}
    for i, r in enumerate(sols):
        q = _first(r, "problem", "Problem", "question", "Question", "prompt")
        s = _first(r, "solution", "Solution", "reference_solution")
        if isinstance(q, list) and q:  # chat messages
            q = q[-1].get("content")
        if q is None or s is None:
            raise DataError(f"{path}: row {i + 1} needs a question (problem/question/prompt) and a solution "
                            f"(solution/reference_solution); columns are {sorted(r)}")
        table[question_key(q)] = str(s)
    kept = []
    for r in rows:
        ref = r.get("reference_solution") or table.get(question_key(r["prompt"][-1]["content"]))
        if ref:
            kept.append({**r, "reference_solution": ref, "extra_info": {**r["extra_info"], "index": len(kept)}})
    return kept, len(rows) - len(kept)


def prepare(name: str, src: Path, out_dir: Path, split: str | None = None,
            solutions: Path | None = None) -> tuple[Path, int, int]:
    """Convert one dataset file (joining reference solutions from ``solutions`` by question text, rows without
    one dropped); returns (output path, rows read, rows written)."""
    rows = read_rows(src)
    converted = convert(name, rows, src, split)
    if solutions is not None:
        converted, _ = join_solutions(converted, solutions)
        if not converted:
            raise DataError(f"{solutions}: no question of {src} has a solution there; check that both files "
                            "hold the same questions")
    ds = DATASETS[name]
    path = write_parquet(converted, Path(out_dir) / name / f"{split or ds.default_split}.parquet")
    return path, len(rows), len(converted)


def load_prepared(path: Path) -> list[dict]:
    """Rows of a prepared file (verl schema)."""
    return pq.read_table(path).to_pylist()
