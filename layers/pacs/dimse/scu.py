"""The SCU side of `pacs` (echo, find, move, get; store goes through `pacs.dimse.sender`): associations
to any remote node, given as `AE@HOST:PORT` or by an AE title of the node registry.

Every requested association sets TCP_NODELAY as soon as it connects, and caps what it sends at
`max_send_pdu` whatever the peer announced (0 = unlimited, or 4 GB). The same code is the base for
routing and prefetch.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import StoragePresentationContexts, _config, build_role, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import MaximumLengthNotification
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from pacs.catalog.nodes import NodeRegistry, RemoteNode
from pacs.dicom.uids import is_key_safe
from pacs.dimse.reactor import EventAE

#: (model, service) -> SOP class; models "patient" (Patient Root) and "study" (Study Root).
MODELS = {
    ("patient", "find"): PatientRootQueryRetrieveInformationModelFind,
    ("patient", "move"): PatientRootQueryRetrieveInformationModelMove,
    ("patient", "get"): PatientRootQueryRetrieveInformationModelGet,
    ("study", "find"): StudyRootQueryRetrieveInformationModelFind,
    ("study", "move"): StudyRootQueryRetrieveInformationModelMove,
    ("study", "get"): StudyRootQueryRetrieveInformationModelGet,
}
LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
_NODE = re.compile(r"^(?:(?P<ae>[^@]{1,16})@)?(?P<host>\[[^\]]+\]|[^:@]+):(?P<port>\d{1,5})$")


class ScuError(Exception):
    """The request could not be made: a bad node or key, or no association."""


# -- arguments ---------------------------------------------------------------------------------------

def resolve_node(spec: str, registry: NodeRegistry | None = None, *,
                 called_ae: str | None = None) -> RemoteNode:
    """`AE@HOST:PORT`, `HOST:PORT` (the called AE from `called_ae`, else ANY-SCP as dcmtk) or an AE
    title of the registry; `called_ae` (-aec) overrides the AE title of the first two forms."""
    m = _NODE.match(spec)
    if m:
        ae = called_ae or m["ae"] or "ANY-SCP"
        port = int(m["port"])
        if not 0 < port < 65536:
            raise ScuError(f"{spec}: port out of range")
        return RemoteNode(ae_title=ae, host=m["host"].strip("[]"), port=port)
    if registry is None:
        raise ScuError(f"{spec}: not AE@HOST:PORT, and no node registry to look it up in")
    node = registry.get_node(spec)
    if node is None:
        raise ScuError(f"{spec}: no such node in the registry (pacs nodes list), nor AE@HOST:PORT")
    return node


def parse_keys(keys: Iterable[str], base: Dataset | None = None) -> Dataset:
    """An identifier from dcmtk-style `-k` keys: `gggg,eeee=value`, `Keyword=value`, or a bare key
    (a zero-length return key). Raises ScuError for an unknown tag or keyword."""
    ds = base if base is not None else Dataset()
    for key in keys:
        name, _, value = key.partition("=")
        name = name.strip()
        tag: Any
        if re.fullmatch(r"\(?[0-9A-Fa-f]{4},[0-9A-Fa-f]{4}\)?", name):
            group, elem = name.strip("()").split(",")
            tag = Tag(int(group, 16), int(elem, 16))
        else:
            tag = tag_for_keyword(name)
            if tag is None:
                raise ScuError(f"-k {key}: unknown keyword {name!r}")
            tag = Tag(tag)
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            raise ScuError(f"-k {key}: tag {tag} is not in the data dictionary") from None
        if vr == "SQ":
            raise ScuError(f"-k {key}: sequence keys are not supported")
        ds.add_new(tag, vr, _typed(vr, value) if value else None)
    return ds


def _typed(vr: str, value: str) -> Any:
    if vr in ("US", "SS", "UL", "SL", "UV", "SV", "AT"):
        return [int(v) for v in value.split("\\")] if "\\" in value else int(value)
    if vr in ("FL", "FD"):
        return [float(v) for v in value.split("\\")] if "\\" in value else float(value)
    return value


def identifier(level: str | None, keys: Iterable[str]) -> Dataset:
    """The request identifier: QueryRetrieveLevel (from `level` unless a key sets it) and the keys."""
    ds = parse_keys(keys)
    if level:
        level = level.upper()
        if level not in LEVELS:
            raise ScuError(f"query/retrieve level {level}: one of {', '.join(LEVELS)}")
        ds.QueryRetrieveLevel = level
    if "QueryRetrieveLevel" not in ds:
        raise ScuError("no query/retrieve level: -L LEVEL or -k QueryRetrieveLevel=LEVEL")
    return ds


def describe(ds: Dataset) -> dict[str, str]:
    """Keyword (or tag) -> value text of a response identifier's top-level elements."""
    out: dict[str, str] = {}
    for elem in ds:
        if elem.tag.group == 0x0002:
            continue
        name = keyword_for_tag(elem.tag) or f"{elem.tag.group:04X},{elem.tag.element:04X}"
        value = elem.value
        if elem.VR == "SQ":
            text = f"({len(value)} items)"
        elif value is None or value == "":
            text = ""
        elif isinstance(value, (list, tuple)) or elem.VM > 1:
            text = "\\".join(str(v) for v in value)
        else:
            text = str(value)
        out[name] = text
    return out


# -- associations ---------------------------------------------------------------------------------------

@dataclass
class ScuOptions:
    calling_ae: str = "PACS"
    tls: ssl.SSLContext | None = None
    max_pdu: int = 1 << 20
    max_send_pdu: int = 1 << 20
    timeout: float = 60.0


def cap_announced(user_information: Iterable[Any] | None, limit: int) -> None:
    """Lower a peer's announced maximum PDU length (0 = unlimited) to `limit`, in place."""
    for item in user_information or []:
        if isinstance(item, MaximumLengthNotification) and limit \
                and (not item.maximum_length_received or item.maximum_length_received > limit):
            item.maximum_length_received = limit


def cap_send_pdu(limit: int) -> Callable[[Event], None]:
    """EVT_ACCEPTED handler: what we send is fragmented to at most `limit` bytes per PDU."""

    def handler(event: Event) -> None:
        cap_announced(event.assoc.acceptor.user_information, limit)

    return handler


def associate(node: RemoteNode, options: ScuOptions, contexts: list[PresentationContext], *,
              roles: list[Any] | None = None, handlers: list[tuple[Any, ...]] | None = None) -> Association:
    """An established association to `node`, or ScuError saying why not."""
    _config.LOG_HANDLER_LEVEL = "none"
    ae = EventAE(ae_title=options.calling_ae)  # event-driven reactors, TCP_NODELAY
    ae.acse_timeout = options.timeout
    ae.dimse_timeout = options.timeout
    ae.network_timeout = options.timeout
    ae.connection_timeout = options.timeout
    if options.tls is None and node.tls:
        raise ScuError(f"{node.ae_title} is registered with TLS: give --tls (and its CA)")
    tls_args = (options.tls, node.host) if options.tls is not None else None
    bound = [(evt.EVT_ACCEPTED, cap_send_pdu(options.max_send_pdu)), *(handlers or [])]
    assoc = ae.associate(node.host, node.port, contexts, ae_title=node.ae_title, max_pdu=options.max_pdu,
                         ext_neg=roles, tls_args=tls_args, evt_handlers=bound)
    if not assoc.is_established:
        ae.shutdown()
        raise ScuError(f"association with {node.ae_title}@{node.host}:{node.port} {_why(assoc)}")
    return assoc


def _why(assoc: Association) -> str:
    if assoc.is_rejected:
        rj = assoc.acceptor.primitive
        if rj is not None:
            return f"rejected: {rj.reason_str} (result {rj.result}, source {rj.result_source}, " \
                   f"reason {rj.diagnostic})"
        return "rejected"
    if assoc.is_aborted:
        return "aborted (refused connection, TLS failure or abort by the peer)"
    return "not established (no answer)"


def _finish(assoc: Association) -> None:
    if assoc.is_established:
        assoc.release()
    assoc.ae.shutdown()


def _contexts(sop_class: str) -> list[PresentationContext]:
    return [build_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]


def _status(rsp: Dataset | None, what: str) -> int:
    status = rsp.get("Status") if isinstance(rsp, Dataset) else None
    if status is None:
        raise ScuError(f"no {what} response (timeout or association lost)")
    return int(status)


# -- services ---------------------------------------------------------------------------------------------

def echo(node: RemoteNode, options: ScuOptions) -> int:
    """C-ECHO: the response status."""
    assoc = associate(node, options, _contexts(Verification))
    try:
        return _status(assoc.send_c_echo(), "C-ECHO")
    finally:
        _finish(assoc)


def find(node: RemoteNode, options: ScuOptions, query: Dataset, model: str = "study"
         ) -> Iterator[tuple[int, Dataset | None, Dataset]]:
    """C-FIND: (status, identifier, response) for every response, the final one last (identifier
    None; its response may carry an Error Comment)."""
    sop_class = MODELS[(model, "find")]
    assoc = associate(node, options, _contexts(sop_class))
    try:
        for status, ds in assoc.send_c_find(query, sop_class):
            yield _status(status, "C-FIND"), ds, status
    finally:
        _finish(assoc)


def move(node: RemoteNode, options: ScuOptions, query: Dataset, destination: str, model: str = "study"
         ) -> Iterator[tuple[int, Dataset, Dataset | None]]:
    """C-MOVE to `destination` (an AE title the peer knows): (status, response, identifier) for
    every response (its sub-operation counts, Error Comment), then the final one, whose identifier
    holds the Failed SOP Instance UID List when some failed."""
    sop_class = MODELS[(model, "move")]
    assoc = associate(node, options, _contexts(sop_class))
    try:
        for status, identifier in assoc.send_c_move(query, destination, sop_class):
            _status(status, "C-MOVE")
            yield int(status.Status), status, identifier
    finally:
        _finish(assoc)


@dataclass
class Received:
    sop_uid: str
    path: Path | None
    status: int


def get(node: RemoteNode, options: ScuOptions, query: Dataset, out_dir: Path, model: str = "study",
        on_instance: Callable[[Received], None] | None = None
        ) -> Iterator[tuple[int, Dataset, Dataset | None]]:
    """C-GET: the instances arrive on this association (C-STORE sub-operations, SCP role) and are
    written to `out_dir` as Part 10 files named by SOP Instance UID; yields (status, response,
    identifier) as `move` does."""
    sop_class = MODELS[(model, "get")]
    # 128 contexts at most: the Get model's and 127 storage classes, as pynetdicom's getscu
    storage = [str(cx.abstract_syntax) for cx in StoragePresentationContexts[:127]]
    native: list[Any] = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    contexts = _contexts(sop_class) + [build_context(uid, native) for uid in storage]
    roles = [build_role(uid, scp_role=True) for uid in storage]
    out_dir.mkdir(parents=True, exist_ok=True)

    def store(event: Event) -> int:
        sop_uid = str(getattr(event.request, "AffectedSOPInstanceUID", ""))
        if not is_key_safe(sop_uid):  # it names the file written: never a path
            result = Received(sop_uid, None, 0xC000)
        else:
            path = out_dir / f"{sop_uid}.dcm"
            try:
                tmp = path.with_suffix(".part")
                tmp.write_bytes(event.encoded_dataset(include_meta=True))
                tmp.replace(path)
                result = Received(sop_uid, path, 0x0000)
            except OSError:
                result = Received(sop_uid, None, 0xA700)
        if on_instance is not None:
            on_instance(result)
        return result.status

    assoc = associate(node, options, contexts, roles=roles, handlers=[(evt.EVT_C_STORE, store)])
    try:
        for status, identifier in assoc.send_c_get(query, sop_class):
            _status(status, "C-GET")
            yield int(status.Status), status, identifier
    finally:
        _finish(assoc)
