"""Codecs: the one registry every path asks what can be decoded and encoded here, and the transcoder.

- `syntaxes`: what each transfer syntax is (name, frames media type, lossless or lossy);
- `registry`: what this installation can decode and encode, by which plugin, and negotiation
  (the best syntax to produce for a list of accepted ones);
- `transcode`: a data set re-encoded in another transfer syntax, in place (`photometric`, `lossy`: what the
  target syntax requires of the image pixel attributes and of lossy steps);
- `plugins`: imagecodecs as pydicom decoding / encoding plugins (JPEG lossless, 12-bit JPEG, HTJ2K...);
- `streams`: what a compressed frame's header says; `samples`: synthetic images; `proof`: the round trips
  that make the README's transfer-syntax matrix.
"""

from pacs.codecs.registry import (
    PREFERENCE,
    CodecInfo,
    can_decode,
    can_encode,
    can_produce,
    decodable,
    describe,
    encodable,
    negotiate,
)
from pacs.codecs.syntaxes import SYNTAXES, SyntaxInfo, frames_media_type, syntax_for_media_type
from pacs.codecs.transcode import EncodeOptions, TranscodeError, transcode

__all__ = [
    "PREFERENCE",
    "SYNTAXES",
    "CodecInfo",
    "EncodeOptions",
    "SyntaxInfo",
    "TranscodeError",
    "can_decode",
    "can_encode",
    "can_produce",
    "decodable",
    "describe",
    "encodable",
    "frames_media_type",
    "negotiate",
    "syntax_for_media_type",
    "transcode",
]
