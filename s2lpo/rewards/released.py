"""The released S2L-PO evaluation's answer extraction and scoring (``eval.scorer=released``), so our Pass@1
is computed the way the paper's numbers were.

Math (AIME 24/25, MATH-500): the answer is the first that exists of the last ``\\boxed{…}`` (no nested
braces), the last ``\\frac{a}{b}``, the last ``Answer:`` / ``final answer is`` line (trailing punctuation
dropped), the last number (fraction, then decimal, then integer), the last non-empty line. It is correct
when, after normalization (lower case, no whitespace, backslashes or ``$``, ``\\frac{a}{b}`` → ``a/b``,
thousands commas and leading ``=`` dropped, outer parentheses and trailing punctuation stripped), it equals
the ground truth, or both parse as the same number (fractions and percentages too, within 1e-6), or the
ground truth is a substring of it (as released: ``\\boxed{x=12}`` counts for 12).

CommonsenseQA: the first match of "answer (is) X", "correct (answer/option) X", "option/choice X",
``(X)``, ``[X]``; else a line that is (or starts with) a lone letter; else a letter as a word; else the only
letter in the text, or the last one standing alone. Prompts: the question with " /no_think" (the nothink
preset) or " /think" appended, as a single user message; CSQA adds its choices and "Answer with only the
letter (A, B, C, D, or E)." (``s2lpo.eval.benchmarks.released_messages``).
"""

from __future__ import annotations

import re

from s2lpo.rewards.registry import register_reward

_PUNCT = "。.!！；;，,"


def _last(pattern: str, text: str) -> str | None:
    found = re.findall(pattern, text)
    return found[-1] if found else None


def _marker(text: str) -> str | None:
    for pattern in (r"Answer:\s*(.+)", r"答案[:：]\s*(.+)", r"final answer is:?\s*(.+)", r"最终答案[:：是]\s*(.+)"):
        found = re.findall(pattern, text, flags=re.IGNORECASE)
        if found:
            candidate = found[-1].strip().splitlines()[0].strip().rstrip(_PUNCT).strip()
            if candidate:
                return candidate
    return None


def extract_math(text: str) -> str:
    boxed = _last(r"\\boxed\{([^}]+)\}", text)
    if boxed:
        return boxed.strip()
    frac = _last(r"\\frac\{([^}]+)\}\{([^}]+)\}", text)
    if frac:
        return f"\\frac{{{frac[0]}}}{{{frac[1]}}}"
    marked = _marker(text)
    if marked:
        return marked
    for pattern in (r"-?\d+/\d+", r"(?<![\d])(-?\d+\.\d+)(?![\d])", r"(?<![\d])(-?\d+)(?![\d\.])"):
        number = _last(pattern, text)
        if number:
            return number.strip()
    lines = [ln.strip() for ln in text.strip().split("\n") if ln.strip()]
    return lines[-1] if lines else text.strip()


def normalize(answer: str) -> str:
    s = re.sub(r"\s+", "", str(answer).strip().lower()).replace("\\", "")
    s = re.sub(r"frac\{([^}]+)\}\{([^}]+)\}", r"\1/\2", s).replace("$", "")
    s = re.sub(r"(\d),(\d)", r"\1\2", s)
    s = re.sub(r"^=+", "", s)
    for _ in range(3):
        s = re.sub(r"^\((.*)\)$", r"\1", s)
    return s.rstrip(_PUNCT + "．").strip()


def _number(x: str) -> float | None:
    try:
        if "/" in x and len(x.split("/")) == 2:
            num, den = x.split("/")
            return float(num) / float(den)
        if x.endswith("%"):
            return float(x[:-1]) / 100.0
        return float(x)
    except (ValueError, ZeroDivisionError):
        return None


def math_equivalent(pred: str, gold: str) -> bool:
    p, g = normalize(pred), normalize(gold)
    if p == g:
        return True
    pn, gn = _number(p), _number(g)
    if pn is not None and gn is not None:
        return abs(pn - gn) < 1e-6
    return bool(g) and g in p


def extract_choice(text: str, choices: str = "ABCDE") -> str | None:
    text = text.strip()
    for pattern in (r"(?:answer|Answer|ANSWER)[\s:]*(?:is|IS)?[\s:]*\(?([A-E])\)?",
                    r"(?:correct|Correct|CORRECT)[\s:]*(?:answer|option|choice)?[\s:]*\(?([A-E])\)?",
                    r"(?:option|Option|OPTION|choice|Choice|CHOICE)[\s:]*\(?([A-E])\)?", r"\(([A-E])\)", r"\[([A-E])\]"):
        m = re.search(pattern, text)
        if m and m.group(1).upper() in choices:
            return m.group(1).upper()
    for line in (ln.strip() for ln in text.split("\n")):
        if line and line[0].upper() in choices and (len(line) == 1 or not line[1].isalnum()):
            return line[0].upper()
    for c in choices:
        if re.search(rf"\b{c}\b", text):
            return c
    upper = text.upper()
    found = [c for c in choices if c in upper]
    if len(found) == 1:
        return found[0]
    for c in reversed(choices):
        i = upper.rfind(c)
        if i >= 0 and (i == 0 or not upper[i - 1].isalnum()) and (i == len(upper) - 1 or not upper[i + 1].isalnum()):
            return c
    return None


@register_reward("released_math")
def released_math(completion: str, ground_truth: str) -> float:
    """1.0 when the released evaluation's extracted answer is equivalent to the ground truth."""
    return float(math_equivalent(extract_math(completion), ground_truth))


@register_reward("released_mcq")
def released_mcq(completion: str, ground_truth: str) -> float:
    """1.0 when the released evaluation's extracted letter is the answer key."""
    return float(extract_choice(completion) == str(ground_truth).strip().upper())
