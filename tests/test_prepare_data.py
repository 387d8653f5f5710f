"""Fixture files in each public dataset's layout round-trip to verl's schema; bad input is named."""

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from s2lpo.data.prepare import DataError, load_prepared, prepare
from s2lpo.rewards import get_reward_fn
from s2lpo_testing import ROOT

DAPO_PROMPT = ("Solve the following math problem step by step. The last line of your response should be of the "
               "form Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n{q}\n\n"
               "Remember to put your answer on its own line after \"Answer:\".")


def write(path, rows):
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture
def fixtures(tmp_path):
    dapo = [{"data_source": "math_dapo", "prompt": [{"role": "user", "content": DAPO_PROMPT.format(q=q)}],
             "ability": "MATH", "reward_model": {"ground_truth": a, "style": "rule-lighteval/MATH_v2"},
             "extra_info": {"index": str(i)}} for i, (q, a) in enumerate([("What is 1+1?", "2"), ("What is 2+3?", "5"),
                                                                           ("What is 1+1?", "2"), ("Half of 1?", "1/2")])]
    aime24 = [{"ID": "2024-I-1", "Problem": "Find $x$ if $x+1=205$.", "Solution": "Subtract: $x=204$.",
               "Answer": 204}]
    aime25 = [{"id": 0, "problem": "Compute $2^5$.", "answer": "32"}]
    math500 = [{"problem": "What is $\\frac{1}{2}+\\frac{1}{4}$?", "solution": "$\\boxed{\\frac34}$",
                "answer": "\\frac{3}{4}", "subject": "Algebra", "level": 1, "unique_id": "test/algebra/1.json"}]
    csqa = [{"id": "q1", "question": "Where do you keep milk?", "question_concept": "milk",
             "choices": {"label": ["A", "B", "C", "D", "E"], "text": ["fridge", "oven", "shelf", "car", "roof"]},
             "answerKey": "A"}]
    return {"dapo_math": write(tmp_path / "dapo.parquet", dapo), "aime24": write(tmp_path / "aime24.parquet", aime24),
            "aime25": write(tmp_path / "aime25.jsonl", aime25), "math500": write(tmp_path / "math500.jsonl", math500),
            "csqa": write(tmp_path / "csqa.parquet", csqa)}


def test_every_layout_round_trips_to_the_verl_schema(fixtures, tmp_path):
    out = {}
    for name, src in fixtures.items():
        path, read, written = prepare(name, src, tmp_path / "out")
        out[name] = load_prepared(path)
        for i, row in enumerate(out[name]):
            assert set(row) == {"data_source", "prompt", "ability", "reward_model", "extra_info", "reference_solution"}
            # DAPO-Math-17k keeps its own data_source: verl scores math_dapo rows with its DAPO scorer
            assert row["data_source"] == ("math_dapo" if name == "dapo_math" else name)
            assert row["prompt"][0]["role"] == "user"
            assert row["reward_model"]["style"] == "rule" and row["extra_info"]["index"] == i
    assert [r["reward_model"]["ground_truth"] for r in out["dapo_math"]] == ["2", "5", "1/2"]  # deduplicated
    assert out["dapo_math"][0]["prompt"][0]["content"].endswith("after \"Answer:\".")
    assert out["dapo_math"][0]["extra_info"]["split"] == "train" and out["aime24"][0]["extra_info"]["split"] == "test"
    a24 = out["aime24"][0]
    assert a24["reward_model"]["ground_truth"] == "204" and a24["reference_solution"] == "Subtract: $x=204$."
    assert a24["prompt"][0]["content"].startswith("Find $x$") and "\\boxed{}" in a24["prompt"][0]["content"]
    assert out["aime25"][0]["reference_solution"] is None
    assert out["math500"][0]["reference_solution"] == "$\\boxed{\\frac34}$"
    c = out["csqa"][0]
    assert "A. fridge\nB. oven" in c["prompt"][0]["content"] and c["reward_model"]["ground_truth"] == "A"
    assert c["ability"] == "commonsense" and c["extra_info"]["split"] == "validation"
    # the rewards score the prepared ground truths
    assert get_reward_fn("math")("... \\boxed{0.75}", out["math500"][0]["reward_model"]["ground_truth"]) == 1.0
    assert get_reward_fn("math")("x\nAnswer: 0.5", out["dapo_math"][2]["reward_model"]["ground_truth"]) == 1.0
    assert get_reward_fn("mcq")("Answer: A", c["reward_model"]["ground_truth"]) == 1.0


def test_bad_input_names_the_file_and_row(fixtures, tmp_path):
    with pytest.raises(DataError, match=r"nope.parquet: no such file"):
        prepare("aime24", tmp_path / "nope.parquet", tmp_path / "out")
    with pytest.raises(DataError, match=r"not the CommonsenseQA layout"):
        prepare("csqa", fixtures["aime24"], tmp_path / "out")
    bad = write(tmp_path / "bad.jsonl", [{"problem": "ok", "answer": "1"}, {"problem": "no answer", "answer": ""}])
    with pytest.raises(DataError, match=r"bad.jsonl: row 2 has no answer"):  # rows are counted from 1
        prepare("math500", bad, tmp_path / "out")
    with pytest.raises(DataError, match="unknown dataset 'gsm8k'"):
        prepare("gsm8k", bad, tmp_path / "out")


def test_the_command_line(fixtures, tmp_path):
    cmd = [sys.executable, str(ROOT / "experiments/prepare_data.py"), "dapo_math", str(fixtures["dapo_math"]),
           "--out", str(tmp_path / "o")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "4 rows read, 3 written" in done.stderr and "(1 duplicate questions dropped)" in done.stderr
    bad = subprocess.run([*cmd[:3], str(tmp_path / "missing.parquet")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "missing.parquet: no such file" in bad.stderr
    # a path is printed as it is: console markup in it ("[/x]") once raised rich's MarkupError, a traceback
    (tmp_path / "d[/x]").mkdir(parents=True)
    (tmp_path / "d[/x]" / "in.json").write_text("{")
    odd = subprocess.run([*cmd[:3], str(tmp_path / "d[/x]" / "in.json")], capture_output=True, text=True, timeout=120)
    assert odd.returncode == 2 and "d[/x]/in.json: not JSON" in odd.stderr and "Traceback" not in odd.stderr, odd.stderr


def test_guided_runs_need_solutions_and_prepare_joins_them(fixtures, tmp_path):
    """DAPO-Math-17k has no solutions: a G²RPO-A run on it is refused before anything loads, naming the file and
    the fix; ``--solutions`` joins them by question text (DAPO's instruction wrapper ignored) and drops the rest."""
    from s2lpo.config.validate import ConfigError, validate
    from s2lpo_testing import make_cfg

    plain, _, _ = prepare("dapo_math", fixtures["dapo_math"], tmp_path / "plain")
    guided = ["algorithm=g2rpo_a", "explorer=none", "data=dapo_math", "data.prompts_per_step=1", "data.max_new_tokens=32"]
    with pytest.raises(ConfigError) as e:
        validate(make_cfg(tmp_path, *guided, f"data.train_file={plain}"))
    assert [p for p in e.value.problems if "reference solution" in p] == [
        f"algorithm.guidance needs a reference solution for every training row but 3 of 3 rows of {plain} have "
        "none; join solutions by question text: python experiments/prepare_data.py <dataset> <file> --solutions "
        "<file with question and solution columns> (rows left without one are dropped), or prepare a dataset that "
        "has them (MATH-style solution)"]
    sols = write(tmp_path / "sols.jsonl", [{"problem": " What is 1+1? ", "solution": "1 + 1 = 2."},
                                           {"question": "Half of 1?", "solution": "It is 1/2."}])
    path, read, written = prepare("dapo_math", fixtures["dapo_math"], tmp_path / "joined", solutions=sols)
    rows = load_prepared(path)
    assert (read, written) == (4, 2) and [r["reference_solution"] for r in rows] == ["1 + 1 = 2.", "It is 1/2."]
    assert [r["extra_info"]["index"] for r in rows] == [0, 1]
    validate(make_cfg(tmp_path, *guided, f"data.train_file={path}"))  # every row can be guided
    with pytest.raises(DataError, match="needs a question .* and a solution"):
        prepare("dapo_math", fixtures["dapo_math"], tmp_path / "bad",
                solutions=write(tmp_path / "bad.jsonl", [{"problem": "What is 1+1?"}]))


def _dapo_row(**kw):
    row = {"data_source": "math_dapo", "prompt": [{"role": "user", "content": "What is 1+1?"}], "ability": "MATH",
           "reward_model": {"ground_truth": "2", "style": "rule"}, "extra_info": {"index": "0"}}
    return {**row, **kw}


@pytest.mark.parametrize(("name", "content", "message"), [
    ("dapo_math", b"", "the file is empty"),
    ("dapo_math", b"PAR1 garbage", "not a readable parquet file"),
    ("aime25", b"\xff\xfe\x00garbage", "not UTF-8 text (byte 0)"),
    ("aime25", "5", "holds int; expected a list of rows"),
    ("aime25", '{"problem": "x"', "not JSON"),
    ("aime25", "[1, 2]", "row 1 is a int, not an object"),
    ("dapo_math", [_dapo_row(reward_model="2")], "row 1: reward_model is a str; expected {ground_truth"),
    ("dapo_math", [_dapo_row(), _dapo_row(prompt=[{"role": "user"}])], "row 2: prompt must be a list of messages"),
    ("aime25", [{"problem": "x", "answer": {"value": 3}}], "row 1: the answer is a dict"),
    ("csqa", [{"id": "q", "question": "Where?", "answerKey": "Z",
               "choices": {"label": ["A", "B"], "text": ["here", "there"]}}], "row 1: answerKey 'Z' is not one of"),
])
def test_every_malformed_input_is_one_error_naming_file_and_row(tmp_path, name, content, message):
    suffix = {"dapo_math": ".parquet", "aime25": ".json", "csqa": ".jsonl"}[name]
    if isinstance(content, list):
        path = write(tmp_path / f"in{suffix}", content) if suffix != ".json" else tmp_path / "in.json"
        if suffix == ".json":
            path.write_text(json.dumps(content))
    else:
        path = tmp_path / f"in{suffix}"
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(DataError) as e:
        prepare(name, path, tmp_path / "out")
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value), str(e.value)
    assert not (tmp_path / "out").exists()  # nothing written on error
    with pytest.raises(DataError, match="is a directory"):
        prepare(name, tmp_path, tmp_path / "out")
