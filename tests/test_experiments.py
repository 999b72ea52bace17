from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from gliomaseg.cli import main
from gliomaseg.core.errors import ConfigError, DataError
from gliomaseg.experiments.runner import run_experiment, split_csvs
from gliomaseg.experiments.spec import load_experiment
from gliomaseg.training.records import read_metrics

TINY = {"batch_size": 4, "limit_train_batches": 2, "workers": 0}


def _yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


TWO_RUNS = """
name: two
description: two tiny runs
base: {model: unet, encoder: resnet18}
runs:
  - {name: dice, loss: dice, reference: 0.8}
  - {name: image-split, split: image, loss: bce}
"""


@pytest.fixture()
def two_runs(tmp_path: Path) -> Path:
    return _yaml(tmp_path / "two.yaml", TWO_RUNS)


@pytest.fixture(scope="module")
def two_runs_done(prepared: Path, tmp_path_factory) -> tuple[Path, Path, pd.DataFrame]:
    """The two-run experiment trained and scored once for the tests that read it: (spec, experiments folder, results)."""
    root = tmp_path_factory.mktemp("two_runs")
    spec = _yaml(root / "two.yaml", TWO_RUNS)
    results = run_experiment(spec, prepared, root / "exp", epochs=1, image_size=64, extra_options=TINY)
    return spec, root / "exp", results


def test_runner_writes_results_then_skips_finished_runs(two_runs_done, prepared: Path, monkeypatch, capsys):
    two_runs, out, results = two_runs_done
    assert list(results["run"]) == ["dice", "image-split"] and (results["status"] == "done").all()
    for name in ("results.csv", "results.md", "results.png", "experiment.json"):
        assert (out / "two" / name).is_file()
    table = pd.read_csv(out / "two" / "results.csv")
    for column in ("iou_imagewise", "dice_imagewise", "iou_micro", "patient_dice_mean", "patient_dice_median", "epochs",
                   "train_seconds", "images_per_s", "parameters_M", "gflops", "reference_iou"):
        assert column in table, column
    assert table.loc[0, "reference_iou"] == 0.8 and table.loc[0, "parameters_M"] > 10 and table.loc[0, "gflops"] > 0
    assert (prepared / "data_train_split_by_img.csv").is_file()  # the image split was made for the run
    assert "reference_iou" in (out / "two" / "results.md").read_text()
    configs = {name: json.loads((out / "two" / name / "config.json").read_text()) for name in ("dice", "image-split")}
    assert configs["dice"]["loss"] == "dice" and configs["image-split"]["loss"] == "bce"  # what a run compares beats the preset
    assert "Unet runs only" in json.loads((out / "two" / "experiment.json").read_text())["preset_scope"]
    assert configs["dice"]["optimizer"] == "adam" and configs["dice"]["image_size"] == 64  # the cpu preset, then the command line
    assert configs["dice"]["intensity"] == "patient"  # the cpu preset's recipe standardizes each patient

    def must_not_train(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("gliomaseg.training.run.train", must_not_train)
    again = run_experiment(two_runs, prepared, out, epochs=1, image_size=64, extra_options=TINY)
    assert capsys.readouterr().out.count("done, skipped") == 2
    assert again["iou_imagewise"].tolist() == pytest.approx(results["iou_imagewise"].tolist())


def test_killed_run_resumes(prepared: Path, tmp_path: Path, monkeypatch):
    spec = _yaml(tmp_path / "one.yaml", "name: one\nruns:\n  - {name: unet, model: unet}\n")
    import gliomaseg.training.run as training

    real_train, real_last = training.train, training.LastCheckpoint

    class StopAfterFirstEpoch(real_last):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            super().on_train_epoch_end(trainer, pl_module)  # last.ckpt of epoch 1 written
            trainer.should_stop = True

    def killed_after_first_epoch(config):
        # the run keeps its 2 epochs (under the preset's cosine schedule they are its recipe) and stops after one
        monkeypatch.setattr(training, "LastCheckpoint", StopAfterFirstEpoch)
        try:
            real_train(config)
        finally:
            monkeypatch.setattr(training, "LastCheckpoint", real_last)
        raise KeyboardInterrupt  # the user pressed Ctrl-C (or the machine went away) after epoch 1

    monkeypatch.setattr(training, "train", killed_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(spec, prepared, tmp_path / "exp", epochs=2, image_size=64, extra_options=TINY)
    run = tmp_path / "exp" / "one" / "unet"
    assert json.loads((run / "status.json").read_text())["state"] == "running"
    monkeypatch.setattr(training, "train", real_train)
    results = run_experiment(spec, prepared, tmp_path / "exp", epochs=2, image_size=64, extra_options=TINY)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from"].endswith("last.ckpt") and summary["epochs_completed"] == 2
    assert results.loc[0, "status"] == "done" and results.loc[0, "epochs"] == 2
    assert results.loc[0, "best_epoch"] in (1, 2)  # read from best.ckpt, counted from 1


def test_fold_runs_make_a_crossvalidation(synth_root: Path, tmp_path: Path):
    """split: foldK trains on the fold CSVs of prepare --folds; score_last scores last.ckpt; a summary over folds."""
    from gliomaseg.data.prepare import prepare

    data = tmp_path / "data"
    prepare(synth_root, data, folds=2, plots=False)
    spec = _yaml(tmp_path / "cv.yaml", "name: cv\nscore_last: true\nscore_variants: true\nruns:\n  - {name: f0, split: fold0}\n  - {name: f1, split: fold1}\n")
    results = run_experiment(spec, data, tmp_path / "exp", epochs=2, image_size=64, extra_options=TINY)
    root = tmp_path / "exp" / "cv"
    assert (results["status"] == "done").all(), results["status"].tolist()
    held_out = {run: set(pd.read_csv(root / run / "eval" / "patients.csv")["patient"]) for run in ("f0", "f1")}
    folds = pd.read_csv(data / "data_folds.csv")
    for k, run in enumerate(("f0", "f1")):  # each fold is scored on its own held-out patients only
        assert held_out[run] == set(folds.loc[folds["fold"] == k, "patient"])
        config = json.loads((root / run / "config.json").read_text())
        assert config["train_csv"].endswith(f"data_fold{k}_train.csv") and config["val_csv"].endswith(f"data_fold{k}_val.csv")
        last = json.loads((root / run / "eval_last" / "summary.json").read_text())
        assert results.loc[k, "patient_dice_mean_last"] == pytest.approx(last["patient_dice_mean"])
        scores = read_metrics(root / run).dropna(subset=["val_patient_dice"]).reset_index(drop=True)
        assert results.loc[k, "best_epoch"] == int(scores.loc[scores["val_patient_dice"].idxmax(), "epoch"]) + 1
        best = json.loads((root / run / "eval" / "summary.json").read_text())
        assert results.loc[k, "variant_tta_flip"] == pytest.approx(best["variants"]["tta:flip"]["patient_dice_mean"])
    summary = json.loads((root / "crossval.json").read_text())
    assert summary["folds"] == ["f0", "f1"]
    assert summary["patient_dice_mean"]["mean"] == pytest.approx(results["patient_dice_mean"].mean())
    pooled = pd.concat([pd.read_csv(root / run / "eval" / "patients.csv") for run in ("f0", "f1")])["dice_3d"]
    assert summary["pooled_patient_dice_best"]["patients"] == len(folds["patient"].unique()) == len(pooled)
    assert summary["pooled_patient_dice_best"]["mean"] == pytest.approx(pooled.mean())
    assert "Over the 2 finished folds" in (root / "results.md").read_text() and summary["failed_folds"] == []
    # --only one fold later: the table and the summary keep the other, finished fold.
    again = run_experiment(spec, data, tmp_path / "exp", epochs=2, image_size=64, extra_options=TINY, only=["f1"])
    assert list(again["run"]) == ["f0", "f1"] and json.loads((root / "crossval.json").read_text())["folds"] == ["f0", "f1"]
    with pytest.raises(DataError, match="data_fold0_train.csv.*prepare --folds"):
        split_csvs(tmp_path / "exp", "fold0")  # a folder without the fold CSVs


def test_crossval_summary_names_failed_folds_and_refuses_repeated_patients(tmp_path: Path):
    from gliomaseg.experiments.summary import crossval_summary

    for run, patients in (("f0", ["A", "B"]), ("f2", ["B", "C"])):
        (tmp_path / run / "eval").mkdir(parents=True)
        pd.DataFrame({"patient": patients, "dice_3d": [0.9, 0.5]}).to_csv(tmp_path / run / "eval" / "patients.csv", index=False)
    results = pd.DataFrame([{"run": "f0", "split": "fold0", "status": "done", "patient_dice_mean": 0.7},
                            {"run": "f1", "split": "fold1", "status": "failed: RuntimeError: boom"}])
    summary = crossval_summary(results, tmp_path)
    assert summary["folds"] == ["f0"] and summary["failed_folds"] == ["f1"]
    assert summary["patient_dice_mean"] == {"mean": 0.7, "sd_over_folds": None, "folds": 1}
    assert json.loads((tmp_path / "crossval.json").read_text())["pooled_patient_dice_best"]["patients"] == 2  # valid JSON, no NaN
    both = pd.DataFrame([{"run": r, "split": s, "status": "done", "patient_dice_mean": 0.7} for r, s in (("f0", "fold0"), ("f2", "fold2"))])
    with pytest.raises(DataError, match="held out by more than one fold \\(B\\)"):
        crossval_summary(both, tmp_path)


def test_compare_with_puts_each_run_beside_its_namesake(two_runs_done, prepared: Path, tmp_path: Path):
    """lowlr is shown as the case study does: each architecture's base and 0.1x rows side by side, with the difference."""
    _, trained, first = two_runs_done  # the base experiment "two": its run "dice" is the namesake
    out = tmp_path / "exp"
    (out / "two").mkdir(parents=True)
    (out / "two" / "results.csv").write_bytes((trained / "two" / "results.csv").read_bytes())  # all compare_with reads
    low = _yaml(tmp_path / "low.yaml", "name: low\ncompare_with: two\nbase: {lowlr: true, encoder: resnet18}\n"
                                      "runs:\n  - {name: dice, model: unet, loss: dice}\n")
    second = run_experiment(low, prepared, out, epochs=1, image_size=64, extra_options=TINY)
    assert second.loc[0, "two_patient_dice_mean"] == pytest.approx(first.loc[0, "patient_dice_mean"])
    assert second.loc[0, "patient_dice_mean_minus_two"] == pytest.approx(second.loc[0, "patient_dice_mean"] - first.loc[0, "patient_dice_mean"])
    assert "patient_dice_mean_minus_two" in (out / "low" / "results.md").read_text()
    assert (out / "low" / "results.png").stat().st_size > 1000


def test_failing_run_is_recorded_and_others_go_on(prepared: Path, tmp_path: Path):
    spec = _yaml(tmp_path / "mixed.yaml", "name: mixed\nruns:\n  - {name: pan, model: pan}\n  - {name: fpn, model: fpn}\n")
    results = run_experiment(spec, prepared, tmp_path / "exp", epochs=1, image_size=64, extra_options=TINY)
    status = dict(zip(results["run"], results["status"]))
    assert status["pan"].startswith("failed") and "multiple of 32, at least 128" in status["pan"]
    assert status["fpn"] == "done"
    assert json.loads((tmp_path / "exp" / "mixed" / "pan" / "status.json").read_text())["state"] == "failed"


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: t\nruns:\n  - {name: a, encodr: resnet18}\n", "unknown option.*encodr"),
        ("name: t\nruns:\n  - {name: a, model: unett}\n", "run 'a': unknown architecture 'unett'"),
        ("name: t\nrun:\n  - {name: a}\n", "needs a 'runs' list"),
        ("name: t\nruns:\n  - {name: a, loss: dise}\n", "unknown loss term 'dise'"),
        ("name: t\nruns: [{name: a}\n", "not valid YAML"),
        ("name: t\nruns:\n  - {name: a}\n  - {name: a}\n", "two runs are named 'a'"),
        ("name: t\nruns:\n  - {name: ../../escaped}\n", "run name '../../escaped' cannot name a file inside the output folder"),
        ("name: t\nruns:\n  - {name: /tmp/abs}\n", "run name '/tmp/abs' cannot name a file"),
        ("name: ..\nruns:\n  - {name: a}\n", "experiment name '..' cannot name a file"),
        ("name: t\ncompare_with: ../x\nruns:\n  - {name: a}\n", "compare_with '../x' cannot name a file"),
        ("name: t\nruns:\n  - {name: a, split: folds}\n", "split must be patient, image or foldK"),
        ("name: t\npresets: {cpu: {epoks: 8}}\nruns:\n  - {name: a}\n", "preset 'cpu': unknown option.*epoks"),
        ("name: t\npresets: {cpu: 8}\nruns:\n  - {name: a}\n", "presets must map a preset name to its options"),
        ("name: t\npresets: {cpu: {epochs: 0}}\nruns:\n  - {name: a}\n", "preset 'cpu': epochs, batch size and learning rate must be positive"),
    ],
)
def test_yaml_typos_get_clear_errors(tmp_path: Path, text: str, message: str):
    path = _yaml(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError, match=message) as info:
        load_experiment(path)
    assert "bad.yaml" in str(info.value)


def test_shipped_experiments_load():
    for name, count in (("encoders", 3), ("architectures", 14), ("lowlr", 10), ("split", 2), ("losses", 10), ("crossval", 5),
                        ("levers", 9), ("crossval_intensity", 5)):
        experiment = load_experiment(name)
        assert len(experiment.runs) == count
    levers = {r.name: r.options for r in load_experiment("levers").runs}
    recipe = levers.pop("recipe")
    for name, options in levers.items():  # one change at a time (the scratch row swaps the encoder and its weights)
        changed = {k for k in set(options) | set(recipe) if options.get(k) != recipe.get(k)}
        assert len(changed) == 1 or changed == {"encoder", "encoder_weights"}, (name, changed)
    architectures = load_experiment("architectures").runs
    assert sum(not r.extra for r in architectures) == 11 and sum(r.reference is not None for r in architectures) == 9
    assert all(r.options.get("lowlr") for r in load_experiment("lowlr").runs)
    for name in ("architectures", "lowlr", "losses"):  # the pretrained encoder in every row, and one row from scratch
        runs = load_experiment(name).runs
        scratch = [r for r in runs if r.options["encoder_weights"] == "none"]
        assert [r.options["encoder"] for r in scratch if not r.extra] == ["resnet18"], name
        assert all(r.options["encoder"] == "timm-tf_efficientnet_lite0" for r in runs if r not in scratch), name
    assert load_experiment("crossval").score_last and [r.split for r in load_experiment("crossval").runs] == [f"fold{k}" for k in range(5)]
    # the same folds, one change: its folds pair with crossval's
    plain, standardized = load_experiment("crossval"), load_experiment("crossval_intensity")
    assert standardized.score_last and [(r.name, r.split) for r in standardized.runs] == [(r.name, r.split) for r in plain.runs]
    for a, b in zip(plain.runs, standardized.runs):
        assert {k: v for k, v in b.options.items() if k != "intensity"} == {k: v for k, v in a.options.items() if k != "intensity"}
        assert (a.options["intensity"], b.options["intensity"]) == ("fixed", "patient")
    # experiments measured before the cpu preset took the robustness augmentation keep it off; crossval_robust has it
    from gliomaseg.experiments.spec import PRESETS

    assert (PRESETS["cpu"]["missing_sequence_p"], PRESETS["cpu"]["scale_min"]) == (0.15, 0.7)
    for name in ("crossval", "crossval_intensity", "levers", "architectures", "encoders", "losses", "lowlr", "split"):
        assert all((r.options["missing_sequence_p"], r.options["intensity_augment_p"], r.options["scale_min"]) == (0, 0, 0.96)
                   for r in load_experiment(name).runs), name
    assert all(r.options["missing_sequence_p"] == 0.15 for r in load_experiment("crossval_robust").runs)
    # ... and smp's decoder, measured before the cpu preset took the lighter one (crossval_light.md)
    for name in ("crossval", "crossval_intensity", "levers", "architectures", "encoders", "losses", "lowlr", "split"):
        assert all(r.options["decoder_channels"] is None for r in load_experiment(name).runs), name
    # the lighter decoder pairs fold by fold with the shipped recipe: the decoder is its only change
    robust, light = load_experiment("crossval_robust"), load_experiment("crossval_light")
    assert [(r.name, r.split) for r in light.runs] == [(r.name, r.split) for r in robust.runs]
    for a, b in zip(robust.runs, light.runs):
        assert {k: v for k, v in b.options.items() if k != "decoder_channels"} == {k: v for k, v in a.options.items() if k != "decoder_channels"}
        assert (a.options["decoder_channels"], b.options["decoder_channels"]) == ("256,128,64,32,16", "128,64,32,16,8")
    assert (robust.score_last, robust.presets) == (light.score_last, light.presets)
    # longer training pairs fold by fold with the shipped recipe: 16 epochs is its only change
    long = load_experiment("crossval_long")
    assert [(r.name, r.split) for r in long.runs] == [(r.name, r.split) for r in light.runs] and long.score_last
    for a, b in zip(light.runs, long.runs):
        assert {k: v for k, v in b.options.items() if k != "epochs"} == a.options and b.options["epochs"] == 16
    # distillation pairs fold by fold with the shipped recipe: the same fold's wider model as teacher is its only change
    distill = load_experiment("crossval_distill")
    assert [(r.name, r.split) for r in distill.runs] == [(r.name, r.split) for r in light.runs] and distill.score_last
    for a, b in zip(light.runs, distill.runs):
        assert {k: v for k, v in b.options.items() if not k.startswith("distill_")} == a.options
        assert b.options["distill_from"] == f"experiments/crossval_robust/{a.split}/last.ckpt"
    # the levers compare against the recipe they were measured with, whatever the cpu preset has become
    assert all(r.options["intensity"] == "fixed" for r in load_experiment("levers").runs if r.name != "intensity-patient")
    with pytest.raises(ConfigError, match="unknown experiment 'encoder'.*encoders"):
        load_experiment("encoder")


def test_a_files_preset_entry_amends_the_built_in_preset(prepared: Path, tmp_path: Path, monkeypatch):
    from gliomaseg.experiments.spec import PRESETS, experiment_presets

    spec = _yaml(tmp_path / "pinned.yaml", "name: pinned\npresets: {cpu: {epochs: 3}, tiny: {epochs: 1, image_size: 64}}\n"
                 "runs:\n  - {name: a, model: unet}\n")
    presets = experiment_presets(load_experiment(spec))
    assert presets["cpu"] == {**PRESETS["cpu"], "epochs": 3}  # one key moved, the rest of the recipe kept
    assert presets["gpu"] == PRESETS["gpu"] and presets["tiny"] == {"epochs": 1, "image_size": 64}
    assert PRESETS["cpu"]["epochs"] != 3  # the built-in preset itself is untouched
    with pytest.raises(ConfigError, match="unknown preset 'gpus'.*cpu.*tiny"):
        run_experiment(spec, prepared, tmp_path / "out", preset="gpus")
    assert PRESETS["cpu"]["epochs"] == 16  # adopted by crossval_long.md's rule
    assert experiment_presets(load_experiment("crossval_long"))["cpu"]["epochs"] == 16
    # the files whose results were measured at 8 epochs keep them under the cpu preset, whatever its length becomes
    monkeypatch.setitem(PRESETS["cpu"], "epochs", 24)
    for name in ("crossval", "crossval_intensity", "crossval_robust", "crossval_light", "crossval_distill", "levers",
                 "encoders", "split", "architectures", "lowlr", "losses"):
        presets = experiment_presets(load_experiment(name))
        assert presets["cpu"]["epochs"] == 8 and presets["gpu"] == PRESETS["gpu"], name


def test_the_cpu_preset_decoder_goes_only_to_architectures_that_have_one():
    from gliomaseg.experiments.runner import _preset_for
    from gliomaseg.experiments.spec import PRESETS, RunSpec
    from gliomaseg.training.config import TrainConfig

    assert PRESETS["cpu"]["decoder_channels"] == "128,64,32,16,8"  # adopted by crossval_light.md's rule
    unet, fpn = RunSpec("u", {"model": "unet"}), RunSpec("f", {"model": "fpn"})
    pinned = RunSpec("p", {"model": "unet", "decoder_channels": None})
    assert _preset_for(unet, PRESETS["cpu"])["decoder_channels"] == "128,64,32,16,8"
    assert "decoder_channels" not in _preset_for(fpn, PRESETS["cpu"])  # FPN has no decoder widths: not an error
    assert "decoder_channels" not in _preset_for(RunSpec("pp", {"model": "unetplusplus"}), PRESETS["cpu"])  # not measured there
    assert "decoder_channels" not in _preset_for(pinned, PRESETS["cpu"])  # the run's own (smp's default) wins
    assert "decoder_channels" not in _preset_for(unet, PRESETS["cpu"], {"model": "fpn"})  # a model given on the command line
    assert _preset_for(fpn, PRESETS["cpu"])["missing_sequence_p"] == 0.15  # the rest of the preset still applies
    architectures = load_experiment("architectures")
    for spec in architectures.runs:  # every architecture, unpinned, trains with the preset: none is refused
        unpinned = RunSpec(spec.name, {k: v for k, v in spec.options.items() if k != "decoder_channels"})
        options = {**unpinned.options, **_preset_for(unpinned, PRESETS["cpu"])}
        assert ("decoder_channels" in options) == (options["model"] == "unet"), spec.name
        TrainConfig(out=Path("x"), train_csv=Path("t.csv"), **options).validate()


def test_report_is_self_contained(two_runs_done, tmp_path: Path):
    _, out, _ = two_runs_done
    assert main(["report", "--runs", str(out), "--out", str(tmp_path / "report.html")]) == 0
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 4  # bar chart, 2 training curves, overlays
    assert "<table" in page and "Experiment: two" in page and "Sample overlays" in page
    assert "src=\"http" not in page and "href=\"http" not in page


def test_report_lists_a_run_trained_without_validation(tmp_path: Path):
    """A ``--val-csv none`` run (the shipped model's) has ``final.ckpt`` and no ``best.ckpt``: it is listed, said
    to involve no pick, and a run folder without any checkpoint is not."""
    final, empty = tmp_path / "runs" / "final", tmp_path / "runs" / "crashed"
    for run in (final, empty):
        (run / "logs" / "version_0").mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps({"model": "Unet", "encoder": "resnet18", "loss": "dice+bce",
                                                      "epochs_completed": 2, "train_images_per_second": 3.5}))
        (run / "logs" / "version_0" / "metrics.csv").write_text("epoch,step,train_loss_epoch\n0,9,0.8\n1,19,0.6\n")
    (final / "final.ckpt").write_bytes(b"")
    assert main(["report", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "report.html")]) == 0
    page = (tmp_path / "report.html").read_text()
    assert "<h3>final</h3>" in page and "<code>final.ckpt</code> (no validation pick)" in page
    assert "crashed" not in page and page.count("data:image/png;base64,") == 1  # final's training curve


def test_wheel_carries_the_experiments_and_assets(tmp_path: Path):
    """Build the wheel, install it without -e into a folder, and run it from outside the source tree."""
    import os
    import shutil
    import subprocess
    import sys
    import zipfile

    root = Path(__file__).resolve().parents[1]
    source = tmp_path / "source"  # a copy, so the build leaves nothing in the checkout
    shutil.copytree(root / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    (source / "src" / "gliomaseg" / "assets" / "MODEL_CARD.md").write_text("# card\n")
    (source / "src" / "gliomaseg" / "assets" / "gliomaseg-default.onnx").write_bytes(b"onnx")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    built = subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("gliomaseg-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"gliomaseg/configs/experiments/encoders.yaml", "gliomaseg/assets/MODEL_CARD.md",
            "gliomaseg/assets/gliomaseg-default.onnx", "gliomaseg/__main__.py"} <= names
    target = tmp_path / "installed"
    installed = subprocess.run(pip + ["install", "--no-deps", "--no-compile", "--target", str(target), str(wheel)], capture_output=True, text=True,
                               timeout=300)
    assert installed.returncode == 0, installed.stderr[-2000:]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import gliomaseg; print(gliomaseg.__file__)"], capture_output=True, text=True,
                           env=env, cwd=outside)
    assert where.stdout.strip().startswith(str(target)), where.stdout + where.stderr
    listed = subprocess.run([sys.executable, "-m", "gliomaseg", "experiment", "--list"], capture_output=True, text=True, env=env,
                            cwd=outside, timeout=300)
    assert listed.returncode == 0, listed.stderr[-2000:]
    for name in ("encoders: 3 runs", "architectures: 14 runs", "lowlr: 10 runs", "split: 2 runs", "losses: 10 runs", "crossval: 5 runs",
                 "levers: 9 runs", "crossval_intensity: 5 runs"):
        assert name in listed.stdout
    missing = subprocess.run([sys.executable, "-m", "gliomaseg", "experiment", "encoder", "--data", "d", "--out", "o"],
                             capture_output=True, text=True, env=env, cwd=outside, timeout=300)
    assert missing.returncode == 2 and "known: architectures, crossval, crossval_distill, crossval_intensity, crossval_light, crossval_long, crossval_robust, encoders, levers, losses, lowlr, split" in missing.stderr


def test_runs_are_scored_on_the_device_they_trained_on(two_runs_done, prepared: Path, tmp_path: Path, monkeypatch):
    import shutil

    two_runs, trained, _ = two_runs_done
    out = tmp_path / "exp"
    shutil.copytree(trained, out)  # a copy: this test rescores the run
    run = out / "two" / "dice"
    (run / "status.json").write_text(json.dumps({"state": "running", "trained": True}))  # trained, not yet scored
    import torch

    import gliomaseg.inference.torch_backend as predictor

    real_load, devices = predictor.load_checkpoint, []

    def load_on_cpu(path, device="cpu", **kwargs):
        devices.append(device)
        return real_load(path, device="cpu", **kwargs)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine, as Lightning would see it
    monkeypatch.setattr(predictor, "load_checkpoint", load_on_cpu)
    results = run_experiment(two_runs, prepared, out, epochs=1, image_size=64, only=["dice"], extra_options=TINY)
    assert devices == ["cuda"] and results.loc[0, "status"] == "done" and results.loc[0, "eval_device"] == "cuda"
    (run / "status.json").write_text(json.dumps({"state": "running", "trained": True}))
    results = run_experiment(two_runs, prepared, out, epochs=1, image_size=64, only=["dice"],
                             extra_options={**TINY, "accelerator": "cpu"})
    assert devices == ["cuda", "cpu"] and results.loc[0, "status"] == "done" and results.loc[0, "eval_device"] == "cpu"


def test_report_of_committed_results_charts_patient_dice_with_its_noise(tmp_path: Path, monkeypatch):
    """The committed layout alone (no checkpoints): a section per experiment, per-patient Dice charted with its noise,
    image-wise IoU kept as a column, and no absolute path of the folder it ran in."""
    import math

    import gliomaseg.evaluation.charts as visualization

    results = tmp_path / "results"
    archs, folds, own = results / "archs", results / "cv", results / "own"
    for folder in (archs, folds, own):
        folder.mkdir(parents=True)
    patients = [f"P{i}" for i in range(4)]
    unet, seed7 = [0.9, 0.5, 0.9, 0.5], [0.5, 0.9, 0.5, 0.9]
    pd.DataFrame({"run": ["Unet", "Unet-seed7", "PAN"], "split": "patient", "patient_dice_mean": [0.7, 0.7, 0.6],
                  "patient_dice_median": [0.7, 0.7, 0.6], "iou_imagewise": [0.912, 0.911, 0.95], "reference_iou": [0.81, None, 0.78],
                  "status": ["done", "done", f"failed: DataError: {tmp_path}/data/x.tif: does not decode"]}).to_csv(archs / "results.csv", index=False)
    pd.DataFrame({"run": ["Unet"] * 4 + ["Unet-seed7"] * 4, "patient": patients * 2, "dice_3d": unet + seed7}).to_csv(
        archs / "patients.csv", index=False)
    (archs / "experiment.json").write_text(json.dumps({"experiment": "archs", "description": "three architectures", "data": str(tmp_path)}))
    pd.DataFrame({"run": ["fold0", "fold1"], "split": ["fold0", "fold1"], "patient_dice_mean": [0.8, 0.6],
                  "patient_dice_mean_last": [0.75, 0.6], "iou_imagewise": [0.9, 0.85], "status": "done"}).to_csv(folds / "results.csv", index=False)
    pd.DataFrame({"fold": ["fold0", "fold0", "fold1", "fold1"], "patient": patients, "dice_3d": [0.7, 0.8, 0.5, 0.7]}).to_csv(
        folds / "patients.csv", index=False)  # the last epoch's patients: fold0 averages to its last score, fold1 to both
    (folds / "crossval.json").write_text(json.dumps({"folds": ["fold0", "fold1"], "patient_dice_mean": {"mean": 0.7, "sd_over_folds": 0.1414, "folds": 2}}))
    pd.DataFrame({"run": ["a", "b"], "epochs": 8, "best_epoch_val_dice": [0.71, 0.72], "best_patient_dice_mean": [None, 0.73],
                  "last_epoch_val_iou_imagewise": [0.88, 0.89]}).to_csv(own / "own.csv", index=False)
    (results / "mdonly.md").write_text("# Experiment `mdonly`: kept as Markdown\n\n| run | iou_imagewise | reference_iou | patient_dice_mean |\n"
                                       "|---|---|---|---|\n| r18 | 0.778 | 0.820 | 0.624 |\n")
    charts = []

    def recording(labels, panels, path, **kwargs):
        charts.append((list(labels), panels, kwargs.get("errors")))
        return original(labels, panels, path, **kwargs)

    original = visualization.plot_bar_panels
    monkeypatch.setattr(visualization, "plot_bar_panels", recording)
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--runs", "results", "--out", "results/report.html"]) == 0
    page = (results / "report.html").read_text()
    assert str(tmp_path) not in page and str(tmp_path.resolve()) not in page and "./data/x.tif" in page
    assert "src=\"http" not in page and "href=\"http" not in page
    for name in ("archs", "cv", "own", "mdonly"):
        assert f"Experiment: {name}</h2>" in page, name
    assert "three architectures" in page and "kept as Markdown" in page and page.count("data:image/png;base64,") == 4
    assert "<th>image-wise IoU (ours)</th>" in page and "<th>case study (image-wise IoU)</th>" in page and "0.912" in page
    assert "Run-to-run noise (Unet vs Unet-seed7): 0.462" in page  # the paired per-patient spread, as case_study_claims finds it
    assert "class='wrap'" in page and "overflow-x:auto" in page
    by_title = {labels[0]: (panels, errors) for labels, panels, errors in charts}
    (ylabel, series), = by_title["Unet"][0]
    assert "Dice" in ylabel and "IoU" not in ylabel and series["ours"][:2] == [0.7, 0.7]  # Dice bars, not image-wise IoU
    se = 0.4 / math.sqrt(3) / 2  # sd of (0.9, 0.5, 0.9, 0.5), over the square root of 4 patients
    unet_errors = by_title["Unet"][1][0]["ours"]
    assert unet_errors[:2] == pytest.approx([se, se]) and unet_errors[2] is None  # PAN has no per-patient rows
    (_, cv_series), = by_title["fold0"][0]
    assert [label for label, *_ in charts if label[0] == "fold0"][0] == ["fold0", "fold1", "mean of 2 folds"]
    assert cv_series["best.ckpt"] == pytest.approx([0.8, 0.6, 0.7]) and cv_series["last.ckpt"] == pytest.approx([0.75, 0.6, None])
    cv_errors = by_title["fold0"][1][0]
    assert cv_errors["best.ckpt"][0] is None and cv_errors["best.ckpt"][2] == pytest.approx(0.1414)  # spread over folds
    assert cv_errors["last.ckpt"][:2] == pytest.approx([0.05, 0.1])  # (0.7, 0.8) and (0.5, 0.7) over 2 patients each
    (_, own_series), = by_title["a"][0]
    assert own_series["ours"] == pytest.approx([0.71, 0.73])  # evaluate's number where it scored, training's logged one elsewhere


def test_a_run_resumes_with_the_recipe_it_started_with_when_the_preset_changed(prepared: Path, tmp_path: Path, monkeypatch,
                                                                               capsys):
    """A preset adopted while a run was half way (here: another lr and decoder) does not reach the resumed run: it
    keeps the options it started with, says so, and trains on; what the file itself sets is taken as given."""
    from gliomaseg.experiments.spec import PRESETS

    spec = _yaml(tmp_path / "one.yaml", "name: one\ndescription: one run\nbase: {model: unet, encoder: resnet18}\n"
                                        "runs:\n  - {name: only, loss: dice}\n")
    monkeypatch.setitem(PRESETS, "tiny", {"image_size": 64, "epochs": 1, "lr": 0.05, "scheduler": "none"})
    run_experiment(spec, prepared, tmp_path / "exp", preset="tiny", extra_options=TINY)
    run = tmp_path / "exp" / "one" / "only"
    (run / "status.json").unlink()  # as if the session had been killed after its first epoch
    monkeypatch.setitem(PRESETS, "tiny", {"image_size": 64, "epochs": 1, "lr": 0.01, "scheduler": "none",
                                          "decoder_channels": "64,32,16,8,8"})
    capsys.readouterr()
    results = run_experiment(spec, prepared, tmp_path / "exp", preset="tiny", epochs=2, extra_options=TINY)
    printed = capsys.readouterr().out
    assert results.loc[0, "status"] == "done" and results.loc[0, "epochs"] == 2
    assert "resumed with lr=0.05 as it started (this session would have used 0.01)" in printed
    assert "resumed with decoder_channels=None as it started" in printed
    config = json.loads((run / "config.json").read_text())
    assert (config["lr"], config["decoder_channels"], config["epochs"], config["loss"]) == (0.05, None, 2, "dice")
    # what the experiment file sets is taken as given: changed under a half-done run, it is refused, named
    (run / "status.json").unlink()
    spec.write_text(spec.read_text().replace("loss: dice", "loss: bce"))
    failed = run_experiment(spec, prepared, tmp_path / "exp", preset="tiny", epochs=2, extra_options=TINY)
    assert "loss 'dice' then, 'bce' now" in failed.loc[0, "status"]
    assert json.loads((run / "config.json").read_text())["loss"] == "dice"  # the run is left as it was
