"""Codecs: the one registry every path asks what can be decoded and encoded here, and the transcoder.

- `syntaxes`: what each transfer syntax is (name, frames media type, lossless or lossy);
- `registry`: what this installation can decode and encode, by which plugin, and negotiation
  (the best syntax to produce for a list of accepted ones);
- `transcode`: a data set re-encoded in another transfer syntax, in place.
"""

from pacs.codecs.registry import (
    can_decode,
    can_encode,
    can_produce,
    decodable,
    encodable,
    negotiate,
)
from pacs.codecs.syntaxes import SYNTAXES, SyntaxInfo, frames_media_type, syntax_for_media_type
from pacs.codecs.transcode import EncodeOptions, TranscodeError, transcode

__all__ = [
    "SYNTAXES",
    "EncodeOptions",
    "SyntaxInfo",
    "TranscodeError",
    "can_decode",
    "can_encode",
    "can_produce",
    "decodable",
    "encodable",
    "frames_media_type",
    "negotiate",
    "syntax_for_media_type",
    "transcode",
]
