"""Media: files -> images. Which files are photos or videos, and turning each into RGB pixels and
metadata.

`scan` finds the image files under a folder and `decode` decodes one; `formats` decodes every
still format (JPEG, PNG, HEIC/HEIF, AVIF, RAW through its embedded preview), `video` samples
frames from videos, `metadata` reads capture time, camera and GPS position, and `ignore` decides
which files and folders of a photo folder are not photos.
"""
