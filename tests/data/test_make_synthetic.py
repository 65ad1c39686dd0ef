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
