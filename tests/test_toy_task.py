from pathlib import Path

import pytest

from s2lpo.data.toy import all_problems, make_problem, make_splits, parse_answer
from s2lpo.rewards import get_reward_fn


def test_solution_steps():
    p = make_problem([7, 3, 5, 2], ["-", "*", "+"])
    assert p.prompt == "Q: 7-3*5+2=?"
    assert p.solution == " 3*5=15, 7-15=-8, -8+2=-6. #### -6"
    assert p.answer == -6


def test_every_problem_is_consistent():
    ps = all_problems(3)
    assert len(ps) == 9**3 * 9
    for p in ps[::97]:
        assert p.answer == eval(p.prompt[3:-2])  # noqa: S307 - our own generated digits and operators
        assert parse_answer(p.solution) == p.answer


def test_splits_are_disjoint_and_deterministic():
    s = make_splits(3, 100, 50, 20)
    ids = [p.uid for p in s.sft + s.rl + s.eval]
    assert len(set(ids)) == 170
    assert make_splits(3, 100, 50, 20) == s
    with pytest.raises(ValueError, match="exceeds"):
        make_splits(0, 7000, 10, 10)


@pytest.mark.parametrize(("text", "truth", "reward"), [
    (" 3*5=15. #### 15", "15", 1.0), (" #### -6", "-6", 1.0), (" #### 6", "-6", 0.0),
    (" 3*5=15", "15", 0.0), (" #### ", "1", 0.0), (" #### 1x", "1", 0.0), (" #### 7.", "7", 1.0),
])
def test_reward(text, truth, reward):
    assert get_reward_fn("toy_arith")(text, truth) == reward


def test_unknown_reward():
    with pytest.raises(ValueError, match="reward 'nope' is unknown"):
        get_reward_fn("nope")


def test_a_solution_path_is_coherent_only_when_every_step_follows():
    from s2lpo.data.toy import SolutionPath, all_problems, make_problem, solution_path

    p = make_problem([7, 3, 5, 2], ["-", "*", "+"])  # Q: 7-3*5+2=?
    assert solution_path(p.prompt, p.solution) == SolutionPath(("3*5=15", "7-15=-8", "-8+2=-6"), True)
    assert all(solution_path(q.prompt, q.solution).coherent for q in all_problems(4))
    incoherent = [" 3*5=16, 7-16=-9, -9+2=-7. #### -7",  # a wrong product
                  " 3*5=15, 15+2=17, 7-17=-10. #### -10",  # 7-15+2 is not 7-(15+2)
                  " 7-3=4, 4*5=20, 20+2=22. #### 22",  # before the product
                  " 3*5=15, 7-15=-8. #### -6",  # a skipped step
                  " 3*5=15, 7-15=-8, -8+2=-6. #### -5",  # an answer the steps do not give
                  " 3*4=12, 7-12=-5, -5+2=-3. #### -3",  # an operand that is not there
                  " 3*5=15, 7-15=-8, -8+2=-6 #### -6 junk, 1+1=2"]
    assert [solution_path(p.prompt, c).coherent for c in incoherent] == [False] * 6 + [True]
    q = make_problem([2, 3, 4], ["+", "+"])  # 2+(3+4) keeps the value: another coherent path
    assert solution_path(q.prompt, " 3+4=7, 2+7=9. #### 9") == SolutionPath(("3+4=7", "2+7=9"), True)
    assert not solution_path(make_problem([2, 3, 4], ["-", "-"]).prompt, " 3-4=-1, 2--1=3. #### 3").coherent


def test_diversity_metrics_exact():
    """Two problems, four samples each: pass@k, distinct correct coherent paths among the first k, incoherent share."""
    from s2lpo.data.toy import make_problem
    from s2lpo.study.diversity import diversity_metrics

    p, q = make_problem([2, 3, 4], ["+", "+"]), make_problem([2, 3, 4], ["*", "+"])  # 9 and 10
    a, b = " 2+3=5, 5+4=9. #### 9", " 3+4=7, 2+7=9. #### 9"
    texts = [[a, b, a, " 2+3=6, 6+4=9. #### 9"], [" 2*3=6, 6+4=10. #### 10", " 2*3=6, 6+4=11. #### 11", "x", "y"]]
    rewards = [[1, 1, 1, 1], [1, 0, 0, 0]]
    m = diversity_metrics([p.prompt, q.prompt], texts, rewards)
    assert m["eval/toy/pass@1"] == (1 + 1 / 4) / 2 and m["eval/toy/pass@4"] == 1.0
    assert m["diversity/toy/paths@1"] == 1.0  # a; the first sample of q
    assert m["diversity/toy/paths@2"] == 1.5  # a, b; q's one path
    assert m["diversity/toy/paths@4"] == 1.5  # the fourth of p is rewarded but incoherent: not a path
    assert m["diversity/toy/incoherent@1"] == 0.0 and m["diversity/toy/incoherent@2"] == 1 / 4
    assert m["diversity/toy/incoherent@4"] == 4 / 8
    assert m["diversity/toy/correct_but_incoherent"] == 1 / 5


def test_the_task_mix_and_a_warm_up_misconception():
    """``precedence_share`` fixes the share of problems where working left to right is wrong in every split;
    ``warmup_solutions`` teaches that share of a pool's precedence-sensitive problems left to right."""
    from s2lpo.data.toy import left_to_right, make_problem, make_splits, precedence_matters, warmup_solutions
    from s2lpo.models.family import FamilyRecipe

    p = make_problem([7, 3, 5, 2], ["-", "*", "+"])
    assert left_to_right(p).solution == " 7-3=4, 4*5=20, 20+2=22. #### 22" and left_to_right(p).answer == -6
    assert precedence_matters(p) and not precedence_matters(make_problem([7, 3, 5], ["*", "+"]))
    sp = make_splits(0, 500, 200, 100, 3, 0.4)
    assert [sum(map(precedence_matters, s)) for s in (sp.sft, sp.rl, sp.eval)] == [200, 80, 40]
    assert len({q.uid for s in (sp.sft, sp.rl, sp.eval) for q in s}) == 800  # disjoint
    uniform = make_splits(0, 500, 200, 100, 3)
    assert 0.1 < sum(map(precedence_matters, uniform.sft)) / 500 < 0.3
    taught = warmup_solutions(sp.sft, 0.75, 1)
    assert taught[:500] == sp.sft and len(taught) == 650  # the worked solutions stay; 150 misconceived copies
    assert all(precedence_matters(q) and q.solution == left_to_right(q).solution and q.uid in {x.uid for x in sp.sft}
               for q in taught[500:])
    assert warmup_solutions(sp.sft, 0.0, 1) == sp.sft
    # taught left to right instead: a misconception without the worked solution beside it
    only = warmup_solutions(sp.sft, 0.0, 1, left_to_right_only=1.0)
    assert len(only) == 500 and [q.uid for q in only] == [q.uid for q in sp.sft]
    assert all(q.solution == (left_to_right(p) if precedence_matters(p) else p).solution for p, q in zip(sp.sft, only))
    mixed = warmup_solutions(sp.sft, 0.5, 1, left_to_right_only=0.5)  # half both ways, the other half only wrong
    copies = {q.uid for q in mixed[500:]}
    replaced = {p.uid for p, q in zip(sp.sft, mixed) if p.solution != q.solution}
    assert len(copies) == len(replaced) == 100 and not copies & replaced
    assert mixed[500:] == warmup_solutions(sp.sft, 0.5, 1)[500:]  # the both-ways half is chosen as without it
    with pytest.raises(ValueError, match="precedence_share=0.9 needs"):
        make_splits(0, 2000, 1024, 128, 3, 0.9)
    # unset, the newer recipe fields leave a family's cache key as it was
    keys = {FamilyRecipe().key(), FamilyRecipe(precedence_share=0.4).key(), FamilyRecipe(drills=1).key(),
            FamilyRecipe(left_to_right={"l": 0.5}).key()}
    assert FamilyRecipe().key() == "63750219941c" and len(keys) == 4  # FAMILY_FORMAT 2 (the packed warm-up)


def test_arithmetic_drills_are_every_step_of_the_task_and_no_problem_of_it():
    from s2lpo.data.toy import _operands, _solve, arithmetic_drills

    drills = arithmetic_drills(3)
    problems = all_problems(3)
    assert len(drills) == 1674 == len({d.uid for d in drills})
    by_prompt = {d.prompt: d for d in drills}
    assert by_prompt["Q: 7-15=?"].solution == " 7-15=-8. #### -8" and by_prompt["Q: 7-15=?"].answer == -8
    steps = {s for p in problems for s in _solve(*_operands(p))[0]}
    assert steps == {d.solution.split(".")[0].strip() for d in drills}
    assert all(parse_answer(d.solution) == d.answer == eval(d.uid.removeprefix("drill:")) for d in drills)
    assert not {p.prompt for p in problems} & set(by_prompt)  # no problem of the task is taught by a drill
    assert arithmetic_drills(3) == drills  # a fixed order


def test_each_size_warms_up_on_its_pool_of_problems_misconceptions_and_drills():
    import yaml

    from s2lpo.data.toy import left_to_right, precedence_matters
    from s2lpo.models.family import FamilyRecipe, warmup_pools

    recipe = FamilyRecipe(n_sft=200, n_rl=50, n_eval=20, precedence_share=0.5, left_to_right={"l": 1.0}, drills=2)
    splits = recipe.splits()
    pools = warmup_pools(recipe, splits)
    assert [len(pools[s]) for s in ("xs", "s", "m", "l")] == [200 + 2 * 1674] * 3 + [200 + 100 + 2 * 1674]
    assert pools["l"][:200] == splits.sft == pools["m"][:200]
    assert all(precedence_matters(q) and q == left_to_right(q) for q in pools["l"][200:300])
    assert {q.uid for q in pools["l"][300:]} == {q.uid for q in pools["s"][200:]} and pools["s"][200].uid.startswith("drill:")
    # the demo's recipe drills every size twice an epoch and teaches the learner both procedures
    conf = yaml.safe_load((Path(__file__).parents[1] / "conf/family/toy.yaml").read_text())
    assert conf["drills"] == 2 and conf["left_to_right"] == {"l": 1.0}

