"""Files -> images: finding photos under a folder and decoding them."""
