"""SIP dialogs (RFC 3261 section 12), sans-I/O.

A :class:`Dialog` holds the dialog state of section 12 (Call-ID, local and remote tags, local and remote URIs, remote
target, route set, local and remote CSeq numbers) and does the dialog-level work: checking and recording an incoming
in-dialog request (12.2.2), building an outgoing one with the right Request-URI and Route headers for loose and
strict routers (12.2.1.1), and building the ACK for a 2xx (13.2.2.4). It sends nothing itself: requests it builds go
to a client transaction (:mod:`ivr.sip.transaction`), or straight to the transport for an ACK.

Errors are :class:`DialogError` (a :class:`~ivr.sip.errors.SipError`) naming the rule; those caused by a peer carry
the status to answer (481 for a request outside this dialog, 500 for a CSeq out of order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from ivr.sip.errors import SipError
from ivr.sip.headers import Headers, Via
from ivr.sip.message import Request, Response
from ivr.sip.transaction import new_branch
from ivr.sip.uri import URI, NameAddr, SipURI, is_token, parse_uri

TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY"})
"""Requests that replace the remote target with their Contact (RFC 3261 12.2, RFC 3311, RFC 6665)."""

CONTACT_METHODS = TARGET_REFRESH_METHODS | {"REFER"}
"""In-dialog requests that carry our Contact (target refreshes, and REFER per RFC 3515)."""

MAX_CSEQ = 2**31 - 1
"""RFC 3261 8.1.1.5: a CSeq number is below 2**31."""


class DialogError(SipError):
    """A dialog rule was broken. ``status`` is the response a server answers when a peer broke it."""

    status = 500


class DialogState(Enum):
    EARLY = "Early"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


DIALOG_TRANSITIONS: dict[DialogState, frozenset[DialogState]] = {
    DialogState.EARLY: frozenset({DialogState.CONFIRMED, DialogState.TERMINATED}),
    DialogState.CONFIRMED: frozenset({DialogState.TERMINATED}),
    DialogState.TERMINATED: frozenset(),
}
"""RFC 3261 12: an early dialog is confirmed by a 2xx or ended by a non-2xx final; any dialog ends with BYE (or
481/408, 12.2.1.2)."""


@dataclass(frozen=True)
class DialogId:
    """RFC 3261 12: Call-ID, local tag, remote tag. A null remote tag (RFC 2543 peer, no From tag) is ``""``."""

    call_id: str
    local_tag: str
    remote_tag: str


def dialog_id_for_request(request: Request) -> DialogId | None:
    """The dialog an incoming request belongs to, seen from its receiver (local tag = To tag, remote tag = From tag);
    ``None`` when the To has no tag, i.e. the request is outside any dialog (RFC 3261 12.2.2)."""
    to_tag = request.to.tag
    if to_tag is None:
        return None
    return DialogId(request.call_id, to_tag, request.from_.tag or "")


def dialog_id_for_response(response: Response) -> DialogId | None:
    """The dialog a response belongs to, seen from the UAC that sent the request (local tag = From tag, remote tag =
    To tag); ``None`` when the To has no tag (a 100 Trying, or a response that creates no dialog)."""
    to_tag = response.to.tag
    if to_tag is None:
        return None
    return DialogId(response.call_id, response.from_.tag or "", to_tag)


def _without_tag(address: NameAddr) -> str:
    params = {name: value for name, value in address.params.items() if name != "tag"}
    return str(NameAddr(uri=address.uri, display=address.display, params=params, bracketed=address.bracketed))


def _with_tag(address_text: str, tag: str) -> str:
    address = NameAddr.parse(address_text)
    if tag:
        address.params["tag"] = tag
    return str(address)


def _contact_uri(message: Request | Response) -> str | None:
    contacts = message.contacts
    return str(contacts[0].uri) if contacts else None


def _check_tag(tag: str, what: str) -> None:
    if not is_token(tag):
        raise DialogError(f"RFC 3261 19.3: the {what} {tag!r} is not a token")


@dataclass(eq=False)
class Dialog:
    """The state of one dialog (RFC 3261 12) and the requests built from it.

    ``local_uri`` / ``remote_uri`` are From/To name-addr texts (display name kept, tag removed); ``remote_target`` is a
    URI text; ``route_set`` holds the route entries (``<sip:p1.example.com;lr>``) in the order Route headers carry
    them. ``local_cseq`` is the CSeq number of the last request we sent (0 for a UAS that has sent none: its first
    request gets 1); ``remote_cseq`` that of the last request received, ``None`` while none has come (a UAC).
    """

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    remote_uri: str
    remote_target: str
    route_set: list[str] = field(default_factory=list)
    local_cseq: int = 0
    remote_cseq: int | None = None
    local_contact: str | None = None
    is_uac: bool = False
    state: DialogState = DialogState.CONFIRMED

    # ---- creation ---------------------------------------------------------------------------------------------------

    @classmethod
    def from_uas(cls, invite: Request, *, local_tag: str, local_contact: str, early: bool = False) -> Dialog:
        """The dialog a UAS creates by answering ``invite`` with a 2xx (or, with ``early=True``, a 1xx carrying a To
        tag) - RFC 3261 12.1.1. Route set = Record-Route in order, remote target = the Contact URI, remote CSeq = the
        INVITE's, remote tag = the From tag (null for RFC 2543 peers). ``local_tag`` goes in our responses' To."""
        _check_tag(local_tag, "local tag")
        if invite.to.tag is not None:
            raise DialogError(
                "RFC 3261 12.1.1: a request whose To already has a tag is inside a dialog and creates none", status=400
            )
        target = _contact_uri(invite)
        if target is None:
            raise DialogError("RFC 3261 8.1.1.8: a dialog-creating request must carry a Contact", status=400)
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=invite.from_.tag or "",
            local_uri=_without_tag(invite.to),
            remote_uri=_without_tag(invite.from_),
            remote_target=target,
            route_set=[value.strip() for value in invite.headers.values("Record-Route")],
            local_cseq=0,
            remote_cseq=invite.cseq.number,
            local_contact=local_contact,
            is_uac=False,
            state=DialogState.EARLY if early else DialogState.CONFIRMED,
        )

    @classmethod
    def from_uac(cls, invite: Request, response: Response) -> Dialog:
        """The dialog a UAC creates from a 2xx (confirmed) or a 101-199 with a To tag (early) to its ``invite`` -
        RFC 3261 12.1.2. Route set = the response's Record-Route reversed, remote target = its Contact URI (the
        Request-URI when a peer left Contact out of a provisional response), local CSeq = the INVITE's."""
        if not 101 <= response.status <= 299:
            raise DialogError(f"RFC 3261 12.1: a {response.status} response does not create a dialog")
        if response.call_id != invite.call_id or response.cseq.number != invite.cseq.number:
            raise DialogError("RFC 3261 17.1.3: the response does not answer this INVITE")
        remote_tag = response.to.tag
        if remote_tag is None:
            raise DialogError("RFC 3261 12.1.2: a response without a To tag creates no dialog")
        local_tag = invite.from_.tag
        if local_tag is None:
            raise DialogError("RFC 3261 8.1.1.3: our INVITE must carry a From tag")
        record_route = [value.strip() for value in response.headers.values("Record-Route")]
        contacts = invite.headers.values("Contact")
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_uri=_without_tag(invite.from_),
            remote_uri=_without_tag(invite.to),
            remote_target=_contact_uri(response) or invite.uri,
            route_set=record_route[::-1],
            local_cseq=invite.cseq.number,
            remote_cseq=None,
            local_contact=contacts[0] if contacts else None,
            is_uac=True,
            state=DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY,
        )

    # ---- state ------------------------------------------------------------------------------------------------------

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    def _move(self, state: DialogState) -> None:
        if state is self.state:
            return
        if state not in DIALOG_TRANSITIONS[self.state]:
            raise DialogError(f"RFC 3261 12: a {self.state.value} dialog cannot become {state.value}")
        self.state = state

    def confirm(self) -> None:
        """A UAS sent the 2xx for an early dialog (RFC 3261 12.1.1)."""
        self._move(DialogState.CONFIRMED)

    def terminate(self) -> None:
        """End the dialog (BYE sent or received, non-2xx final on an early dialog, 481/408). Idempotent."""
        self.state = DialogState.TERMINATED

    # ---- incoming ---------------------------------------------------------------------------------------------------

    def receive_request(self, request: Request) -> None:
        """Check and record a request received in this dialog (RFC 3261 12.2.2).

        Raises :class:`DialogError` with status 481 when the request is not in this dialog (or the dialog is over) and
        500 when its CSeq is lower than the last one seen. ACK and CANCEL carry the CSeq number of the request they
        belong to and are not ordered. A target refresh (re-INVITE, UPDATE, SUBSCRIBE, NOTIFY) with a Contact
        replaces the remote target; a BYE terminates the dialog (RFC 3261 15.1.2)."""
        if dialog_id_for_request(request) != self.id:
            raise DialogError("RFC 3261 12.2.2: the request does not match this dialog", status=481)
        if self.state is DialogState.TERMINATED:
            raise DialogError("RFC 3261 12.2.2: the dialog is terminated", status=481)
        if request.method in ("ACK", "CANCEL"):
            return
        number = request.cseq.number
        if self.remote_cseq is not None and number < self.remote_cseq:
            raise DialogError(f"RFC 3261 12.2.2: CSeq out of order ({number} after {self.remote_cseq})", status=500)
        self.remote_cseq = number
        if request.method in TARGET_REFRESH_METHODS:
            target = _contact_uri(request)
            if target is not None:
                self.remote_target = target
        if request.method == "BYE":
            self.terminate()

    def receive_response(self, response: Response) -> None:
        """Record a response to a request this side sent in the dialog (or, for a UAC's early dialog, to the INVITE
        that created it).

        * Early dialog, INVITE 2xx: confirmed; a UAC recomputes route set and remote target from the 2xx (13.2.2.4).
        * Early dialog, INVITE 300-699: terminated (RFC 3261 12.3) - whatever the To tag, it ends every early dialog.
        * 2xx to a target refresh: its Contact replaces the remote target (12.2.1.2).
        * 481 or 408 to an in-dialog request: terminated (12.2.1.2).
        """
        if response.call_id != self.call_id or (response.from_.tag or "") != self.local_tag:
            raise DialogError("RFC 3261 12.2.1.2: the response does not belong to this dialog", status=481)
        if self.state is DialogState.TERMINATED:
            return
        method = response.cseq.method
        status = response.status
        if self.state is DialogState.EARLY and method == "INVITE" and status >= 300:
            self.terminate()
            return
        if response.to.tag != self.remote_tag and self.remote_tag:
            raise DialogError("RFC 3261 12.2.1.2: the response comes from another dialog (To tag)", status=481)
        if status in (408, 481):
            self.terminate()
            return
        if not 200 <= status < 300:
            return
        if self.state is DialogState.EARLY and method == "INVITE":
            self._move(DialogState.CONFIRMED)
            if self.is_uac:
                self.route_set = [value.strip() for value in response.headers.values("Record-Route")][::-1]
        if method in TARGET_REFRESH_METHODS:
            target = _contact_uri(response)
            if target is not None:
                self.remote_target = target

    # ---- outgoing ---------------------------------------------------------------------------------------------------

    def create_request(
        self,
        method: str,
        *,
        via: Via,
        body: bytes = b"",
        content_type: str | None = None,
        extra: Sequence[tuple[str, str]] = (),
    ) -> Request:
        """A new request in this dialog (RFC 3261 12.2.1.1) with CSeq ``local_cseq + 1`` (recorded).

        ``via`` is our Via for it; a fresh branch is added when it has none. Request-URI and Route follow the route
        set: loose routing (first route has ``lr``) keeps the remote target as Request-URI and sends the route set as
        Route; strict routing puts the first route in the Request-URI (without ``method`` or headers) and appends the
        remote target to the remaining routes. Target refreshes and REFER carry ``local_contact``. ``extra`` headers
        are appended as given. ACK (use :meth:`create_ack`) and CANCEL (``transaction.make_cancel``) are refused."""
        if not is_token(method):
            raise DialogError(f"RFC 3261 25.1: {method!r} is not a method token")
        if method == "ACK":
            raise DialogError("RFC 3261 13.2.2.4: an ACK for a 2xx takes its INVITE's CSeq: use create_ack")
        if method == "CANCEL":
            raise DialogError("RFC 3261 9.1: a CANCEL is built from the request it cancels: use make_cancel")
        if self.state is DialogState.TERMINATED:
            raise DialogError(f"RFC 3261 12.3: the dialog is terminated; no {method} can be sent in it")
        if method == "BYE" and self.state is DialogState.EARLY and not self.is_uac:
            raise DialogError("RFC 3261 15: the callee's UA must not send a BYE on an early dialog")
        if self.local_cseq >= MAX_CSEQ:
            raise DialogError("RFC 3261 8.1.1.5: the CSeq number would reach 2**31")
        self.local_cseq += 1
        return self._build(method, self.local_cseq, via, body, content_type, extra)

    def create_ack(self, invite: Request, *, via: Via, body: bytes = b"", content_type: str | None = None) -> Request:
        """The ACK for a 2xx to ``invite`` (RFC 3261 13.2.2.4): built like any in-dialog request but with the INVITE's
        CSeq number and method ACK, the INVITE's credentials, and a branch of its own (a new one if ``via`` has none
        or reuses the INVITE's). ``body`` carries the SDP answer when the 2xx held the offer. Allowed in any state:
        a 2xx that arrives after we gave up must still be ACKed before the BYE (RFC 3261 15)."""
        if invite.method != "INVITE" or invite.call_id != self.call_id:
            raise DialogError("RFC 3261 13.2.2.4: create_ack needs the INVITE this dialog sent")
        if via.branch is not None and via.branch == invite.top_via.branch:
            params = {k: v for k, v in via.params.items() if k != "branch"}
            via = Via(via.transport, via.host, via.port, params, via.protocol)
        credentials = [
            (name, value) for name in ("Authorization", "Proxy-Authorization") for value in invite.headers.get_all(name)
        ]
        return self._build("ACK", invite.cseq.number, via, body, content_type, credentials)

    def next_hop(self) -> SipURI:
        """Where the next request goes: the first route if the route set is not empty, else the remote target. The
        driver resolves host, port and transport from it (RFC 3263)."""
        uri: URI = NameAddr.parse(self.route_set[0]).uri if self.route_set else parse_uri(self.remote_target)
        if not isinstance(uri, SipURI):
            raise DialogError(f"RFC 3261 12.2.1.1: cannot route to {uri}, which is not a SIP URI")
        return uri

    def request_uri_and_routes(self) -> tuple[str, list[str]]:
        """Request-URI and Route entries for the next request (RFC 3261 12.2.1.1)."""
        if not self.route_set:
            return self.remote_target, []
        first = NameAddr.parse(self.route_set[0]).uri
        if isinstance(first, SipURI) and "lr" in first.params:
            return self.remote_target, list(self.route_set)
        # Strict router: its URI becomes the Request-URI, the remote target the last route (RFC 3261 12.2.1.1).
        if isinstance(first, SipURI):
            params = {name: value for name, value in first.params.items() if name != "method"}
            first = SipURI(
                host=first.host,
                user=first.user,
                password=first.password,
                port=first.port,
                scheme=first.scheme,
                params=params,
            )
        return str(first), [*self.route_set[1:], f"<{self.remote_target}>"]

    def _build(
        self,
        method: str,
        cseq: int,
        via: Via,
        body: bytes,
        content_type: str | None,
        extra: Sequence[tuple[str, str]],
    ) -> Request:
        if via.branch is None:
            via = Via(via.transport, via.host, via.port, {**via.params, "branch": new_branch()}, via.protocol)
        request_uri, routes = self.request_uri_and_routes()
        headers = Headers()
        headers.add("Via", str(via))
        for route in routes:
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        headers.add("From", _with_tag(self.local_uri, self.local_tag))
        headers.add("To", _with_tag(self.remote_uri, self.remote_tag))
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{cseq} {method}")
        if method in CONTACT_METHODS and self.local_contact is not None:
            headers.add("Contact", self.local_contact)
        for name, value in extra:
            headers.add(name, value)
        if body and content_type:
            headers.add("Content-Type", content_type)
        return Request(method, request_uri, headers, body)
