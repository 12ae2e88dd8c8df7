import csv
import json
import math

import open_clip
import pytest
import torch
from typer.testing import CliRunner

import zsclip
from zsclip.cli import app
from zsclip.core.errors import UsageError
from zsclip.datasets.shapes import HELD_OUT, write_dataset
from zsclip.train import TrainConfig, clip_loss, lr_at, param_groups, train

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    write_dataset(out, n=96, seed=3, size=64, eval_per_class=1)
    return out


def _cfg(data, output, **kw):
    settings = {"epochs": 2, "batch_size": 32, "warmup": 2, "templates": "shapes", **kw}
    return TrainConfig(data=str(data), config="shapes-rn", output=str(output), **settings)


def test_loss_equals_open_clip_clip_loss():
    torch.manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(64, 32), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(64, 32), dim=-1)
    scale = torch.tensor(1 / 0.07)
    reference = open_clip.ClipLoss()(img, txt, scale)
    assert clip_loss(img, txt, scale).item() == pytest.approx(reference.item(), abs=1e-5)


def test_schedule_warms_up_linearly_then_decays_to_zero():
    assert lr_at(0, 1.0, 10, 100) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, 100) == pytest.approx(1.0)
    assert lr_at(10, 1.0, 10, 100) == pytest.approx(1.0)
    assert lr_at(55, 1.0, 10, 100) == pytest.approx(0.5)
    assert lr_at(100, 1.0, 10, 100) == pytest.approx(0.0, abs=1e-12)


def test_no_weight_decay_on_biases_norms_embeddings_and_logit_scale():
    model = open_clip.CLIP(**zsclip.models.model_config("shapes-rn"))
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    exempt = {names[id(p)] for p in no_decay["params"]}
    assert {"logit_scale", "token_embedding.weight", "positional_embedding", "ln_final.weight"} <= exempt
    assert all(p.ndim >= 2 for p in decay["params"]) and decay["weight_decay"] == 0.1
    assert not any(n.endswith(".bias") for n in (names[id(p)] for p in decay["params"]))
    assert no_decay["weight_decay"] == 0.0


def test_temperature_starts_at_0_07():
    model = open_clip.CLIP(**zsclip.models.model_config("shapes-rn"))
    assert model.logit_scale.exp().item() == pytest.approx(1 / 0.07, rel=1e-5)


def test_few_steps_train_a_model_that_loads_everywhere(tiny_shapes, tmp_path):
    out = tmp_path / "model"
    metrics = train(_cfg(tiny_shapes, out))
    assert metrics["epoch"] == 2 and metrics["seen_acc1"] is not None and metrics["held_out_acc1"] is not None
    assert sorted(metrics["held_out_classes"]) == sorted(f"{c} {s}" for c, s in HELD_OUT)
    rows = list(csv.DictReader(open(out / "train_log.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 7))
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    config = json.loads((out / "open_clip_config.json").read_text())
    assert config["zsclip"]["templates"] == "shapes" and config["zsclip"]["metrics"]["epoch"] == 2
    weights = (out / "open_clip_model.safetensors").read_bytes()
    assert config["zsclip"]["weights_sha256"] == __import__("hashlib").sha256(weights).hexdigest()

    model = open_clip.create_model(f"local-dir:{out}")
    assert model.visual.image_size == 64
    result = runner.invoke(
        app, ["classify", str(tiny_shapes / "eval"), "--model", str(out), "-c", "red star,blue cross"]
    )
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 36


def test_resume_continues_the_same_loss_curve(tiny_shapes, tmp_path):
    full = tmp_path / "full"
    train(_cfg(tiny_shapes, full, epochs=3))

    class Crash(Exception):
        pass

    def crash_after_first_epoch(epoch, metrics):
        if epoch == 0:
            raise Crash

    part = tmp_path / "part"
    with pytest.raises(Crash):
        train(_cfg(tiny_shapes, part, epochs=3), on_epoch_end=crash_after_first_epoch)
    with open(part / "train_log.csv", "a") as log:  # a row the crashed run wrote after its last checkpoint
        log.write("4,1,9.999,0.001,14.3,100.0,0\n")
    train(TrainConfig(data="", config="", output=str(part)), resume=True)

    def losses(d):
        return [r["loss"] for r in csv.DictReader(open(d / "train_log.csv"))]

    assert len(losses(full)) == 9
    assert losses(part) == losses(full)
    a = (full / "open_clip_model.safetensors").read_bytes()
    assert a == (part / "open_clip_model.safetensors").read_bytes()


def test_missing_column_empty_data_and_missing_images(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("path,text\na.png,a cat\n")
    with pytest.raises(UsageError, match="missing column\\(s\\) caption, filepath"):
        train(_cfg(bad, tmp_path / "o"))
    empty = tmp_path / "empty.csv"
    empty.write_text("filepath,caption\n")
    with pytest.raises(UsageError, match="no usable image-caption pairs"):
        train(_cfg(empty, tmp_path / "o"))


def test_missing_image_files_are_skipped_and_counted(tiny_shapes, tmp_path, capsys):
    rows = list(csv.reader(open(tiny_shapes / "captions.csv")))
    data = tmp_path / "captions.csv"
    with open(data, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(rows[0])
        w.writerows([[str(tiny_shapes / p), c] for p, c in rows[1:]])
        w.writerows([[str(tmp_path / f"gone{i}.png"), "a red circle"] for i in range(5)])
    train(_cfg(data, tmp_path / "o", epochs=1, eval_dir=str(tiny_shapes / "eval")))
    assert "skipped 5 captions whose image file is missing" in capsys.readouterr().err


def test_cli_train_usage_errors(tmp_path):
    result = runner.invoke(app, ["train", str(tmp_path), "--config", "shapes-rn", "--output", str(tmp_path / "o")])
    assert result.exit_code == 2 and "no captions CSV" in result.stderr
    result = runner.invoke(app, ["train", "--resume", str(tmp_path)])
    assert result.exit_code == 2 and "no checkpoint.pt" in result.stderr
