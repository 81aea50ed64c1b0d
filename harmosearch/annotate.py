"""Pictures of results: each image with its lexeme boxes drawn and labelled, and a contact sheet."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from harmosearch.errors import DataError
from harmosearch.folders import is_dir, is_file, make_folder

PALETTE = ((255, 64, 64), (64, 160, 255), (255, 200, 0), (0, 200, 120), (200, 90, 255), (255, 130, 40))
THUMB = 256


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without sized default fonts
        return ImageFont.load_default()


def draw_result(result: Any, image: Image.Image | None = None) -> Image.Image:
    """The result's image (for a video, the frame that matched) with one coloured, labelled box
    per lexeme (upscaled when small)."""
    image = image or result_picture(result)
    scale = max(1.0, 384 / max(image.size))
    if scale > 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
    draw = ImageDraw.Draw(image)
    width = max(2, round(max(image.size) / 160))
    font = _font(max(11, round(max(image.size) / 28)))
    for i, match in enumerate(result.lexemes):
        if getattr(match, "negated", False):  # an absence has no box: the strip below names it
            continue
        colour = PALETTE[i % len(PALETTE)]
        for n, box in enumerate(getattr(match, "instances", ()), start=1):  # each instance counted
            bx0, by0, bx1, by1 = (v * scale for v in box)
            draw.rectangle([bx0, by0, bx1, by1], outline=colour, width=max(1, width // 2))
            draw.text((bx0 + 3, by1 - font_height(font) - 2), str(n), fill=colour, font=font)
        x0, y0, x1, y1 = (v * scale for v in match.box)
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=width)
        counted = getattr(match, "count", None)
        label = f"{match.text} {match.score:.2f}" + ("" if counted is None else f" x{counted}")
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        ty = y0 - (bottom - top) - 4 if y0 - (bottom - top) - 4 >= 0 else y0 + width
        draw.rectangle([x0, ty, x0 + (right - left) + 6, ty + (bottom - top) + 4], fill=colour)
        draw.text((x0 + 3, ty + 2 - top), label, fill=(0, 0, 0), font=font)
    lines = [f"no {m.text}: presence {m.presence:.2f}" for m in result.lexemes if getattr(m, "negated", False)]
    lines += [
        f"{r.subject} {'not ' if r.negated else ''}{r.relation} {r.object}: {r.score:.2f}" for r in result.relations
    ]
    return _with_lines(image, lines, font) if lines else image


def font_height(font: Any) -> int:
    return font.size if hasattr(font, "size") else 12


def _with_lines(image: Image.Image, lines: list[str], font: Any) -> Image.Image:
    """The picture with a strip below it: each relation and how well the boxes above hold it,
    each absence asked for and how present the thing is."""
    height = font_height(font) + 8
    out = Image.new("RGB", (image.width, image.height + height * len(lines)), (255, 255, 255))
    out.paste(image, (0, 0))
    draw = ImageDraw.Draw(out)
    for n, line in enumerate(lines):
        draw.text((6, image.height + n * height + 4), line, fill=(0, 0, 0), font=font)
    return out


def shown_path(result: Any, width: int | None = None) -> str:
    """A result's file as tables and pictures name it: "clip.mp4 @ 0:12" for a video frame
    (`width`: the file name alone, cut to that many characters)."""
    name = Path(result.path).name[:width] if width else result.path
    if result.frame_time is None:
        return name
    from harmosearch.media.video import timestamp

    return f"{name} @ {timestamp(result.frame_time)}"


def result_picture(result: Any) -> Image.Image:
    """The picture a result's boxes are given in: the still, or the video frame at its time."""
    if result.frame_time is not None:
        from harmosearch.media.video import frame_at

        return frame_at(result.absolute, result.frame_time).image
    from harmosearch.media.formats import open_still

    return open_still(result.absolute).image


def save_annotated(response: Any, out_dir: Path, index: Path | None = None) -> list[Path]:
    """Write NN_name.png per result plus contact_sheet.png; returns the written paths. Every
    result's photo is checked first: when photos moved or were deleted after indexing, one error
    says so and what to run (naming `index`, the index searched), and nothing is written."""
    missing = [r for r in response.results if not is_file(r.absolute)]
    if missing:
        raise DataError(_missing_photos(missing, len(response.results), index))
    out_dir = make_folder(out_dir, "--save-annotated")
    written, thumbs = [], []
    for result in response.results:
        picture = draw_result(result)
        at = "" if result.frame_time is None else f"_at{result.frame_time:.1f}s"
        path = out_dir / f"{result.rank:02d}_{Path(result.path).stem[:60]}{at}.png"
        picture.save(path)
        written.append(path)
        thumb = picture.copy()
        thumb.thumbnail((THUMB, THUMB))
        thumbs.append((result, thumb))
    if thumbs:
        sheet = contact_sheet(response.query, thumbs)
        sheet.save(out_dir / "contact_sheet.png")
        written.append(out_dir / "contact_sheet.png")
    return written


def _missing_photos(missing: list[Any], total: int, index: Path | None) -> str:
    first = missing[0]
    root = first.absolute.parents[len(PurePosixPath(first.path).parts) - 1]
    target = index if index is not None else "INDEX"
    if not is_dir(root):
        return (
            f"the photo folder {root} no longer exists, so no result can be drawn; if it moved, run: "
            f"harmosearch index NEW_PLACE --index {target}"
        )
    return (
        f"{len(missing)} of {total} result photos no longer exist (e.g. {first.absolute}); update the index: "
        f"harmosearch index {root} --index {target}"
    )


def contact_sheet(title: str, thumbs: list[tuple[Any, Image.Image]], columns: int = 5) -> Image.Image:
    rows = (len(thumbs) + columns - 1) // columns
    caption_h, header_h, pad = 22, 34, 8
    cell = THUMB + pad
    sheet = Image.new("RGB", (columns * cell + pad, header_h + rows * (cell + caption_h)), (250, 250, 250))
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 8), f"query: {title}", fill=(0, 0, 0), font=_font(18))
    for n, (result, thumb) in enumerate(thumbs):
        x = pad + (n % columns) * cell
        y = header_h + (n // columns) * (cell + caption_h)
        sheet.paste(thumb, (x, y))
        draw.text(
            (x, y + thumb.height + 3),
            f"#{result.rank} {result.score:.3f} {shown_path(result, 24)}",
            fill=(40, 40, 40),
            font=_font(12),
        )
    return sheet
