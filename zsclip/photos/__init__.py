"""A photo library's needs on top of the stages: what each photo is (`facts`: content hash, perceptual hashes,
pixels and the EXIF capture time, camera and GPS, read once into the cache under the file's identity; `exif`
reads them), duplicates in two tiers (`dupes`, and their page `page`), the filters of search and serve (`filters`)
and keywords a photo manager reads, in XMP sidecars (`xmp`)."""
