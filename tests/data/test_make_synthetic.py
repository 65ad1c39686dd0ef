"""tools/make_synthetic.py writes COCO and VOC trees the datasets read back."""
import importlib.util
import os

import torch

from dcn_det.data.coco import COCODataset
from dcn_det.data.synthetic import SyntheticDataset
from dcn_det.data.voc import VOCDataset

_TOOL = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "make_synthetic.py")


def _tool():
    spec = importlib.util.spec_from_file_location("make_synthetic", _TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_coco_and_voc_layouts(tmp_path):
    tool = _tool()
    args = ["--num-train", "3", "--num-val", "2", "--seed", "9", "--image-size", "64", "96"]
    assert tool.main(["--output", str(tmp_path / "c")] + args) == 0
    assert tool.main(["--output", str(tmp_path / "v"), "--format", "voc"] + args) == 0
    ref = SyntheticDataset(2, seed=9, image_size=(64, 96), split="val")
    coco = COCODataset(str(tmp_path / "c" / "annotations" / "instances_val.json"), str(tmp_path / "c" / "val"))
    voc = VOCDataset(str(tmp_path / "v"), ["2007/val"])
    assert len(coco) == len(voc) == 2
    assert len(VOCDataset(str(tmp_path / "v"), ["2007/train"])) == 3
    for i in range(2):
        assert torch.equal(coco[i][0], ref[i][0])
        assert torch.equal(coco[i][1]["boxes"], ref[i][1]["boxes"])
        assert torch.equal(voc[i][1]["boxes"], ref[i][1]["boxes"])


def _write_config(tmp_path, test_min_size=24.0):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "data:\n"
        "  train:\n"
        "    type: synthetic\n"
        "    synthetic: {num_images: 50, seed: 4, image_size: [64, 96], min_object_size: 20,\n"
        "                max_objects: 3, split: train}\n"
        "  test:\n"
        "    type: synthetic\n"
        f"    synthetic: {{num_images: 50, seed: 5, image_size: [64, 96], split: val,\n"
        f"                min_object_size: {test_min_size}}}\n")
    return str(cfg)


def test_config_mode_writes_the_configs_in_memory_sets(tmp_path):
    cfg = _write_config(tmp_path)
    out = tmp_path / "c"
    assert _tool().main(["--output", str(out), "--config", cfg, "--num-train", "3",
                         "--num-val", "2"]) == 0
    for split, ref in (("train", SyntheticDataset(3, seed=4, image_size=(64, 96), split="train",
                                                  min_object_size=20, max_objects=3)),
                       ("val", SyntheticDataset(2, seed=5, image_size=(64, 96), split="val",
                                                min_object_size=24))):
        coco = COCODataset(str(out / "annotations" / f"instances_{split}.json"), str(out / split))
        assert len(coco) == len(ref)
        for i in range(len(ref)):
            assert torch.equal(coco[i][0], ref[i][0])
            assert torch.equal(coco[i][1]["boxes"], ref[i][1]["boxes"])


def test_config_mode_checks_both_splits_before_writing(tmp_path, capsys):
    cfg = _write_config(tmp_path, test_min_size=500.0)
    out = tmp_path / "bad"
    assert _tool().main(["--output", str(out), "--config", cfg]) == 2
    err = capsys.readouterr().err
    assert "val split" in err and "cfg.yaml" in err and "min_object_size=500" in err
    assert not out.exists()


def test_parallel_writers_write_the_same_files(tmp_path):
    from dcn_det.data.synthetic import SyntheticDataset, write_coco, write_voc
    ds = SyntheticDataset(num_images=10, seed=3, split="train")
    for write in (write_coco, write_voc):
        one, two = tmp_path / f"{write.__name__}1", tmp_path / f"{write.__name__}2"
        write(ds, str(one), workers=1)
        write(ds, str(two), workers=2)
        files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
        assert len(files) >= 10
        for rel in files:
            assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel


def test_config_mode_applies_every_set(tmp_path):
    cfg = _write_config(tmp_path)
    out = tmp_path / "s"
    assert _tool().main(["--output", str(out), "--config", cfg,
                         "--set", "data.train.synthetic.num_images=2",
                         "--set", "data.test.synthetic.num_images=1",
                         "data.train.synthetic.num_images=3"]) == 0  # the last one wins
    assert len(COCODataset(str(out / "annotations" / "instances_train.json"),
                           str(out / "train"))) == 3
    assert len(COCODataset(str(out / "annotations" / "instances_val.json"), str(out / "val"))) == 1
