"""Which presentation contexts a C-STORE SCU proposes, and which syntax each instance then goes in.

Asked of the codec registry (`pacs.codecs`), never of a list of compressed syntaxes kept here.

Proposal, per SOP class (one syntax per context wherever the sender must be able to choose, as dcmtk's
storescu does; Explicit and Implicit VR LE share one context, the peer picking):

1. Explicit + Implicit VR LE (every class: what any peer takes; decodable instances go there);
2. each syntax the class's instances are stored in (they go as stored, streamed, never decoded);
3. the node's preferred syntax, when a codec can produce it from a stored one;
4. the lossless compressed syntaxes a codec can produce from a stored one, in `PREFERENCE` order.

Within the 128 contexts an association may propose, tiers are filled in that order, every class of a
tier before the next tier; what does not fit is left out (those instances are then transcoded).

Choice, per instance (`candidates`): the preferred syntax when accepted and producible, else the
stored one when accepted, else the accepted syntaxes a codec can produce (`pacs.codecs.negotiate`:
lossless ones first, in `PREFERENCE` order; lossy ones only for a lossy source or a lossy preference).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.presentation import PresentationContext, build_context

from pacs.codecs import SYNTAXES, can_encode, can_produce, encodable, negotiate
from pacs.codecs.registry import PREFERENCE

NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
#: A DICOM association proposes at most 128 presentation contexts (odd IDs 1-255).
MAX_CONTEXTS = 128


def _rank(syntax: str) -> int:
    try:
        return PREFERENCE.index(syntax)
    except ValueError:
        return len(PREFERENCE)


def is_lossy(syntax: str) -> bool:
    """True when `syntax` can only carry lossy pixels (JPEG Baseline/Extended): a preference for it
    allows lossy encodings. Syntaxes that can be either are encoded lossless by default."""
    info = SYNTAXES.get(syntax)
    return info is not None and not info.lossless


def alternatives() -> list[str]:
    """The lossless compressed syntaxes this installation encodes, most preferred first."""
    return sorted((s for s in encodable() if s not in NATIVE and SYNTAXES[s].lossless
                   and SYNTAXES[s].encapsulated), key=_rank)


def proposed_contexts(
    pairs: Iterable[tuple[str, str]], preferred: str | None = None, *, transcode: bool = True,
) -> list[PresentationContext]:
    """Contexts for (SOP class, stored transfer syntax) pairs (see the module docstring); `transcode`
    False proposes tiers 1-2 only. ValueError beyond 128 SOP classes."""
    by_class: dict[str, list[str]] = {}
    for sop_class, syntax in pairs:
        stored = by_class.setdefault(str(sop_class), [])
        if str(syntax) not in stored:
            stored.append(str(syntax))
    if len(by_class) > MAX_CONTEXTS:
        raise ValueError(f"{len(by_class)} SOP classes: an association proposes at most {MAX_CONTEXTS}")
    contexts = [build_context(c, _natives(preferred)) for c in by_class]
    tiers: list[list[tuple[str, str]]] = [
        [(c, s) for c, stored in by_class.items() for s in stored if s not in NATIVE]]
    if transcode:
        if preferred and can_encode(preferred):  # a native one too: alone, the peer cannot pick the other
            tiers.append([(c, preferred) for c, stored in by_class.items()
                          if (preferred in NATIVE or preferred not in stored)
                          and any(can_produce(s, preferred) for s in stored)])
        extra = [s for s in alternatives() if s != preferred]
        tiers.append([(c, s) for s in extra for c, stored in by_class.items()
                      if s not in stored and any(can_produce(x, s) for x in stored)])
    room = MAX_CONTEXTS - len(contexts)
    for tier in tiers:
        for sop_class, syntax in tier:
            if room == 0:
                return contexts
            contexts.append(build_context(sop_class, [syntax]))
            room -= 1
    return contexts


def _natives(preferred: str | None) -> list[str]:
    """Explicit and Implicit VR LE, the preferred one first (a peer may take the first it supports)."""
    return [ImplicitVRLittleEndian, ExplicitVRLittleEndian] if preferred == ImplicitVRLittleEndian \
        else list(NATIVE)


def accepted_syntaxes(accepted: Sequence[PresentationContext], sop_class: str) -> list[str]:
    """The syntaxes the peer accepted for `sop_class`, with this side as the SCU (the C-GET requestor's
    contexts with the SCP role for itself included), most preferred first."""
    found = {str(cx.transfer_syntax[0]) for cx in accepted
             if cx.abstract_syntax == sop_class and cx.as_scu is not False and cx.transfer_syntax}
    return sorted(found, key=_rank)


def candidates(
    accepted: Sequence[PresentationContext], sop_class: str, stored: str, preferred: str | None = None,
) -> list[str]:
    """The syntaxes to try sending an instance in, best first (the first that a codec really produces
    for this instance wins): empty when the peer accepted nothing it can be sent in."""
    syntaxes = accepted_syntaxes(accepted, sop_class)
    order: list[str] = []
    if preferred and preferred in syntaxes and can_produce(stored, preferred):
        order.append(preferred)
    if stored in syntaxes and stored not in order:
        order.append(stored)
    lossy = bool(preferred) and is_lossy(str(preferred))
    rest = [s for s in syntaxes if s not in order]
    while rest:
        best = negotiate(stored, rest, lossy=lossy)
        if best is None:
            break
        order.append(best)
        rest.remove(best)
    return order


def sending_syntax(
    accepted: Sequence[PresentationContext], sop_class: str, stored: str, preferred: str | None = None,
) -> str | None:
    """The syntax an instance goes in over an association with these accepted contexts (the first of
    `candidates`), None when there is none."""
    found = candidates(accepted, sop_class, stored, preferred)
    return found[0] if found else None
