"""One bad message ends one message: DIMSE requests answered with a failure status where pynetdicom
would abort the association (or not answer at all).

pynetdicom 3.0 (pinned) aborts the association when a request's SOP class is one it has no service
class for ("No supported service class available": an unknown or malformed Affected SOP Class UID,
e.g. `31`), when a service class raises, and when a command set's value cannot be set on its
primitive (a UID of more than 64 characters); it drops a request that lacks a required value (an
empty SOP Instance UID) without an answer, so the peer waits for its timeout. Every message the peer
queued behind such a request on the association was lost. Here each of them is answered with a
failure response of its own type (status and Error Comment) and the association goes on
(`pacs.dimse.reactor.EventAssociation` and `EventDIMSE` call these).
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.dimse_messages import _MSG_TO_PRIMITVE, _MULTIVALUE_TAGS  # type: ignore[attr-defined]
from pynetdicom.dimse_primitives import C_CANCEL, C_ECHO, C_FIND, C_GET, C_MOVE, C_STORE
from pynetdicom.service_class import ServiceClass, StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

from pacs.dicom.uids import is_storage_sop_class

log = logging.getLogger("gateway")

#: Refused: SOP Class not supported (PS3.7 C.5).
SOP_CLASS_NOT_SUPPORTED = 0x0122
#: Error: Cannot understand / Unable to process (PS3.4 B.2.3, C.4): a DIMSE-C request malformed.
CANNOT_UNDERSTAND = 0xC000
#: Processing failure (PS3.7 C.4.1): a DIMSE-N request malformed, or a service that failed.
PROCESSING_FAILURE = 0x0110
_DIMSE_C = (C_ECHO, C_STORE, C_FIND, C_GET, C_MOVE)


def malformed_status(msg: Any) -> int:
    """The failure status for a request that cannot be understood, by service family."""
    return CANNOT_UNDERSTAND if isinstance(msg, _DIMSE_C) else PROCESSING_FAILURE


def sop_class_of(msg: Any) -> str:
    """A request's Affected (DIMSE-C, N-CREATE, N-EVENT-REPORT) or Requested SOP Class UID."""
    value = getattr(msg, "AffectedSOPClassUID", None) or getattr(msg, "RequestedSOPClassUID", None)
    return str(value or "")


def service_for(msg: Any, abstract_syntax: str) -> tuple[type[ServiceClass] | None, str]:
    """The service class that serves `msg` on a context of `abstract_syntax`, or None and why not.

    A C-STORE is a storage request when its SOP class is the context's (an accepted storage context:
    standard, retired or, when configured, unknown) or a storage SOP class of the standard (a sender
    whose file meta and data set disagree on the class sends the data set's on the file's context);
    any other request's SOP class must be the context's and one pynetdicom serves."""
    uid = sop_class_of(msg)
    if isinstance(msg, C_STORE):
        if uid and (uid == abstract_syntax or is_storage_sop_class(uid)):
            return StorageServiceClass, ""
        return None, f"SOP Class {uid[:24]!r} is not the context's"
    if uid != abstract_syntax:
        return None, f"SOP Class {uid[:24]!r} is not the context's"
    service = uid_to_service_class(uid)
    if service is ServiceClass:
        return None, f"SOP Class {uid[:24]!r} is not supported"
    return service, ""


def missing(msg: Any) -> list[str]:
    """The request parameters `msg` lacks (None or empty), pynetdicom's `is_valid_request` named."""
    return [k for k in msg.REQUEST_KEYWORDS if getattr(msg, k, None) is None]


def refuse(assoc: Any, msg: Any, context_id: int, status: int, comment: str) -> None:
    """Answer the request `msg` with a failure response of its type: `status`, `comment` as its Error
    Comment (at most 64 characters), its SOP class and instance echoed where they are usable."""
    discard_spool(msg)
    rsp = type(msg)()
    rsp.MessageIDBeingRespondedTo = msg.MessageID
    for name, source in (("AffectedSOPClassUID", sop_class_of(msg)),
                         ("AffectedSOPInstanceUID", getattr(msg, "AffectedSOPInstanceUID", None)
                          or getattr(msg, "RequestedSOPInstanceUID", None))):
        if source and hasattr(rsp, name):
            with contextlib.suppress(Exception):  # a malformed UID is not echoed
                setattr(rsp, name, source)
    rsp.Status = status
    if hasattr(rsp, "ErrorComment"):
        rsp.ErrorComment = comment[:64]
    if isinstance(msg, (C_GET, C_MOVE)):
        for name in ("NumberOfCompletedSuboperations", "NumberOfFailedSuboperations",
                     "NumberOfWarningSuboperations"):
            with contextlib.suppress(Exception):
                setattr(rsp, name, 0)
    log.warning("%s from %s answered 0x%04X: %s", type(msg).__name__.replace("_", "-"),
                assoc.requestor.ae_title, status, comment)
    assoc.dimse.send_msg(rsp, context_id)


def discard_spool(msg: Any) -> None:
    """Remove the file a refused C-STORE's data set was spooled to (pynetdicom's storage service
    removes it after its handler; a refused request never reaches one)."""
    spooled = getattr(msg, "_dataset_file", None)
    if spooled is None:
        return
    msg._dataset_file = None
    with contextlib.suppress(OSError):
        spooled.close()
    with contextlib.suppress(OSError):
        os.unlink(spooled.name)


def lenient_primitive(message: Any, error: Exception) -> Any | None:
    """The request primitive of a received DIMSE message whose command set pynetdicom could not turn
    into one (`message_to_primitive` raised `error`): every value that can be set is, the others are
    named in `_pacs_refusal` (status, comment) for the association to answer. None for a C-CANCEL, a
    response, or a message without a Message ID: nothing to answer."""
    name = type(message).__name__
    cls = _MSG_TO_PRIMITVE.get(name[:name.rfind("_R")])
    command: Dataset = message.command_set
    if cls is None or cls is C_CANCEL or name.endswith("_RSP") or "MessageID" not in command:
        return None
    primitive: Any = cls()
    bad: list[str] = []
    for elem in command:
        if not hasattr(primitive, elem.keyword):
            continue
        value = elem.value
        if elem.VM > 1 and elem.tag not in _MULTIVALUE_TAGS:
            value = value[0]
        try:
            setattr(primitive, elem.keyword, value)
        except Exception as exc:  # pynetdicom's reason follows its last " - "
            bad.append(f"{elem.keyword}: {str(exc).rsplit(' - ', 1)[-1]}")
    if primitive.MessageID is None:
        return None
    primitive._context_id = message.context_id
    primitive._dataset_path = message._data_set_path
    primitive._dataset_file = message._data_set_file
    what = ", ".join(bad) or type(error).__name__
    primitive._pacs_refusal = (malformed_status(primitive), f"invalid {what}")
    return primitive
