"""Media decoding with guards: untrusted bytes -> RGB PIL frames, or a :class:`MediaError`.

image bytes -> one RGB ``PIL.Image``; video bytes or path -> ``num_frames`` RGB frames sampled
uniformly over the clip; a :class:`~leaml.records.MediaRef` -> a list of frames (1 for an image).

Every input is treated as hostile (the REST API passes clients' uploads straight here):
- the kind is sniffed from magic bytes, never taken from a file name or a Content-Type header;
- size limits (bytes, pixels, frames, seconds) are checked before the expensive decode, from the
  container header, so a 50-byte PNG that claims 100k x 100k pixels costs nothing;
- PIL only tries the formats we accept (no EPS, which shells out to Ghostscript), and a truncated
  file is an error, never a silently grey-padded image.

Failures raise :class:`MediaError` with a stable ``code`` that the REST API maps to a 4xx status.
``decord`` and ``av`` (the ``video`` extra) are imported only when a video is touched.
"""
from __future__ import annotations

import io
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Sequence

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from leaml import storage

if TYPE_CHECKING:
    from leaml.records import MediaRef

MediaKind = Literal["image", "video"]
ErrorCode = Literal[
    "too_large",  # bytes, pixels, frames or seconds over a MediaLimits bound
    "decompression_bomb",  # header claims far more pixels than the bytes could honestly hold
    "truncated",  # a recognised format whose data ends early
    "corrupt",  # a recognised image format that fails to decode for another reason
    "not_an_image",  # bytes of no format we recognise
    "unsupported_type",  # a recognised format of the wrong kind (video bytes where an image is due)
    "bad_video",  # a video container or stream that cannot be probed or decoded
]

# Format name as PIL spells it -> file suffix; the only formats PIL is allowed to parse.
IMAGE_FORMATS = {"PNG": "png", "JPEG": "jpg", "GIF": "gif", "WEBP": "webp", "BMP": "bmp"}
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".webm", ".mkv")

# HEIF/AVIF stills share MP4's ``ftyp`` box; these brands are images we cannot decode, not videos.
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}
# Sizes of the BMP DIB header that follow the 14-byte file header: "BM" alone is too weak a magic.
_BMP_DIB_SIZES = {12, 40, 52, 56, 64, 108, 124}


class MediaLimits(BaseModel):
    """Bounds on what a decode may cost; the defaults suit clinicians' uploads and SPORTU clips."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_bytes: int = Field(20_000_000, gt=0)
    """Largest encoded image accepted, in bytes (20 MB: a raw 12 MP photo is ~5 MB as JPEG)."""
    max_pixels: int = Field(40_000_000, gt=0)
    """Largest width x height of an image or of one video frame (40 MP), read from the header."""
    max_video_bytes: int = Field(200_000_000, gt=0)
    """Largest encoded video accepted, in bytes (videos are legitimately bigger than images)."""
    max_frames: int = Field(64, gt=0)
    """Most frames one call may sample from a video (``num_frames`` above this is refused)."""
    max_video_frames: int = Field(108_000, gt=0)
    """Most frames a clip may contain (one hour at 30 fps); bounds seek and decode time."""
    max_video_seconds: float = Field(600.0, gt=0)
    """Longest clip accepted, in seconds (SPORTU clips are seconds long; 10 min is generous)."""


class MediaError(ValueError):
    """Media that cannot or must not be decoded; ``code`` is stable, ``str(e)`` says why."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.args[0]}"

    def __reduce__(self):  # pickle (Ray ships exceptions between processes) must keep the code
        return (type(self), (self.code, self.args[0]))


# ---------------------------------------------------------------------------------------------
# Sniffing


def sniff_format(data: bytes) -> str | None:
    """Container format from magic bytes: a key of :data:`IMAGE_FORMATS`, ``"MP4"`` (also MOV),
    ``"MKV"`` (also WEBM), ``"AVI"``, or ``None``."""
    head = bytes(data[:32])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "AVI"
    if head.startswith(b"BM") and len(head) >= 18 and int.from_bytes(head[14:18], "little") in _BMP_DIB_SIZES:
        return "BMP"
    if head[4:8] == b"ftyp":
        return None if head[8:12] in _HEIF_BRANDS else "MP4"
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free"):  # QuickTime files without an ftyp box
        return "MP4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: Matroska and WebM
        return "MKV"
    return None


def sniff_kind(data: bytes) -> MediaKind | None:
    """``"image"``, ``"video"`` or ``None``, from the content alone."""
    fmt = sniff_format(data)
    if fmt is None:
        return None
    return "image" if fmt in IMAGE_FORMATS else "video"


# ---------------------------------------------------------------------------------------------
# Images


def decode_image(data: bytes, limits: MediaLimits | None = None) -> Image.Image:
    """Bytes of a PNG/JPEG/GIF/WEBP/BMP -> a fully decoded RGB image (EXIF rotation applied)."""
    limits = limits or MediaLimits()
    if len(data) > limits.max_bytes:
        raise MediaError("too_large", f"image is {len(data)} bytes; the limit is {limits.max_bytes}")
    _require_kind(data, "image")
    img = _open_image(data)
    _check_pixels(img.size, limits, "image")
    try:
        img.load()  # Image.open only read the header; this is the real decode
        rgb = ImageOps.exif_transpose(img).convert("RGB")  # phone photos are stored rotated
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - hostile bytes make plugins raise anything
        code = "truncated" if "truncated" in str(e) else "corrupt"
        raise MediaError(code, f"{img.format} image does not decode: {e}") from e
    return rgb


def _open_image(data: bytes) -> Image.Image:
    # PIL's bomb check runs inside Image.open; make its warning an error for this call too, so a
    # caller who raised Image.MAX_IMAGE_PIXELS (or a library that did) does not silently disarm it.
    # catch_warnings is process-global state: a concurrent thread may miss the filter, but
    # _check_pixels below is the authoritative check and is thread-safe.
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # someone flipped the global; refuse rather than pad
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True; leaml.media needs False")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=list(IMAGE_FORMATS))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise MediaError("decompression_bomb", str(e)) from e
    except UnidentifiedImageError as e:
        raise MediaError("not_an_image", "bytes look like an image but PIL cannot read them") from e
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - a broken header inside a plugin's _open
        raise MediaError("corrupt", f"image header does not parse: {e}") from e


def _check_pixels(size: tuple[int, int], limits: MediaLimits, what: str) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise MediaError("corrupt", f"{what} has an empty size {w}x{h}")
    if w * h > limits.max_pixels:
        raise MediaError(
            "decompression_bomb",
            f"{what} claims {w}x{h} = {w * h} pixels; the limit is {limits.max_pixels}",
        )


def _require_kind(data: bytes, want: MediaKind) -> None:
    got = sniff_kind(data)
    if got == want:
        return
    if got is None:
        code: ErrorCode = "not_an_image" if want == "image" else "bad_video"
        raise MediaError(code, f"bytes are no {want} format we accept (sniffed from content)")
    raise MediaError("unsupported_type", f"expected {want} data, but the content is {got} data")


# ---------------------------------------------------------------------------------------------
# Videos


def decode_video(
    data: bytes | str | Path, num_frames: int = 8, limits: MediaLimits | None = None
) -> list[Image.Image]:
    """Video bytes or a local path -> ``num_frames`` RGB frames at ``linspace(0, n-1, num_frames)``.

    A clip shorter than ``num_frames`` repeats frames, so callers always get ``num_frames``.
    """
    limits = limits or MediaLimits()
    if not 1 <= num_frames <= limits.max_frames:
        raise MediaError("too_large", f"num_frames={num_frames}; allowed 1..{limits.max_frames}")
    size = Path(data).stat().st_size if isinstance(data, (str, Path)) else len(data)
    if size > limits.max_video_bytes:
        raise MediaError("too_large", f"video is {size} bytes; the limit is {limits.max_video_bytes}")
    blob = Path(data).read_bytes() if isinstance(data, (str, Path)) else bytes(data)
    _require_kind(blob, "video")
    _probe_video(blob, limits)  # header checks with PyAV before decord allocates anything
    return _sample_frames(blob, num_frames, limits)


def _probe_video(blob: bytes, limits: MediaLimits) -> None:
    import av

    try:
        with av.open(io.BytesIO(blob)) as container:
            if not container.streams.video:
                raise MediaError("bad_video", "container holds no video stream")
            stream = container.streams.video[0]
            size = (stream.codec_context.width, stream.codec_context.height)
            seconds = _seconds(container, stream)
    except av.error.FFmpegError as e:
        raise MediaError("bad_video", f"video container does not parse: {e}") from e
    _check_pixels(size, limits, "video frame")
    if seconds is not None and seconds > limits.max_video_seconds:
        limit = limits.max_video_seconds
        raise MediaError("too_large", f"video lasts {seconds:.1f} s; the limit is {limit} s")


def _seconds(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:  # in microseconds (av.time_base)
        return container.duration / 1_000_000
    return None


def _sample_frames(blob: bytes, num_frames: int, limits: MediaLimits) -> list[Image.Image]:
    import decord

    try:
        # Through a temp file, not BytesIO: on a failed open decord logs the "file name", which for
        # in-memory input is the raw bytes (a patient's video in the logs).
        with tempfile.NamedTemporaryFile(suffix=".video") as f:
            f.write(blob)
            f.flush()
            reader = decord.VideoReader(f.name, ctx=decord.cpu(0), num_threads=1)
            n = _check_frame_count(len(reader), limits)
            batch = reader.get_batch(_indices(n, num_frames)).asnumpy()
    except (RuntimeError, decord.DECORDError, AssertionError):  # decord asserts on 0 frames
        # decord 0.6 fails on some streams PyAV reads fine (e.g. frames 16 or 48 pixels wide:
        # "DECORDArrayCopyFromTo: The size must exactly match"), so try PyAV before giving up.
        batch = _sample_frames_av(blob, num_frames, limits)
    return [Image.fromarray(frame).convert("RGB") for frame in batch]


def _sample_frames_av(blob: bytes, num_frames: int, limits: MediaLimits) -> list[np.ndarray]:
    """Slow path: count packets, then decode sequentially keeping the sampled frames."""
    import av

    try:
        with av.open(io.BytesIO(blob)) as container:
            n = sum(1 for p in container.demux(video=0) if p.size)
        wanted = _indices(_check_frame_count(n, limits), num_frames)
        todo, keep = set(wanted), {}
        with av.open(io.BytesIO(blob)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i in todo:
                    keep[i] = frame.to_ndarray(format="rgb24")
                    todo.discard(i)
                if not todo:
                    break
    except av.error.FFmpegError as e:
        raise MediaError("bad_video", f"video does not decode: {e}") from e
    if todo:
        raise MediaError("bad_video", f"video decodes to fewer frames than its {n} packets")
    return [keep[i] for i in wanted]


def _check_frame_count(n: int, limits: MediaLimits) -> int:
    if n <= 0:
        raise MediaError("bad_video", "video has no frames")
    if n > limits.max_video_frames:
        raise MediaError("too_large", f"video has {n} frames; the limit is {limits.max_video_frames}")
    return n


def _indices(n: int, num_frames: int) -> list[int]:
    return np.linspace(0, n - 1, num_frames).round().astype(int).tolist()


def write_video(path: str, frames: Sequence[np.ndarray | Image.Image], fps: float = 8.0) -> None:
    """Encode RGB frames (uint8 ``HxWx3`` arrays or PIL images) as an H.264 mp4 (yuv420p, CRF 18)
    at ``path`` (local or ``s3://``).

    Width and height must be even (a yuv420p constraint). Used by the synthetic video domain and
    by tests; the write is atomic through :func:`leaml.storage.write_bytes`.
    """
    import av
    from fractions import Fraction

    arrays = [np.asarray(f.convert("RGB")) if isinstance(f, Image.Image) else np.asarray(f) for f in frames]
    if not arrays:
        raise ValueError("write_video needs at least one frame")
    if any(a.dtype != np.uint8 for a in arrays):  # a float frame in [0, 1] would encode as black
        raise ValueError(f"frames must be uint8; got {sorted({str(a.dtype) for a in arrays})}")
    h, w = arrays[0].shape[:2]
    if h % 2 or w % 2 or any(a.shape != (h, w, 3) for a in arrays):
        shapes = sorted({a.shape for a in arrays})
        raise ValueError(f"frames must all be HxWx3 with even H and W; got shapes {shapes}")
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "18"}
        for a in arrays:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(a, format="rgb24")))
        container.mux(stream.encode())  # flush the encoder's delayed frames
    storage.write_bytes(str(path), buf.getvalue())


# ---------------------------------------------------------------------------------------------
# References


def load_media(
    ref: "MediaRef", num_frames: int = 8, limits: MediaLimits | None = None, root: str | None = None
) -> list[Image.Image]:
    """A :class:`MediaRef` -> ``[image]`` or ``num_frames`` video frames.

    A relative ``ref.uri`` is resolved against ``root`` (a dataset directory or ``s3://`` prefix).
    The bytes must be of ``ref.kind`` (sniffed); a missing file raises ``FileNotFoundError``.
    """
    data = storage.read_bytes(resolve_uri(ref.uri, root))
    _require_kind(data, ref.kind)
    if ref.kind == "image":
        return [decode_image(data, limits)]
    return decode_video(data, num_frames, limits)


def load_image(uri: str, limits: MediaLimits | None = None) -> Image.Image:
    """An image file (local or ``s3://``) -> RGB image."""
    return decode_image(storage.read_bytes(uri), limits)


def load_video_frames(uri: str, num_frames: int = 8, limits: MediaLimits | None = None) -> list[Image.Image]:
    """A video file (local or ``s3://``) -> ``num_frames`` RGB frames."""
    return decode_video(storage.read_bytes(uri), num_frames, limits)


def resolve_uri(uri: str, root: str | None) -> str:
    """``uri`` itself if absolute (or ``s3://``, or no ``root``), else ``root/uri``."""
    if root is None or storage.is_s3(uri) or Path(uri).is_absolute():
        return uri
    return storage.join(root, uri)
