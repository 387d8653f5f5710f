"""What the command line shows: one Hydra listing for --info, one line per bad override of a sweep (not one per
run), and progress bars on the long steps (family build with its size, explorer-cache fill, sweep checking)."""

import subprocess
import sys

from s2lpo.cli import main
from s2lpo_testing import CACHE, QUICK, ROOT, make_cfg


def test_info_prints_once(tmp_path):
    """Importing verl calls ``logging.basicConfig``; our import undoes it, so Hydra's --info is not doubled."""
    r = subprocess.run([sys.executable, str(ROOT / "experiments/train.py"), f"paths.root_dir={tmp_path}", "--info"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and out.count("Config search path") == 1, out[-2000:]


def test_a_bad_override_of_a_sweep_is_one_line(tmp_path, capsys):
    assert main(["sweep", "submit", str(ROOT / "sweeps/toy.yaml"), "trainer.lrr=1", "--dry-run",
                 "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().out
    assert err.count("Could not override 'trainer.lrr'") == 1, err
    assert "15 runs (0, 1, 2, 3, 4, 5, 6, 7, …): Could not override 'trainer.lrr'. To append to your config use " \
           "+trainer.lrr=1" in " ".join(err.split()), err


def test_a_sweep_file_that_is_not_yaml_is_one_line_and_exit_2(tmp_path, capsys):
    """Not a traceback: the file, the line and column where YAML stops, and the fix; brackets of the file's text are
    printed as they are (no console markup)."""
    (tmp_path / "[red]s.yaml").write_text("name: bad\naxes:\n  seed: [0, 1\n")
    assert main(["sweep", "submit", str(tmp_path / "[red]s.yaml"), "--dry-run", "--root", str(tmp_path)]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert f"{tmp_path}/[red]s.yaml is not valid YAML at line 4, column 1" in out and "Traceback" not in out, out


def test_sweep_submission_reports_its_progress(tmp_path):
    from s2lpo.sweep.grid import load_sweep
    from s2lpo.sweep.submit import submit_sweep

    seen = []
    submit_sweep(load_sweep(ROOT / "sweeps/toy.yaml", []), tmp_path, dry_run=True,
                 progress=lambda what, done, total: seen.append((what, done, total)))
    assert seen[0] == ("checking runs", 0, 15) and seen[-1] == ("checking runs", 15, 15)
    assert [d for w, d, _ in seen] == list(range(16))


def test_the_family_build_reports_each_step_with_the_size_it_trains(tmp_path):
    """A small recipe (its own cache key) built from scratch: one call per warm-up step, the size in the text."""
    from s2lpo.models.family import build_family
    from s2lpo.models.resolve import family_recipe

    recipe = family_recipe(make_cfg(tmp_path, "family=toy_tiny", "family.n_sft=64", "family.sft_epochs=2"))
    seen = []
    build_family(recipe, tmp_path / "cache", log=lambda *_: None, progress=lambda d, t, what: seen.append((d, t, what)))
    assert [d for d, _, _ in seen] == list(range(1, 5)) and {t for _, t, _ in seen} == {4}  # 2 sizes x 2 epochs x 1
    assert seen[0][2].startswith("size s (") and seen[-1][2].startswith("size l (") and "M params, 2/2)" in seen[-1][2]
    seen.clear()
    build_family(recipe, tmp_path / "cache", log=lambda *_: None, progress=lambda *a: seen.append(a))
    assert seen == []  # cached: nothing to show


def test_family_sizes_are_built_when_first_asked_for(tmp_path):
    """A run of the learner alone builds the learner alone; a later size joins the same family, and every size's
    weights are those a whole build gives (seeded per size, not by build order)."""
    import pytest

    from s2lpo.models.family import build_family
    from s2lpo.models.resolve import family_recipe

    recipe = family_recipe(make_cfg(tmp_path, "family=toy_tiny", "family.n_sft=64", "family.sft_epochs=2"))
    quiet = {"log": lambda *_: None}
    fam = build_family(recipe, tmp_path / "lazy", sizes=["l"], **quiet)
    assert list(fam.manifest["models"]) == ["l"] and fam.model_dir("l").is_dir()
    with pytest.raises(ValueError, match="size 's' of family .* is not built yet"):
        fam.model_dir("s")
    with pytest.raises(ValueError, match=r"sizes \['xl'\] are not in the toy family"):
        build_family(recipe, tmp_path / "lazy", sizes=["xl"], **quiet)
    l_weights = sorted(fam.model_dir("l").glob("*.safetensors"))[0].stat().st_mtime_ns
    fam = build_family(recipe, tmp_path / "lazy", sizes=["s"], **quiet)
    assert list(fam.manifest["models"]) == ["s", "l"]  # the recipe's order
    assert sorted(fam.model_dir("l").glob("*.safetensors"))[0].stat().st_mtime_ns == l_weights  # not rebuilt
    whole = build_family(recipe, tmp_path / "whole", **quiet)
    assert {s: m["digest"] for s, m in whole.manifest["models"].items()} == {
        s: m["digest"] for s, m in fam.manifest["models"].items()}
    # two processes at once, each building another size: neither waits for the other's size, both land
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    import torch

    from s2lpo_testing import build_sizes

    with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as pool:
        done = [f.result() for f in [pool.submit(build_sizes, recipe, tmp_path / "both", [s], torch.get_num_threads())
                                     for s in ("s", "l")]]
    assert [list(m["models"]) for m in done] in (
        [["s"], ["s", "l"]], [["s", "l"], ["l"]], [["s", "l"], ["s", "l"]])
    both = build_family(recipe, tmp_path / "both", **quiet)
    assert {s: m["digest"] for s, m in both.manifest["models"].items()} == {
        s: m["digest"] for s, m in whole.manifest["models"].items()}


def test_a_run_prepares_with_progress_bars(tmp_path, tiny_family, capsys):
    from s2lpo.cli.console import prepare_with_progress

    cfg = make_cfg(tmp_path, *QUICK, f"paths.explorer_cache_dir={tmp_path / 'xc'}", f"paths.cache_dir={CACHE}")
    prepare_with_progress(cfg)
    err = capsys.readouterr().err
    assert "explorer cache toy-s" in err and "samples" in err, err


def test_a_size_another_process_is_building_is_waited_for_last(tmp_path):
    """Two runs starting on an unbuilt family split it: a size whose lock another process holds is left for
    last, and the build waits for it only after building the free ones."""
    import fcntl
    import json
    import threading
    import time

    from s2lpo.models.family import build_family, family_root
    from s2lpo.models.resolve import family_recipe

    recipe = family_recipe(make_cfg(tmp_path, "family=toy_tiny", "family.n_sft=64", "family.sft_epochs=1"))
    root = family_root(recipe, tmp_path / "cache")
    root.parent.mkdir(parents=True)
    seen: list[str] = []
    with open(root.parent / f".{recipe.key()}-s.lock", "w") as other:  # "another process" building size s
        fcntl.flock(other, fcntl.LOCK_EX)
        build = threading.Thread(target=build_family, args=(recipe, tmp_path / "cache"),
                                 kwargs={"log": lambda *_: None, "progress": lambda d, t, what: seen.append(what)})
        build.start()
        def built() -> list[str]:
            manifest = root / "manifest.json"
            return list(json.loads(manifest.read_text())["models"]) if manifest.exists() else []

        deadline = time.time() + 300
        while "l" not in built():
            assert time.time() < deadline and build.is_alive(), seen
            time.sleep(0.1)
        time.sleep(0.5)
        assert built() == ["l"] and seen and all(w.startswith("size l") for w in seen)  # l while s was held
    build.join(timeout=300)
    assert [w.split()[1] for w in seen] == ["l", "s"]
    assert list(build_family(recipe, tmp_path / "cache", log=lambda *_: None).manifest["models"]) == ["s", "l"]
