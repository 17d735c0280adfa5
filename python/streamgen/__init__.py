"""streamgen: real-time streaming diffusion (StreamDiffusion, StreamDiT) from Python.

Two layers:

* the native API (``Pipeline``, ``Stream``): load a pipeline once, run any number of live streams on it, numpy
  arrays in and out, the engine's own threads doing the work (see ``docs/embedding.md``);
* ``StreamDiffusionWrapper``: the names and arguments of upstream StreamDiffusion's wrapper
  (``utils/wrapper.py``) for the parts streamgen supports, so that a script written against it runs after
  changing its import line. Arguments it cannot honour raise an error naming them; none is silently dropped.

No PyTorch is needed: the engine (and its LibTorch) lives in ``libstreamgen.so``.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Union

import numpy as np

from ._streamgen import Error, Pipeline, Stream, __version__, build_info, set_log_level

__all__ = ["Error", "Pipeline", "Stream", "StreamDiffusionWrapper", "__version__", "build_info", "set_log_level"]

_log = logging.getLogger("streamgen")


class _Default:
    """Marks an argument the caller did not pass, so that upstream's defaults can be told from choices."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)


def _given(value: Any) -> bool:
    return not isinstance(value, _Default)


def _value(value: Any) -> Any:
    return value.value if isinstance(value, _Default) else value


def _dtype_name(dtype: Any) -> str:
    """torch.float16 (without importing torch), numpy dtypes and strings -> the engine's dtype names."""
    name = str(dtype).replace("torch.", "").lower()
    names = {"float16": "fp16", "half": "fp16", "fp16": "fp16", "bfloat16": "bf16", "bf16": "bf16",
             "float32": "fp32", "float": "fp32", "fp32": "fp32", "auto": "auto"}
    if name not in names:
        raise ValueError(f"dtype {dtype!r} is not one of float16, bfloat16, float32 or 'auto'")
    return names[name]


def _to_pixels(image: Any, name: str = "image") -> np.ndarray:
    """A path, a PIL image or an array (HWC uint8, or float in [0, 1] as HWC or CHW / NCHW) -> uint8 [H, W, 3 or 4]."""
    if isinstance(image, (str, os.PathLike)):
        from PIL import Image

        with Image.open(image) as im:
            return np.asarray(im.convert("RGB"))
    if hasattr(image, "mode") and hasattr(image, "convert"):  # PIL.Image.Image
        return np.asarray(image.convert("RGB"))
    if hasattr(image, "detach") and hasattr(image, "cpu"):  # a torch tensor, when the caller has torch
        image = image.detach().cpu().float().numpy()
    array = np.asarray(image)
    if array.ndim == 4:
        if array.shape[0] != 1:
            raise ValueError(f"{name}: a batch of {array.shape[0]} images; pass one image per call")
        array = array[0]
    if array.ndim != 3:
        raise ValueError(f"{name}: expected an image [H, W, C] or [C, H, W], got shape {array.shape}")
    if array.shape[0] in (3, 4) and array.shape[2] not in (3, 4):
        array = np.transpose(array, (1, 2, 0))  # CHW -> HWC
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"{name}: dtype {array.dtype} is neither uint8 nor a float in [0, 1]")
        array = np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    return array


class _StreamHandle:
    """What upstream scripts reach as ``wrapper.stream``: its prompt update."""

    def __init__(self, wrapper: "StreamDiffusionWrapper") -> None:
        self._wrapper = wrapper

    def update_prompt(self, prompt: str) -> None:
        self._wrapper.update_prompt(prompt)


class StreamDiffusionWrapper:
    """Upstream StreamDiffusion's ``StreamDiffusionWrapper``, on streamgen's engine.

    Models are local folders (no download): ``model_id_or_path`` a diffusers pipeline folder, ``vae_id`` the TAESD
    folder (TAESD-XL for SDXL). Images go in as paths, PIL images or arrays; they come out as PIL images
    (``output_type="pil"``) or float32 arrays [H, W, 3] in [0, 1] (``"np"``), as upstream returns them.
    """

    def __init__(
        self,
        model_id_or_path: str,
        t_index_list: List[int],
        lora_dict: Optional[Dict[str, float]] = None,
        mode: str = "img2img",
        output_type: str = "pil",
        lcm_lora_id: Optional[str] = None,
        vae_id: Optional[str] = None,
        device: Any = _Default("cuda"),
        dtype: Any = _Default("float16"),
        frame_buffer_size: int = 1,
        width: int = 512,
        height: int = 512,
        warmup: int = 10,
        acceleration: str = "tensorrt",
        do_add_noise: bool = True,
        device_ids: Optional[List[int]] = None,
        use_lcm_lora: Any = _Default(True),
        use_tiny_vae: bool = True,
        enable_similar_image_filter: bool = False,
        similar_image_filter_threshold: float = 0.98,
        similar_image_filter_max_skip_frame: int = 10,
        use_denoising_batch: bool = True,
        cfg_type: str = "self",
        seed: int = 2,
        use_safety_checker: bool = False,
        engine_dir: Optional[Union[str, os.PathLike]] = "engines",
    ) -> None:
        if mode not in ("img2img", "txt2img"):
            raise ValueError(f"mode {mode!r} is not 'img2img' or 'txt2img'")
        if output_type not in ("pil", "np"):
            raise ValueError(f"output_type {output_type!r} is not supported: streamgen returns 'pil' or 'np' (no PyTorch tensors or latents)")
        if not os.path.isdir(model_id_or_path):
            raise ValueError(f"model_id_or_path {model_id_or_path!r} is not a local folder: streamgen downloads nothing; "
                             "give a diffusers pipeline folder")
        if not use_tiny_vae:
            raise ValueError("use_tiny_vae=False is not supported: streamgen's streams encode and decode with TAESD (give its folder as vae_id)")
        if vae_id is None:
            vae_id = os.environ.get("STREAMGEN_TAESD")  # upstream's default is a download of madebyollin/taesd
        if vae_id is None or not os.path.isdir(vae_id):
            raise ValueError(f"vae_id {vae_id!r}: give the TAESD folder (madebyollin/taesd, taesdxl for SDXL) as a local path, "
                             "or set STREAMGEN_TAESD; streamgen downloads nothing")
        if device_ids is not None:
            raise ValueError("device_ids (several GPUs) is not supported: streamgen runs a stream on one device")
        if use_safety_checker:
            raise ValueError("use_safety_checker=True is not supported: streamgen has no safety checker")
        if acceleration not in ("none", "xformers", "sfast", "tensorrt"):
            raise ValueError(f"acceleration {acceleration!r} is not one of none, xformers, sfast, tensorrt")
        if acceleration != "none":
            _log.info("acceleration=%r: streamgen runs its own engine (no xformers, stable-fast or TensorRT build); engine_dir "
                      "and warmup are not used", acceleration)

        loras = [f"{path}:{scale}" for path, scale in (lora_dict or {}).items()]
        turbo = "turbo" in os.path.basename(os.path.normpath(model_id_or_path)).lower()
        if _value(use_lcm_lora) and not turbo:
            if lcm_lora_id is not None:
                # A folder as the hub keeps it (pytorch_lora_weights.safetensors inside), or the file itself.
                folder_file = os.path.join(lcm_lora_id, "pytorch_lora_weights.safetensors")
                loras.append(folder_file if os.path.isdir(lcm_lora_id) else lcm_lora_id)
            elif _given(use_lcm_lora):
                raise ValueError("use_lcm_lora=True needs lcm_lora_id: the LCM-LoRA file (e.g. lcm-lora-sdv1-5's "
                                 "pytorch_lora_weights.safetensors) as a local path; streamgen downloads nothing")
            else:
                _log.warning("use_lcm_lora defaults to True, but no lcm_lora_id was given and streamgen downloads nothing: "
                             "running %s without LCM-LoRA", model_id_or_path)

        device_name = str(_value(device))
        if not _given(device) and not build_info().get("cuda_available", False):
            _log.info("device defaults to 'cuda', which this machine lacks: running on the CPU")
            device_name = "cpu"
        dtype_name = _dtype_name(_value(dtype))
        if not _given(dtype):
            dtype_name = "auto"  # upstream's float16 default is a GPU choice; 'auto' picks per device

        self.mode = mode
        self.output_type = output_type
        self.frame_buffer_size = frame_buffer_size
        # Upstream's: the rows of one model call (scripts warm up with batch_size - 1 calls).
        self.batch_size = len(t_index_list) * frame_buffer_size if use_denoising_batch else frame_buffer_size
        self.width, self.height = width, height
        self._settings = dict(
            width=width, height=height, seed=seed, mode=mode, t_index_list=list(t_index_list), cfg_type=cfg_type,
            frame_buffer_size=frame_buffer_size, use_denoising_batch=use_denoising_batch, do_add_noise=do_add_noise,
            similar_image_filter=enable_similar_image_filter, similar_image_filter_threshold=similar_image_filter_threshold,
            similar_image_filter_max_skip=similar_image_filter_max_skip_frame, input_capacity=max(1, frame_buffer_size),
            output_capacity=max(4, frame_buffer_size))
        self.pipeline = Pipeline(model_id_or_path, taesd=vae_id, device=device_name, dtype=dtype_name, loras=loras)
        self.stream = _StreamHandle(self)
        self._stream: Optional[Stream] = None
        self._prompt = ""

    def prepare(self, prompt: str, negative_prompt: str = "", num_inference_steps: int = 50, guidance_scale: float = 1.2,
                delta: float = 1.0) -> None:
        """Starts the stream with this prompt and guidance (again, if it was running)."""
        if self._stream is not None:
            self._stream.close()
        self._prompt = prompt
        self._stream = Stream(self.pipeline, prompt=prompt, negative_prompt=negative_prompt, num_inference_steps=num_inference_steps,
                              guidance_scale=guidance_scale, delta=delta, **self._settings)

    def update_prompt(self, prompt: str) -> None:
        """A new prompt from the next frame, without a restart."""
        self._live().set_prompt(prompt)
        self._prompt = prompt

    def __call__(self, image: Any = None, prompt: Optional[str] = None) -> Any:
        if self.mode == "img2img":
            return self.img2img(image, prompt)
        return self.txt2img(prompt)

    def img2img(self, image: Any, prompt: Optional[str] = None) -> Any:
        """One input frame (path, PIL image or array) -> its output frame (frame_buffer_size images: a list)."""
        if self.mode != "img2img":
            raise ValueError("img2img on a wrapper made with mode='txt2img'")
        stream = self._live()
        if prompt is not None and prompt != self._prompt:
            self.update_prompt(prompt)
        images = image if isinstance(image, (list, tuple)) else [image]
        if len(images) not in (1, self.frame_buffer_size):
            raise ValueError(f"img2img: {len(images)} images for frame_buffer_size {self.frame_buffer_size}")
        for i in range(self.frame_buffer_size):
            stream.push(_to_pixels(images[i % len(images)]))
        return self._outputs()

    def txt2img(self, prompt: Optional[str] = None) -> Any:
        """The stream's next image(s) from the prompt alone."""
        if self.mode != "txt2img":
            raise ValueError("txt2img on a wrapper made with mode='img2img'")
        if prompt is not None and prompt != self._prompt:
            self.update_prompt(prompt)
        return self._outputs()

    def preprocess_image(self, image: Union[str, Any]) -> np.ndarray:
        """A path or PIL image -> uint8 [H, W, 3] at the stream's size, as the stream will see it."""
        from PIL import Image

        pixels = _to_pixels(image)
        return np.asarray(Image.fromarray(pixels).resize((self.width, self.height)))

    def postprocess_image(self, image: np.ndarray, output_type: str = "pil") -> Any:
        """uint8 [H, W, 3] -> a PIL image or a float32 array in [0, 1]."""
        if output_type == "np":
            return image.astype(np.float32) / 255.0
        from PIL import Image

        return Image.fromarray(image)

    def _live(self) -> Stream:
        if self._stream is None:
            raise RuntimeError("call prepare(prompt, ...) before streaming")
        return self._stream

    def _outputs(self) -> Any:
        stream = self._live()
        frames = [self.postprocess_image(stream.pop(), self.output_type) for _ in range(self.frame_buffer_size)]
        return frames[0] if self.frame_buffer_size == 1 else frames

    def stats(self) -> Dict[str, Any]:
        """Frames in / out / dropped, output FPS and per-stage timings of the running stream."""
        return self._live().stats()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass
