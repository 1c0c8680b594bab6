"""leaml.media: hostile images and videos become MediaError codes; good ones decode exactly."""
from __future__ import annotations

import io
import pickle
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from leaml import media, storage
from leaml.media import MediaError, MediaLimits
from leaml.records import MediaRef

N_FRAMES, FPS, H, W = 12, 10, 48, 64


def _png(size=(32, 24), mode="RGB", color=(200, 30, 90)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else 128).save(buf, "PNG")
    return buf.getvalue()


def _encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((64, 48), 50).convert("RGB").save(buf, fmt)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR claiming ``width x height`` RGB pixels, and no real data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _code(fn, *args, **kwargs) -> str:
    with pytest.raises(MediaError) as info:
        fn(*args, **kwargs)
    return info.value.code


@pytest.fixture(scope="module")
def mp4(tmp_path_factory) -> bytes:
    """12 flat frames whose brightness is 20 x the frame index, so order is visible after decode."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    media.write_video(str(path), [np.full((H, W, 3), 20 * i, np.uint8) for i in range(N_FRAMES)], fps=FPS)
    return path.read_bytes()


def _brightness(frames) -> list[float]:
    return [float(np.asarray(f).mean()) for f in frames]


# ---------------------------------------------------------------------------------------------
# Sniffing


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP"])
def test_sniff_images_by_content(fmt):
    data = _encoded(fmt)
    assert media.sniff_format(data) == fmt
    assert media.sniff_kind(data) == "image"


def test_sniff_videos_by_content(mp4):
    assert media.sniff_format(mp4) == "MP4"
    assert media.sniff_kind(mp4) == "video"
    assert media.sniff_kind(b"\x1a\x45\xdf\xa3" + b"\x00" * 28) == "video"  # WebM / Matroska
    assert media.sniff_kind(b"RIFF\x00\x00\x00\x00AVI LIST" + b"\x00" * 16) == "video"
    assert media.sniff_kind(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 20) is None  # HEIF still
    assert media.sniff_kind(b"BM" + b"\x00" * 30) is None  # "BM" alone is not a bitmap
    assert media.sniff_kind(b"hello world, not media") is None
    assert media.sniff_kind(b"") is None


# ---------------------------------------------------------------------------------------------
# Images: guards


def test_decompression_bomb_header_is_refused_before_decoding():
    bomb = _png_header_only(100_000, 100_000)  # 10 gigapixels in ~60 bytes
    assert len(bomb) < 100
    assert _code(media.decode_image, bomb) == "decompression_bomb"


def test_our_pixel_limit_holds_below_pils_and_without_it(monkeypatch):
    header = _png_header_only(8000, 8000)  # 64 MP: under PIL's 89 MP warning, over our 40 MP
    assert _code(media.decode_image, header) == "decompression_bomb"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # someone disabled PIL's own check
    assert _code(media.decode_image, _png_header_only(100_000, 100_000)) == "decompression_bomb"
    assert _code(media.decode_image, _png((32, 24)), MediaLimits(max_pixels=32 * 24 - 1)) == "decompression_bomb"


def test_pils_bomb_warning_becomes_an_error_even_with_a_generous_limit():
    generous = MediaLimits(max_pixels=10**12)
    assert _code(media.decode_image, _png_header_only(10_000, 10_000), generous) == "decompression_bomb"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP"])
def test_truncated_image_is_an_error(fmt):
    data = _encoded(fmt)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # we never flip the global to "pad with grey"
    assert _code(media.decode_image, data[: len(data) // 2]) == "truncated"


def test_truncated_webp_is_corrupt():
    data = _encoded("WEBP")  # libwebp refuses the half file without saying "truncated"
    assert _code(media.decode_image, data[: len(data) // 2]) == "corrupt"


def test_refuses_to_run_with_truncated_loading_enabled(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        media.decode_image(_png())


@pytest.mark.parametrize("data", [
    b"", b"not an image at all", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0",
    b"%!PS-Adobe-3.0 EPSF-3.0\n",  # EPS: PIL would shell out to Ghostscript; never handed to it
])
def test_non_images(data):
    assert _code(media.decode_image, data) == "not_an_image"


def test_byte_limit():
    data = _png()
    assert _code(media.decode_image, data, MediaLimits(max_bytes=len(data) - 1)) == "too_large"
    assert media.decode_image(data, MediaLimits(max_bytes=len(data))).size == (32, 24)


def test_wrong_kind_is_unsupported_type(mp4, tmp_path):
    png = _png()
    assert _code(media.decode_image, mp4) == "unsupported_type"
    assert _code(media.decode_video, png, 4) == "unsupported_type"
    (tmp_path / "x.mp4").write_bytes(png)  # the name says video; the content says image
    ref = MediaRef(id="x", uri="x.mp4", kind="video")
    assert _code(media.load_media, ref, root=str(tmp_path)) == "unsupported_type"


def test_media_limits_forbid_unknown_keys():
    with pytest.raises(ValueError, match="max_pixel"):
        MediaLimits(max_pixel=10)


def test_media_error_keeps_its_code_through_pickle():
    err = pickle.loads(pickle.dumps(MediaError("too_large", "12 bytes over")))
    assert (err.code, str(err)) == ("too_large", "too_large: 12 bytes over")
    assert isinstance(err, ValueError)


# ---------------------------------------------------------------------------------------------
# Images: good input


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
def test_decode_gives_rgb_with_the_same_size(mode):
    img = media.decode_image(_png((30, 20), mode))
    assert (img.mode, img.size) == ("RGB", (30, 20))


def test_decode_png_is_pixel_exact():
    assert media.decode_image(_png(color=(200, 30, 90))).getpixel((5, 5)) == (200, 30, 90)


def test_exif_orientation_is_applied():
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.new("RGB", (40, 20), (10, 200, 10)).save(buf, "JPEG", exif=exif)
    assert media.decode_image(buf.getvalue()).size == (20, 40)


# ---------------------------------------------------------------------------------------------
# Videos


def test_frames_are_sampled_uniformly_and_in_order(mp4):
    frames = media.decode_video(mp4, num_frames=4)
    expected = [20 * i for i in np.linspace(0, N_FRAMES - 1, 4).round().astype(int)]  # frames 0, 4, 7, 11
    assert [f.size for f in frames] == [(W, H)] * 4
    assert all(f.mode == "RGB" for f in frames)
    assert _brightness(frames) == pytest.approx(expected, abs=4)


def test_more_frames_than_the_clip_repeats_frames(mp4, tmp_path):
    (tmp_path / "clip.mp4").write_bytes(mp4)
    frames = media.decode_video(tmp_path / "clip.mp4", num_frames=20)  # from a path, too
    b = _brightness(frames)
    assert len(frames) == 20 and b == sorted(b)
    assert (b[0], b[-1]) == pytest.approx((0, 20 * (N_FRAMES - 1)), abs=4)


def test_video_limits(mp4):
    assert _code(media.decode_video, mp4, 65) == "too_large"  # more frames than max_frames
    assert _code(media.decode_video, mp4, 0) == "too_large"
    assert _code(media.decode_video, mp4, 4, MediaLimits(max_video_seconds=0.5)) == "too_large"  # 1.2 s clip
    assert _code(media.decode_video, mp4, 4, MediaLimits(max_video_frames=N_FRAMES - 1)) == "too_large"
    assert _code(media.decode_video, mp4, 4, MediaLimits(max_video_bytes=len(mp4) - 1)) == "too_large"
    assert _code(media.decode_video, mp4, 4, MediaLimits(max_pixels=W * H - 1)) == "decompression_bomb"


def test_broken_videos_are_bad_video(mp4):
    assert _code(media.decode_video, mp4[: len(mp4) // 2], 4) == "bad_video"  # moov atom lost
    assert _code(media.decode_video, mp4[:40], 4) == "bad_video"
    assert _code(media.decode_video, b"\x1a\x45\xdf\xa3" + b"\x00" * 64, 4) == "bad_video"
    assert _code(media.decode_video, b"garbage" * 20, 4) == "bad_video"


@pytest.mark.parametrize("size", [(16, 8), (48, 48)])
def test_widths_decord_cannot_read_fall_back_to_pyav(tmp_path, size):
    w, h = size  # decord 0.6 fails on these widths ("DECORDArrayCopyFromTo: size must match")
    media.write_video(str(tmp_path / "tiny.mp4"), [np.full((h, w, 3), 40 * i, np.uint8) for i in range(5)], fps=5)
    frames = media.decode_video(tmp_path / "tiny.mp4", num_frames=3)
    assert [f.size for f in frames] == [(w, h)] * 3
    assert _brightness(frames) == pytest.approx([0, 80, 160], abs=6)


def test_pyav_path_samples_the_same_frames_as_decord(mp4):
    via_decord = np.stack([np.asarray(f) for f in media.decode_video(mp4, num_frames=5)])
    via_pyav = np.stack(media._sample_frames_av(mp4, 5, MediaLimits()))
    assert np.abs(via_decord.astype(int) - via_pyav.astype(int)).max() <= 2


def test_write_video_checks_frames(tmp_path):
    with pytest.raises(ValueError, match="even"):
        media.write_video(str(tmp_path / "odd.mp4"), [np.zeros((9, 16, 3), np.uint8)], fps=4)
    with pytest.raises(ValueError, match="uint8"):
        media.write_video(str(tmp_path / "float.mp4"), [np.ones((8, 16, 3))], fps=4)
    with pytest.raises(ValueError, match="at least one"):
        media.write_video(str(tmp_path / "none.mp4"), [], fps=4)
    pil_frames = [Image.new("RGB", (16, 8), (i * 50,) * 3) for i in range(3)]
    media.write_video(str(tmp_path / "pil.mp4"), pil_frames, fps=4)
    assert len(media.decode_video(tmp_path / "pil.mp4", 3)) == 3


# ---------------------------------------------------------------------------------------------
# MediaRef loading


def test_load_media_resolves_relative_uris_against_root(tmp_path, mp4):
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "a.png").write_bytes(_png((8, 6)))
    (tmp_path / "media" / "v.mp4").write_bytes(mp4)
    [img] = media.load_media(MediaRef(id="a", uri="media/a.png"), root=str(tmp_path))
    assert img.size == (8, 6)
    frames = media.load_media(MediaRef(id="v", uri="media/v.mp4", kind="video"), num_frames=3, root=str(tmp_path))
    assert len(frames) == 3
    absolute = MediaRef(id="a", uri=str(tmp_path / "media" / "a.png"))
    assert media.load_media(absolute, root="/somewhere/else")[0].size == (8, 6)
    with pytest.raises(FileNotFoundError):
        media.load_media(MediaRef(id="m", uri="media/missing.png"), root=str(tmp_path))


def test_load_media_from_s3(s3_bucket):
    frames = [np.full((H, W, 3), 20 * i, np.uint8) for i in range(N_FRAMES)]
    media.write_video(storage.join(s3_bucket, "media/v.mp4"), frames, fps=FPS)
    storage.write_bytes(storage.join(s3_bucket, "media/a.png"), _png((8, 6)))
    assert media.load_media(MediaRef(id="a", uri="media/a.png"), root=s3_bucket)[0].size == (8, 6)
    got = media.load_media(MediaRef(id="v", uri=f"{s3_bucket}/media/v.mp4", kind="video"), num_frames=2)
    assert _brightness(got) == pytest.approx([0, 20 * (N_FRAMES - 1)], abs=4)
    assert media.load_image(storage.join(s3_bucket, "media/a.png")).mode == "RGB"
    assert len(media.load_video_frames(storage.join(s3_bucket, "media/v.mp4"), 5)) == 5
