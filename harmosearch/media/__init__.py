"""Media: files -> images. Which files are photos or videos, and turning each into RGB pixels and
metadata.

`scan` finds the photos and videos under a folder, skipping what `ignore` says is not a photo;
`formats` decodes every still format (JPEG, PNG, HEIC/HEIF, AVIF, RAW through its embedded
preview), `video` samples frames from videos, and `metadata` reads capture time, camera and GPS
position.
"""
