"""RN50 @224 encoder speed on CPU: cn_clip PyTorch eager fp32 vs clip_match ONNX fp32 vs INT8.

One process, one thread count for everything (default 2), random weights (RN50@RBT3-chinese,
seed 0, exported and verified by `clip_match.export`). Both sides run their whole path from
PIL images / strings: cn_clip's ``image_transform`` + ``encode_image`` and ``tokenize`` (52
tokens) + ``encode_text`` against ``Encoder.encode_images`` / ``encode_texts`` (which pads each
batch to its longest text). To separate padding from the runtime, the ONNX fp32 text tower is
also timed at the full 52 tokens.

The INT8 bundle is exported with ``--calibration-images``: its image tower is quantised
statically (QDQ), calibrated on generated natural-looking synthetic images (gradients, shapes,
blur, noise) written to a temporary folder; no real photos are available offline. The images
that are timed and compared (cosine to fp32) are generated with another seed and are not among
the calibration images. For comparison, the image tower's dynamic INT8 variants are timed too:
convolutions fp32 (what int8 gives without calibration images) and convolutions as dynamic
``ConvInteger``. On a CUDA machine FP16 ONNX (CUDA provider) vs PyTorch fp16 is added.

Goals (issue 3): ONNX fp32 >= 1.5x PyTorch eager; INT8 >= 3x PyTorch eager, cosine >= 0.99 to fp32.
Run: .venv/bin/python -m benchmarks.bench_encoder [--threads 2] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (median), after one warm-up")
    parser.add_argument("--batches", default="1,9")
    parser.add_argument("--calibration-count", type=int, default=100,
                        help="synthetic calibration images to generate (a fifth is held out by the export)")
    parser.add_argument("--quality-images", type=int, default=24,
                        help="fresh synthetic images (not used for calibration) for the cosine comparison")
    parser.add_argument("--no-alternatives", action="store_true", help="skip the dynamic INT8 image variants")
    return parser.parse_args()


ARGS = parse_args()
os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)  # before torch / onnxruntime load

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter  # noqa: E402

from clip_match import Encoder  # noqa: E402
from clip_match.export import export_bundle  # noqa: E402
from clip_match.export.precision import quantize_int8  # noqa: E402
from clip_match.model import create_model, load_config, save_slim_checkpoint  # noqa: E402
from clip_match.runtime.bundle import IMAGE_INPUT, TEXT_INPUT, Bundle  # noqa: E402
from clip_match.runtime.preprocess import preprocess  # noqa: E402

INT8_IMAGES = "ONNX int8 static, calibrated (Encoder)"
INT8_QUALITY = "image: int8 static vs ONNX fp32 (images not used for calibration)"
TEXTS = ["一只橘色的猫趴在窗台上", "红色的雨伞", "a dog playing in the snow", "北京天安门广场的夜景",
         "戴着墨镜的熊猫", "一碗热气腾腾的拉面", "蓝色的汽车停在路边", "日落时的海滩", "两个小孩在踢足球"]


def timed(function, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up."""
    function()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def pictures(count: int, seed: int) -> list[Image.Image]:
    """Natural-looking synthetic images: a two-colour gradient in a random direction, a few filled
    shapes and lines, light blur, sensor-like noise; random sizes and aspect ratios."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        width, height = (int(v) for v in rng.integers(180, 480, 2))
        y, x = np.mgrid[0:height, 0:width] / max(width, height)
        angle = rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(angle) * x + np.sin(angle) * y)[..., None]
        ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
        low, high = rng.uniform(0, 255, (2, 3))
        image = Image.fromarray((low + (high - low) * ramp).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(2, 8))):
            box = sorted(rng.integers(0, width, 2)) + sorted(rng.integers(0, height, 2))
            box = [box[0], box[2], box[1] + 1, box[3] + 1]
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            shape = rng.integers(0, 4)
            if shape == 0:
                draw.ellipse(box, fill=colour)
            elif shape == 1:
                draw.rectangle(box, fill=colour)
            elif shape == 2:
                points = [(int(rng.integers(0, width)), int(rng.integers(0, height))) for _ in range(3)]
                draw.polygon(points, fill=colour)
            else:
                draw.line(box, fill=colour, width=int(rng.integers(1, 12)))
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 2.5))))
        noisy = np.asarray(image, np.float32) + rng.normal(0, rng.uniform(2, 20), (height, width, 3))
        out.append(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)))
    return out


def write_calibration_images(directory: Path, count: int) -> Path:
    directory.mkdir()
    for index, image in enumerate(pictures(count, seed=1)):
        image.save(directory / f"{index:04d}.jpg", quality=90)
    return directory


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


def session(path: Path, providers=("CPUExecutionProvider",)) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = ARGS.threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=list(providers))


def int8_alternatives(fp32_image: Path, work: Path) -> dict[str, Path]:
    """The image tower's dynamic INT8 variants, to compare with the calibrated static one."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # quantize_dynamic's generic "consider pre-processing" advice
    convs_fp32 = quantize_int8(fp32_image, work / "image.int8-dynamic.onnx")
    conv_integer = work / "image.int8-convinteger.onnx"
    quantize_dynamic(str(fp32_image), str(conv_integer), weight_type=QuantType.QInt8)
    return {"ONNX int8 dynamic, Conv fp32 (no calibration)": convs_fp32,
            "ONNX int8 dynamic incl. Conv (ConvInteger)": conv_integer}


def main() -> int:
    threads, repeats = ARGS.threads, ARGS.repeats
    batches = [int(b) for b in ARGS.batches.split(",")]
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    print(f"bench_encoder: RN50@RBT3-chinese @224, random weights, CPU, {threads} threads, "
          f"median of {repeats} runs; torch {torch.__version__}, onnxruntime {ort.__version__}")

    with tempfile.TemporaryDirectory(prefix="bench_encoder.") as work:
        run(Path(work), threads, repeats, batches)
    return 0


def run(work: Path, threads: int, repeats: int, batches: list[int]) -> None:
    """Export, time every case, print results, quality and goals."""
    from cn_clip.clip import tokenize
    from cn_clip.clip.utils import image_transform

    config = load_config("RN50")
    torch.manual_seed(0)
    model = create_model(config).eval()
    checkpoint = save_slim_checkpoint(model, work / "rn50.pt", config)
    calibration_dir = write_calibration_images(work / "calibration", ARGS.calibration_count)
    print(f"calibration images: {ARGS.calibration_count} generated synthetic images (gradients, shapes, blur, "
          f"noise; seed 1) in {calibration_dir}; timed and compared images: {ARGS.quality_images} others (seed 0)")
    start = time.perf_counter()
    bundle_dir = export_bundle(checkpoint, config, work / "bundle", precisions=("fp32", "int8"),
                               calibration_images=calibration_dir)
    manifest = Bundle.load(bundle_dir).manifest
    print(f"export fp32+int8 (static image tower) with verification: {time.perf_counter() - start:.1f} s; "
          f"int8 image tower: {manifest['quantization']['int8']['image']}; "
          f"verification {manifest['verification']}")
    encoders = {p: Encoder.load(bundle_dir, device="cpu", precision=p, threads=threads) for p in ("fp32", "int8")}

    images = pictures(ARGS.quality_images, seed=0)
    transform = image_transform(224)

    def torch_images(batch):
        with torch.no_grad():
            return model.encode_image(torch.stack([transform(p) for p in batch])).numpy()

    def torch_texts(batch):
        with torch.no_grad():
            return model.encode_text(tokenize(batch, context_length=52)).numpy()

    text_52 = session(Bundle.load(bundle_dir).tower_path("text", "fp32"))
    image_cases = {"PyTorch eager fp32": torch_images,
                   "ONNX fp32 (Encoder)": encoders["fp32"].encode_images,
                   INT8_IMAGES: encoders["int8"].encode_images}
    text_cases = {"PyTorch eager fp32 (52 tokens)": torch_texts,
                  "ONNX fp32 (52 tokens)": lambda b: text_52.run(None, {TEXT_INPUT: tokenize(b, 52).numpy()})[0],
                  "ONNX fp32 (Encoder, pad to longest)": encoders["fp32"].encode_texts,
                  "ONNX int8 (Encoder, pad to longest)": encoders["int8"].encode_texts}
    if not ARGS.no_alternatives:
        for name, path in int8_alternatives(Bundle.load(bundle_dir).tower_path("image", "fp32"), work).items():
            alternative = session(path)
            image_cases[name] = lambda b, s=alternative: s.run(None, {IMAGE_INPUT: preprocess(b, 224)})[0]

    fp32_images, fp32_texts = encoders["fp32"].encode_images(images), encoders["fp32"].encode_texts(TEXTS)
    quality = {
        "image: ONNX fp32 vs PyTorch": min_cosine(fp32_images, torch_images(images)),
        INT8_QUALITY: min_cosine(encoders["int8"].encode_images(images), fp32_images),
        "text: ONNX fp32 vs PyTorch": min_cosine(fp32_texts, torch_texts(TEXTS)),
        "text: int8 vs ONNX fp32": min_cosine(encoders["int8"].encode_texts(TEXTS), fp32_texts),
    }
    for name, case in list(image_cases.items())[3:]:
        quality[f"image: {name} vs ONNX fp32"] = min_cosine(case(images), fp32_images)

    rates: dict[tuple[str, str, int], float] = {}
    for kind, cases, inputs in (("images/s", image_cases, images), ("texts/s", text_cases, TEXTS)):
        for batch in batches:
            sample = (inputs * batch)[:batch]
            for name, case in cases.items():
                rates[kind, name, batch] = batch / timed(lambda: case(sample), repeats)
                print(f"  {kind:8s} batch {batch:2d}  {name:46s} {rates[kind, name, batch]:8.2f}", flush=True)

    print("\nresults (items/s, ratio to PyTorch eager fp32 at the same batch size)")
    for kind, cases in (("images/s", image_cases), ("texts/s", text_cases)):
        baseline = next(iter(cases))
        for batch in batches:
            for name in cases:
                rate = rates[kind, name, batch]
                print(f"{kind:8s} batch {batch:2d}  {name:46s} {rate:8.2f}  x{rate / rates[kind, baseline, batch]:.2f}")
    print("\nquality (least cosine over the samples)")
    for name, value in quality.items():
        print(f"  {name:66s} {value:.6f}")

    baselines = {"images/s": next(iter(image_cases)), "texts/s": next(iter(text_cases))}
    print("\ngoals")
    for batch in batches:
        for kind, fp32, int8 in (("images/s", "ONNX fp32 (Encoder)", INT8_IMAGES),
                                 ("texts/s", "ONNX fp32 (Encoder, pad to longest)",
                                  "ONNX int8 (Encoder, pad to longest)")):
            baseline = rates[kind, baselines[kind], batch]
            r32, r8 = rates[kind, fp32, batch] / baseline, rates[kind, int8, batch] / baseline
            print(f"  {kind:8s} batch {batch:2d}: fp32 x{r32:.2f} ({'met' if r32 >= 1.5 else 'MISSED'} >= 1.5), "
                  f"int8 x{r8:.2f} ({'met' if r8 >= 3 else 'MISSED'} >= 3)")
    int8_cosine = min(quality[INT8_QUALITY], quality["text: int8 vs ONNX fp32"])
    print(f"  int8 cosine to fp32 {int8_cosine:.6f} ({'met' if int8_cosine >= 0.99 else 'MISSED'} >= 0.99)")

    if "CUDAExecutionProvider" in ort.get_available_providers() and torch.cuda.is_available():
        gpu_fp16(bundle_dir, model, images, transform, repeats)
    else:
        print("\nno CUDA (onnxruntime CUDA provider and torch.cuda): FP16 GPU comparison skipped")


def gpu_fp16(bundle_dir: Path, model: torch.nn.Module, images, transform, repeats: int) -> None:
    """FP16 ONNX on the CUDA provider vs PyTorch fp16 eager, batch 1 and 64."""
    from clip_match.export import export_bundle as export

    work = bundle_dir.parent
    fp16_dir = export(work / "rn50.pt", load_config("RN50"), work / "bundle16", precisions=("fp16",))
    encoder = Encoder.load(fp16_dir, device="cuda", precision="fp16")
    cuda_model = model.half().cuda()
    print("\nGPU fp16 (images/s)")
    for batch in (1, 64):
        sample = (images * batch)[:batch]

        def torch_run():
            with torch.no_grad():
                cuda_model.encode_image(torch.stack([transform(p) for p in sample]).half().cuda()).float().cpu()

        torch_rate = batch / timed(torch_run, repeats)
        onnx_rate = batch / timed(lambda: encoder.encode_images(sample), repeats)
        print(f"  batch {batch:2d}  PyTorch fp16 {torch_rate:9.1f}  ONNX fp16 (CUDA) {onnx_rate:9.1f}  "
              f"x{onnx_rate / torch_rate:.2f}")


if __name__ == "__main__":
    sys.exit(main())
