"""Rewards for the real datasets: math answers by equivalence (``math-verify``), multiple-choice letters.

``math``: the completion's answer is the last ``\\boxed{…}``, else the last ``Answer: …`` line (the
DAPO prompt's format); it is compared with the ground truth by ``math_verify.verify`` (symbolic
equivalence: fractions, LaTeX, units, intervals), not by string. ``math-verify`` guards its parsing
with timeouts; without a main thread to take signals (a worker thread) it is called with timeouts
off. ``mcq``: the chosen letter (``Answer: C``, ``\\boxed{C}``, ``(C)`` or a lone letter) against the key.
"""

from __future__ import annotations

import re
import threading

from s2lpo.rewards.registry import register_reward

_ANSWER_LINE = re.compile(r"Answer\s*[:：]\s*(.+)", re.IGNORECASE)


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, j = 1, i
    while j < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        j += 1
    return text[i : j - 1].strip() if depth == 0 else None


def extract_math_answer(text: str) -> str | None:
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    lines = _ANSWER_LINE.findall(text)
    if lines:
        return lines[-1].strip().rstrip(".").strip().strip("$").strip()
    return None


def _timeouts() -> dict:
    main = threading.current_thread() is threading.main_thread()
    return {"parse": 5 if main else None, "verify": 5 if main else None}


def math_equal(answer: str, ground_truth: str) -> bool:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    t = _timeouts()
    configs = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    gold = parse(f"${ground_truth}$", extraction_config=configs, parsing_timeout=t["parse"])
    pred = parse(f"${answer}$", extraction_config=configs, parsing_timeout=t["parse"])
    if not gold or not pred:
        return answer.strip() == ground_truth.strip()
    return bool(verify(gold, pred, timeout_seconds=t["verify"]))


@register_reward("math")
def math_reward(completion: str, ground_truth: str) -> float:
    """1.0 when the completion's final answer is mathematically equivalent to the ground truth."""
    answer = extract_math_answer(completion)
    return float(answer is not None and math_equal(answer, ground_truth))


_LETTER = re.compile(r"(?:Answer\s*[:：]?\s*|\\boxed\{|\()\s*\(?([A-E])\b", re.IGNORECASE)


def extract_choice(text: str) -> str | None:
    found = _LETTER.findall(text)
    if found:
        return found[-1].upper()
    lone = re.fullmatch(r"\s*\(?([A-E])\)?[.\s]*", text)
    return lone.group(1).upper() if lone else None


@register_reward("mcq")
def mcq_reward(completion: str, ground_truth: str) -> float:
    """1.0 when the chosen letter is the answer key."""
    return float(extract_choice(completion) == ground_truth.strip().upper())
