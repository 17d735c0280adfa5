"""The Python module with Debian's python3, numpy and pytest, on the test pipelines: the native API, and upstream
StreamDiffusion's wrapper flow (examples/img2img/single.py) with only its import line changed."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import streamgen

DATA = os.environ["STREAMGEN_TEST_DATA"]
MODELS = os.environ["STREAMGEN_MODELS"]
SD = os.path.join(DATA, "tiny-sd21")
TAESD = os.path.join(DATA, "taesd")


@pytest.fixture(scope="module")
def pipeline():
    return streamgen.Pipeline(SD, taesd=TAESD)


def pattern(width, height, t=0):
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    image[10:30, 8 + 4 * t:28 + 4 * t] = (230, 40, 60)
    return image


def test_version_and_build_info():
    assert streamgen.__version__ == "0.1.0"
    assert streamgen.build_info()["api_version"] == 1


def test_img2img_numpy_in_and_out(pipeline):
    assert pipeline.kind == "stable-diffusion"
    with streamgen.Stream(pipeline, width=64, height=64, prompt="oil painting") as stream:
        stream.push(pattern(96, 80))
        out = stream.pop(timeout=60)
        assert out.shape == (64, 64, 3) and out.dtype == np.uint8
        assert stream.pop(timeout=0) is None
        # A BGRA view with padded rows (a slice of a wider buffer) is the same picture.
        wide = np.zeros((80, 100, 4), np.uint8)
        wide[:, :96, :3] = pattern(96, 80)[..., ::-1]
        stream.push(wide[:, :96], channel_order="bgr")
        assert stream.pop(timeout=60).shape == (64, 64, 3)
        stats = stream.stats()
        assert stats["frames_in"] == 2 and stats["frames_out"] == 2
        assert "unet" in stats["stages"]


def test_the_same_picture_in_two_layouts_gives_the_same_output(pipeline):
    rgb = pattern(64, 64)
    bgra = np.concatenate([rgb[..., ::-1], np.full((64, 64, 1), 7, np.uint8)], axis=-1)
    outputs = []
    for image, order in ((rgb, "rgb"), (bgra, "bgr")):
        with streamgen.Stream(pipeline, width=64, height=64, prompt="oil painting", seed=5) as stream:
            stream.push(image, channel_order=order)
            outputs.append(stream.pop(timeout=60))
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_errors_name_what_is_wrong(pipeline):
    with pytest.raises(streamgen.Error, match="/no/such/model"):
        streamgen.Pipeline("/no/such/model", taesd=TAESD)
    with pytest.raises(streamgen.Error, match="its streams need a TAESD folder"):
        streamgen.Pipeline(SD)
    with streamgen.Stream(pipeline, width=64, height=64) as stream:
        with pytest.raises(ValueError, match=r"\[height, width, 3 or 4\]"):
            stream.push(np.zeros((64, 64), np.uint8))
        with pytest.raises(ValueError, match="'rgb' or 'bgr'"):
            stream.push(pattern(64, 64), channel_order="yuv")
    with pytest.raises(streamgen.Error, match="cfg type 'double'"):
        streamgen.Stream(pipeline, cfg_type="double")
    with pytest.raises(ValueError, match="closed"):
        stream.pop(timeout=0)


def test_text_to_video_from_a_streamdit_model():
    dit = streamgen.Pipeline(os.path.join(MODELS, "streamdit-shapes-32-student"))
    assert dit.kind == "streamdit"
    with streamgen.Stream(dit, width=64, height=0, prompt="a red circle moving right", fps=0) as stream:
        assert (stream.width, stream.height) == (64, 64)  # the engine's resolution of height 0
        frames = [stream.pop(timeout=60) for _ in range(3)]
        assert all(f.shape == (64, 64, 3) for f in frames)
        stream.set_prompt("a blue square moving up")
        assert stream.pop(timeout=60) is not None
        with pytest.raises(streamgen.Error, match="takes no input frames"):
            stream.push(pattern(64, 64))


def test_wrapper_refuses_what_it_cannot_do():
    common = dict(model_id_or_path=SD, t_index_list=[32, 45], vae_id=TAESD, width=64, height=64)
    with pytest.raises(ValueError, match="output_type 'pt'"):
        streamgen.StreamDiffusionWrapper(output_type="pt", **common)
    with pytest.raises(ValueError, match="use_tiny_vae=False"):
        streamgen.StreamDiffusionWrapper(use_tiny_vae=False, **common)
    with pytest.raises(ValueError, match="device_ids"):
        streamgen.StreamDiffusionWrapper(device_ids=[0, 1], **common)
    with pytest.raises(ValueError, match="needs lcm_lora_id"):
        streamgen.StreamDiffusionWrapper(use_lcm_lora=True, **common)
    with pytest.raises(ValueError, match="downloads nothing"):
        streamgen.StreamDiffusionWrapper(model_id_or_path="KBlueLeaf/kohaku-v2.1", t_index_list=[32, 45], vae_id=TAESD)


# Upstream's examples/img2img/single.py main(), verbatim but for the import and the paths the test gives it.
UPSTREAM_SINGLE = textwrap.dedent('''
    import os
    import sys
    from typing import Literal, Dict, Optional

    from streamgen import StreamDiffusionWrapper  # was: from utils.wrapper import StreamDiffusionWrapper


    def main(
        input: str,
        output: str,
        model_id_or_path: str,
        lora_dict: Optional[Dict[str, float]] = None,
        prompt: str = "1girl with brown dog hair, thick glasses, smiling",
        negative_prompt: str = "low quality, bad quality, blurry, low resolution",
        width: int = 512,
        height: int = 512,
        acceleration: Literal["none", "xformers", "tensorrt"] = "xformers",
        use_denoising_batch: bool = True,
        guidance_scale: float = 1.2,
        cfg_type: Literal["none", "full", "self", "initialize"] = "self",
        seed: int = 2,
        delta: float = 0.5,
    ):
        if guidance_scale <= 1.0:
            cfg_type = "none"

        stream = StreamDiffusionWrapper(
            model_id_or_path=model_id_or_path,
            lora_dict=lora_dict,
            t_index_list=[22, 32, 45],
            frame_buffer_size=1,
            width=width,
            height=height,
            warmup=10,
            acceleration=acceleration,
            mode="img2img",
            use_denoising_batch=use_denoising_batch,
            cfg_type=cfg_type,
            seed=seed,
        )

        stream.prepare(
            prompt=prompt,
            negative_prompt=negative_prompt,
            num_inference_steps=50,
            guidance_scale=guidance_scale,
            delta=delta,
        )

        image_tensor = stream.preprocess_image(input)

        for _ in range(stream.batch_size - 1):
            stream(image=image_tensor)

        output_image = stream(image=image_tensor)
        output_image.save(output)


    main(sys.argv[1], sys.argv[2], sys.argv[3], width=64, height=64)
''')


def test_upstream_img2img_example_runs_unchanged_but_for_its_import(tmp_path):
    from PIL import Image

    source = tmp_path / "input.png"
    Image.fromarray(pattern(96, 80)).save(source)
    script = tmp_path / "single.py"
    script.write_text(UPSTREAM_SINGLE)
    output = tmp_path / "output.png"
    env = dict(os.environ, STREAMGEN_TAESD=TAESD)  # upstream downloads madebyollin/taesd; streamgen is told where it is
    run = subprocess.run([sys.executable, str(script), str(source), str(output), SD], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    with Image.open(output) as im:
        assert im.size == (64, 64)
