"""Coming from Chinese-CLIP: its export command line, its ONNX names and its documented inference
snippet work on clip_match's exports; its build_lmdb_dataset.py flags work on build-lmdb."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from clip_match import cli
from clip_match.runtime.encoder import Encoder

# cn_clip's deployment.md ("运行模型"), verbatim but for the model paths, the CPU provider, the
# architecture's resolution (the tiny test model: 64 px, context 52 as in the guide) and the image path.
SNIPPET = r'''
# 完成必要的import（下文省略）
import onnxruntime
from PIL import Image
import numpy as np
import torch
import argparse
import cn_clip.clip as clip
from clip import load_from_name, available_models
from clip.utils import _MODELS, _MODEL_INFO, _download, available_models, create_model, image_transform

# 载入ONNX图像侧模型（**请替换${DATAPATH}为实际的路径**）
img_sess_options = onnxruntime.SessionOptions()
img_run_options = onnxruntime.RunOptions()
img_run_options.log_severity_level = 2
img_onnx_model_path="@IMG_PATH@"
img_session = onnxruntime.InferenceSession(img_onnx_model_path,
                                        sess_options=img_sess_options,
                                        providers=["CPUExecutionProvider"])

# 预处理图片
model_arch = "ViT-B-16" # 这里我们使用的是ViT-B-16规模，其他规模请对应修改
preprocess = image_transform(@RESOLUTION@)
# 示例皮卡丘图片，预处理后得到[1, 3, 分辨率, 分辨率]尺寸的Torch Tensor
image = preprocess(Image.open("@IMAGE@")).unsqueeze(0)

# 用ONNX模型计算图像侧特征
image_features = img_session.run(["unnorm_image_features"], {"image": image.cpu().numpy()})[0] # 未归一化的图像特征
image_features = torch.tensor(image_features)
image_features /= image_features.norm(dim=-1, keepdim=True) # 归一化后的Chinese-CLIP图像特征，用于下游任务
print(image_features.shape) # Torch Tensor shape: [1, 特征向量维度]

# 载入ONNX文本侧模型（**请替换${DATAPATH}为实际的路径**）
txt_sess_options = onnxruntime.SessionOptions()
txt_run_options = onnxruntime.RunOptions()
txt_run_options.log_severity_level = 2
txt_onnx_model_path="@TXT_PATH@"
txt_session = onnxruntime.InferenceSession(txt_onnx_model_path,
                                        sess_options=txt_sess_options,
                                        providers=["CPUExecutionProvider"])

# 为4条输入文本进行分词。序列长度指定为52，需要和转换ONNX模型时保持一致（参见转换时的context-length参数）
text = clip.tokenize(["杰尼龟", "妙蛙种子", "小火龙", "皮卡丘"], context_length=52)

# 用ONNX模型依次计算文本侧特征
text_features = []
for i in range(len(text)):
    one_text = np.expand_dims(text[i].cpu().numpy(),axis=0)
    text_feature = txt_session.run(["unnorm_text_features"], {"text":one_text})[0] # 未归一化的文本特征
    text_feature = torch.tensor(text_feature)
    text_features.append(text_feature)
text_features = torch.squeeze(torch.stack(text_features),dim=1) # 4个特征向量stack到一起
text_features = text_features / text_features.norm(dim=1, keepdim=True) # 归一化后的Chinese-CLIP文本特征，用于下游任务
print(text_features.shape) # Torch Tensor shape: [4, 特征向量维度]

np.save("@OUT_IMAGE@", image_features.numpy())
np.save("@OUT_TEXT@", text_features.numpy())
'''
TEXTS = ["杰尼龟", "妙蛙种子", "小火龙", "皮卡丘"]


@pytest.fixture(scope="module")
def cn_clip_export(tiny_checkpoint, tmp_path_factory):
    """`clip-match export` run with cn_clip's pytorch_to_onnx.py command line (context 52, as its guide)."""
    deploy = tmp_path_factory.mktemp("deploy")
    prefix = deploy / "tiny"
    status = cli.main(["export", "--model-arch", "tiny", "--pytorch-ckpt-path", str(tiny_checkpoint),
                       "--save-onnx-path", str(prefix), "--convert-text", "--convert-vision",
                       "--context-length", "52", "--download-root", str(deploy / "cache")])
    assert status == 0
    return prefix


def test_cn_clip_flags_write_its_file_names_beside_a_bundle(cn_clip_export, capsys):
    names = sorted(p.name for p in cn_clip_export.parent.iterdir())
    assert names == ["tiny", "tiny.img.fp16.onnx", "tiny.img.fp32.onnx", "tiny.txt.fp16.onnx", "tiny.txt.fp32.onnx"]
    manifest = json.loads((cn_clip_export / "clip_match.json").read_text())
    assert sorted(manifest["precisions"]) == ["fp16", "fp32"] and manifest["context_length"] == 52
    for path in cn_clip_export.parent.glob("*.onnx"):
        graph = onnx.load(str(path)).graph
        tower = "image" if ".img." in path.name else "text"
        assert [i.name for i in graph.input] == [tower]
        assert [o.name for o in graph.output] == [f"unnorm_{tower}_features"]


@pytest.mark.parametrize("precision, least", [("fp32", 0.9999), ("fp16", 0.999)])
def test_the_documented_inference_snippet_runs_unchanged(cn_clip_export, precision, least, synthetic_images,
                                                         tmp_path):
    import cn_clip

    image = tmp_path / "pokemon.png"
    synthetic_images(1, seed=3)[0].save(image)
    code = SNIPPET
    for placeholder, value in {"IMG_PATH": f"{cn_clip_export}.img.{precision}.onnx",
                               "TXT_PATH": f"{cn_clip_export}.txt.{precision}.onnx", "RESOLUTION": "64",
                               "IMAGE": str(image), "OUT_IMAGE": str(tmp_path / "image.npy"),
                               "OUT_TEXT": str(tmp_path / "text.npy")}.items():
        code = code.replace(f"@{placeholder}@", value)
    # the guide runs it with PYTHONPATH=${PYTHONPATH}:`pwd`/cn_clip (for `from clip import ...`)
    env_path = str(Path(cn_clip.__file__).parent)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                   env={"PYTHONPATH": env_path, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    encoder = Encoder.load(cn_clip_export, device="cpu", precision=precision, threads=1)
    images, texts = np.load(tmp_path / "image.npy"), np.load(tmp_path / "text.npy")
    assert (np.sum(images * encoder.encode_images([image]), axis=1) >= least).all()
    assert (np.sum(texts * encoder.encode_texts(TEXTS), axis=1) >= least).all()


def test_encoder_reads_towers_with_cn_clip_fixed_shapes(cn_clip_export, synthetic_images, tmp_path):
    """cn_clip's own exports take exactly (1, 3, R, R) and (1, 52): the encoder feeds them piece by piece."""
    import shutil

    from clip_match.runtime.bundle import Bundle, sha256_file

    fixed = tmp_path / "fixed"
    shutil.copytree(cn_clip_export, fixed)
    manifest = json.loads((fixed / "clip_match.json").read_text())
    for tower, shape in (("image", [1, 3, 64, 64]), ("text", [1, 52])):
        path = fixed / manifest["precisions"]["fp32"][tower]
        model = onnx.load(str(path))
        dims = model.graph.input[0].type.tensor_type.shape.dim
        for dim, size in zip(dims, shape):
            dim.ClearField("dim_param")
            dim.dim_value = size
        onnx.save(model, str(path))
        manifest["files"][path.name] = sha256_file(path)
    (fixed / "clip_match.json").write_text(json.dumps(manifest))
    Bundle.load(fixed)
    images = synthetic_images(3, seed=4)
    dynamic = Encoder.load(cn_clip_export, device="cpu", precision="fp32", threads=1)
    one_by_one = Encoder.load(fixed, device="cpu", precision="fp32", threads=1)
    assert np.allclose(one_by_one.encode_images(images), dynamic.encode_images(images), atol=1e-5)
    assert np.allclose(one_by_one.encode_texts(TEXTS + ["猫"]), dynamic.encode_texts(TEXTS + ["猫"]), atol=1e-5)


def test_bundles_with_the_old_tower_names_still_load():
    """The shipped demo bundle predates cn_clip's names ("input_ids" -> "features")."""
    encoder = Encoder.load(device="cpu")
    assert encoder.encode_texts(["伞"]).shape == (1, encoder.embed_dim)


@pytest.mark.parametrize("argv, message", [
    (["export", "--model-arch", "tiny", "--save-onnx-path", "P", "--convert-text"], "no checkpoint"),
    (["export", "ck.pt", "--model-arch", "tiny", "--save-onnx-path", "P"], "needs --convert-text and/or"),
    (["export", "ck.pt", "--arch", "tiny", "--out", "B", "--convert-text"], "go with --save-onnx-path"),
    (["export", "a.pt", "--pytorch-ckpt-path", "b.pt", "--arch", "tiny", "--out", "B"], "give the checkpoint once"),
])
def test_cn_clip_export_flags_misused(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_build_lmdb_takes_cn_clip_flags(tmp_path, synthetic_images, png, capsys):
    from clip_match.data.formats import write_split
    from clip_match.data.lmdb_reader import LMDBReader

    data = tmp_path / "MUGE"
    images = [(i, png(image)) for i, image in enumerate(synthetic_images(3, seed=5))]
    for split in ("train", "valid"):
        write_split(data, split, images, [(1, "猫", [0, 1]), (2, "狗", [2])])
    # python cn_clip/preprocess/build_lmdb_dataset.py --data_dir ${DATAPATH}/datasets/${dataset_name} --splits train,valid
    assert cli.main(["build-lmdb", "--data_dir", str(data), "--splits", "train,valid"]) == 0
    assert len(LMDBReader(data / "lmdb" / "valid")) == 3
    assert cli.main(["build-lmdb", "--data_dir", str(data), "--splits", "train", "--lmdb_dir",
                     str(tmp_path / "elsewhere")]) == 0
    assert len(LMDBReader(tmp_path / "elsewhere" / "train")) == 3
    assert cli.main(["build-lmdb", str(data), "--data_dir", str(data)]) == 2
    assert "give DATA_DIR once" in capsys.readouterr().err


def test_readme_names_the_program_change_only():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Coming from Chinese-CLIP", 1)[1].split("\n## ", 1)[0]
    for line in ("--model-arch", "--save-onnx-path", "--data_dir", "unnorm_image_features", "-m clip_match.train --"):
        assert line in section, line
