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
    """The result's image with one coloured, labelled box per lexeme (upscaled when small)."""
    from harmosearch.media.decode import open_image

    image = image or open_image(result.absolute)
    scale = max(1.0, 384 / max(image.size))
    if scale > 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
    draw = ImageDraw.Draw(image)
    width = max(2, round(max(image.size) / 160))
    font = _font(max(11, round(max(image.size) / 28)))
    for i, match in enumerate(result.lexemes):
        colour = PALETTE[i % len(PALETTE)]
        x0, y0, x1, y1 = (v * scale for v in match.box)
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=width)
        label = f"{match.text} {match.score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        ty = y0 - (bottom - top) - 4 if y0 - (bottom - top) - 4 >= 0 else y0 + width
        draw.rectangle([x0, ty, x0 + (right - left) + 6, ty + (bottom - top) + 4], fill=colour)
        draw.text((x0 + 3, ty + 2 - top), label, fill=(0, 0, 0), font=font)
    return image


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
        path = out_dir / f"{result.rank:02d}_{Path(result.path).stem[:60]}.png"
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
            f"#{result.rank} {result.score:.3f} {Path(result.path).name[:24]}",
            fill=(40, 40, 40),
            font=_font(12),
        )
    return sheet
