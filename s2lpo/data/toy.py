"""A synthetic reasoning task with verifiable answers where a short worked solution helps.

Problems are integer expressions over single digits, e.g. ``Q: 7-3*5+2=?``, solved with explicit
steps (multiplications first, then left to right)::

    Q: 7-3*5+2=? 3*5=15, 7-15=-8, -8+2=-6. #### -6

Everything is a pure function of a seed, so every run and test sees the same problems.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

ANSWER_MARK = "####"


@dataclass(frozen=True)
class Problem:
    uid: str
    prompt: str
    solution: str  # reference completion, guidance prefixes are cut from it
    answer: int


def _solve(nums: list[int], ops: list[str]) -> tuple[list[str], int]:
    nums, ops, steps = list(nums), list(ops), []
    while "*" in ops:
        i = ops.index("*")
        v = nums[i] * nums[i + 1]
        steps.append(f"{nums[i]}*{nums[i + 1]}={v}")
        nums[i : i + 2], ops[i : i + 1] = [v], []
    acc = nums[0]
    for op, b in zip(ops, nums[1:]):
        v = acc + b if op == "+" else acc - b
        steps.append(f"{acc}{op}{b}={v}")
        acc = v
    return steps, acc


def _left_to_right(nums: list[int], ops: list[str]) -> tuple[list[str], int]:
    acc, steps = nums[0], []
    for op, b in zip(ops, nums[1:]):
        v = acc * b if op == "*" else acc + b if op == "+" else acc - b
        steps.append(f"{acc}{op}{b}={v}")
        acc = v
    return steps, acc


def _operands(problem: Problem) -> tuple[list[int], list[str]]:
    tokens = re.findall(r"\d+|[+*-]", problem.uid)
    return [int(t) for t in tokens[::2]], tokens[1::2]


def left_to_right(problem: Problem) -> Problem:
    """The problem with a misconceived worked solution: every step left to right, products not first
    (``7-3*5+2``: ``7-3=4, 4*5=20, 20+2=22. #### 22``); the answer field keeps the true answer."""
    steps, ans = _left_to_right(*_operands(problem))
    return Problem(problem.uid, problem.prompt, f" {', '.join(steps)}. {ANSWER_MARK} {ans}", problem.answer)


def precedence_matters(problem: Problem) -> bool:
    """Whether working left to right gives a wrong answer (a product after a sum or difference, mostly)."""
    return _left_to_right(*_operands(problem))[1] != problem.answer


def make_problem(nums: list[int], ops: list[str]) -> Problem:
    expr = "".join(str(n) + o for n, o in zip(nums, ops)) + str(nums[-1])
    steps, ans = _solve(nums, ops)
    return Problem(uid=expr, prompt=f"Q: {expr}=?", solution=f" {', '.join(steps)}. {ANSWER_MARK} {ans}", answer=ans)


def all_problems(n_operands: int = 3) -> list[Problem]:
    """Every problem of the task in a fixed order (9**n * 3**(n-1) of them)."""
    if n_operands < 2:
        raise ValueError(f"n_operands={n_operands} must be >= 2")
    out: list[Problem] = []

    def rec(nums: list[int], ops: list[str]) -> None:
        if len(nums) == n_operands:
            out.append(make_problem(nums, ops))
            return
        for d in range(1, 10):
            if not nums:
                rec([d], [])
            else:
                for o in "+-*":
                    rec(nums + [d], ops + [o])

    rec([], [])
    return out


@dataclass(frozen=True)
class ToySplits:
    sft: list[Problem]  # supervised warm-up pool of the model family
    rl: list[Problem]  # RL training prompts
    eval: list[Problem]  # held-out evaluation problems


def make_splits(seed: int, n_sft: int, n_rl: int, n_eval: int, n_operands: int = 3,
                precedence_share: float | None = None) -> ToySplits:
    """Disjoint splits drawn from the task without replacement, deterministic in ``seed``. With
    ``precedence_share`` that share of every split is precedence-sensitive problems (``precedence_matters``:
    left to right gives a wrong answer), the rest not; else problems are drawn uniformly (about 20 % are)."""
    pool = all_problems(n_operands)
    need = n_sft + n_rl + n_eval
    if need > len(pool):
        raise ValueError(
            f"data: n_sft+n_rl+n_eval={need} exceeds the {len(pool)} distinct problems with "
            f"n_operands={n_operands}; lower the split sizes or raise n_operands"
        )
    rng = random.Random(seed)
    if precedence_share is None:
        picked = rng.sample(pool, need)
        return ToySplits(picked[:n_sft], picked[n_sft : n_sft + n_rl], picked[n_sft + n_rl :])
    sens = [p for p in pool if precedence_matters(p)]
    rest = [p for p in pool if not precedence_matters(p)]
    sizes = [n_sft, n_rl, n_eval]
    k = [round(precedence_share * n) for n in sizes]
    if sum(k) > len(sens) or need - sum(k) > len(rest):
        raise ValueError(f"data: precedence_share={precedence_share} needs {sum(k)} precedence-sensitive and "
                         f"{need - sum(k)} other problems; the task has {len(sens)} and {len(rest)}: lower the "
                         f"split sizes or the share")
    a, b = rng.sample(sens, sum(k)), rng.sample(rest, need - sum(k))
    out, i, j = [], 0, 0
    for n, ks in zip(sizes, k):
        split = a[i : i + ks] + b[j : j + n - ks]
        rng.shuffle(split)
        out.append(split)
        i, j = i + ks, j + n - ks
    return ToySplits(*out)


def warmup_solutions(problems: list[Problem], left_to_right_share: float, seed: int,
                     left_to_right_only: float = 0.0) -> list[Problem]:
    """The warm-up pool of one family member: with ``left_to_right_share`` > 0 that share of its
    precedence-sensitive problems (chosen by ``seed``) is also taught with the misconceived left-to-right
    solution (``left_to_right``), beside the worked one: a model that learned both procedures and picks the
    wrong one about half the time on those problems (the pool grows by those copies). With
    ``left_to_right_only`` > 0 that share of its sensitive problems (among the others) is taught left to right
    *instead* of worked: a model that never saw a product done before a sum or difference before it."""
    if not left_to_right_share and not left_to_right_only:
        return problems
    sens = [i for i, p in enumerate(problems) if precedence_matters(p)]
    wrong = sorted(random.Random(seed).sample(sens, round(left_to_right_share * len(sens))))
    rest = sorted(set(sens) - set(wrong))
    only = set(random.Random(seed + 1).sample(rest, min(len(rest), round(left_to_right_only * len(sens)))))
    pool = [left_to_right(p) if i in only else p for i, p in enumerate(problems)]
    return pool + [left_to_right(problems[i]) for i in wrong]


def arithmetic_drills(n_operands: int = 3) -> list[Problem]:
    """Every distinct step of the task's worked solutions as a problem of its own (``Q: 7-15=? 7-15=-8. #### -8``),
    in a fixed order: the arithmetic a model family knows from pre-training, taught beside the worked problems so
    a model's errors come from its procedure rather than from facts it never saw. One-step problems share no
    prompt with the task's problems (``n_operands`` >= 3), so they reveal no split's procedure."""
    facts: dict[str, tuple[int, str, int, int]] = {}
    for p in all_problems(n_operands):
        for step in _solve(*_operands(p))[0]:
            m = STEP.match(step)
            facts.setdefault(step, (int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))))
    out = []
    for step, (a, op, b, v) in sorted(facts.items(), key=lambda kv: kv[1]):
        expr = f"{a}{op}{b}"
        out.append(Problem(uid=f"drill:{expr}", prompt=f"Q: {expr}=?", solution=f" {step}. {ANSWER_MARK} {v}",
                           answer=v))
    return out


def parse_answer(text: str) -> int | None:
    """The integer after the last ``####``, or None when the completion gives none."""
    if ANSWER_MARK not in text:
        return None
    tail = text.rsplit(ANSWER_MARK, 1)[1].strip().split()
    if not tail:
        return None
    try:
        return int(tail[0].rstrip("."))
    except ValueError:
        return None


STEP = re.compile(r"^(-?\d+)([+*-])(-?\d+)=(-?\d+)$")
EXPR = re.compile(r"Q: ([0-9+*-]+)=\?")


def _may(ops: list[str], i: int) -> bool:
    """Whether reducing the pair at ``i`` first keeps the expression's value: a product always; a sum or
    difference when no product binds either operand and what precedes it is a plus (``a-b+c`` is not
    ``a-(b+c)``)."""
    if ops[i] == "*":
        return True
    before, after = ops[i - 1] if i else "+", ops[i + 1] if i + 1 < len(ops) else "+"
    return before == "+" and after != "*"


@dataclass(frozen=True)
class SolutionPath:
    steps: tuple[str, ...]  # the worked steps as written, e.g. ("3*5=15", "7-15=-8", "-8+2=-6")
    coherent: bool  # every step follows from the expression the previous steps left, and the answer from the last


def solution_path(prompt: str, completion: str) -> SolutionPath:
    """The worked steps of a completion and whether they are coherent: each step combines two neighbouring
    numbers of the expression as the previous steps left it, with their operator, in an order that keeps the
    expression's value (products first; any order the rules of arithmetic allow), and computes it right; the
    steps reduce the expression to one number and the answer after ``####`` is that number. A step that does
    not follow from the previous one (a wrong product, an operand that is not there, a skipped step, an
    answer the steps do not give) makes the completion incoherent, whether or not the answer is right."""
    expr = EXPR.search(prompt)
    body = completion.split(ANSWER_MARK, 1)[0].strip().rstrip(".").strip()
    steps = tuple(s.strip() for s in body.split(",") if s.strip())
    if expr is None:
        return SolutionPath(steps, False)
    tokens = re.findall(r"\d+|[+*-]", expr.group(1))
    nums, ops = [int(t) for t in tokens[::2]], tokens[1::2]
    for s in steps:
        m = STEP.match(s)
        if m is None:
            return SolutionPath(steps, False)
        a, op, b, v = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
        at = next((i for i in range(len(ops)) if (nums[i], ops[i], nums[i + 1]) == (a, op, b) and _may(ops, i)), None)
        if at is None or v != (a * b if op == "*" else a + b if op == "+" else a - b):
            return SolutionPath(steps, False)
        nums[at : at + 2], ops[at : at + 1] = [v], []
    return SolutionPath(steps, len(nums) == 1 and parse_answer(completion) == nums[0])
