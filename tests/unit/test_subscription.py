"""RFC 6121 Appendix A: every state of the subscription table against every stanza kind."""

import pytest

from standard_edition.core.subscription import Kind, State, Sub, inbound, outbound

N, T, F, B = Sub.NONE, Sub.TO, Sub.FROM, Sub.BOTH


def st(sub: Sub, out: bool = False, in_: bool = False) -> State:
    return State(sub, pending_out=out, pending_in=in_)


# the nine states of Appendix A, in its order
NONE, NONE_O, NONE_I, NONE_OI = st(N), st(N, out=True), st(N, in_=True), st(N, True, True)
TO, TO_I, FROM, FROM_O, BOTH = st(T), st(T, in_=True), st(F), st(F, out=True), st(B)
ALL = [NONE, NONE_O, NONE_I, NONE_OI, TO, TO_I, FROM, FROM_O, BOTH]


# A.2: (state, kind) -> new state, for stanzas the user sends
OUTBOUND = {
    Kind.SUBSCRIBE: [NONE_O, NONE_O, NONE_OI, NONE_OI, TO, TO_I, FROM_O, FROM_O, BOTH],
    Kind.UNSUBSCRIBE: [NONE, NONE, NONE_I, NONE_I, NONE, NONE_I, FROM, FROM, FROM],
    Kind.SUBSCRIBED: [None, None, FROM, FROM_O, None, BOTH, FROM, FROM_O, BOTH],
    Kind.UNSUBSCRIBED: [NONE, NONE_O, NONE, NONE_O, TO, TO, NONE, NONE_O, TO],
}

# A.3: (state, kind) -> (new state, delivered to the user's clients)
INBOUND = {
    Kind.SUBSCRIBE: [
        (NONE_I, True), (NONE_OI, True), (NONE_I, False), (NONE_OI, False),
        (TO_I, True), (TO_I, False), (FROM, False), (FROM_O, False), (BOTH, False),
    ],
    Kind.UNSUBSCRIBE: [
        (NONE, False), (NONE_O, False), (NONE, True), (NONE_O, True),
        (TO, False), (TO, True), (NONE, True), (NONE_O, True), (TO, True),
    ],
    Kind.SUBSCRIBED: [
        (NONE, False), (TO, True), (NONE_I, False), (TO_I, True),
        (TO, False), (TO_I, False), (FROM, False), (BOTH, True), (BOTH, False),
    ],
    Kind.UNSUBSCRIBED: [
        (NONE, False), (NONE, True), (NONE_I, False), (NONE_I, True),
        (NONE, True), (NONE_I, True), (FROM, False), (FROM, True), (FROM, True),
    ],
}  # fmt: skip


@pytest.mark.parametrize("kind", list(Kind))
@pytest.mark.parametrize("i", range(9))
def test_outbound_transition_matches_appendix_a2(kind: Kind, i: int) -> None:
    before = ALL[i]
    want = OUTBOUND[kind][i]
    got = outbound(before, kind).state
    if want is None:
        # approving a request that has not arrived is a pre-approval (§3.4), nothing else changes
        assert got == State(before.sub, before.pending_out, before.pending_in, approved=True)
    else:
        assert (got.sub, got.pending_out, got.pending_in) == (
            want.sub,
            want.pending_out,
            want.pending_in,
        )


@pytest.mark.parametrize("kind", list(Kind))
@pytest.mark.parametrize("i", range(9))
def test_inbound_transition_matches_appendix_a3(kind: Kind, i: int) -> None:
    want, deliver = INBOUND[kind][i]
    got = inbound(ALL[i], kind)
    assert got.state == want, ALL[i].name()
    assert got.deliver is deliver, ALL[i].name()


@pytest.mark.parametrize("state", [FROM, FROM_O, BOTH])
def test_subscribe_from_existing_subscriber_is_answered_by_the_server(state: State) -> None:
    assert inbound(state, Kind.SUBSCRIBE).auto_reply is Kind.SUBSCRIBED


def test_preapproved_request_is_granted_without_asking() -> None:
    pre = outbound(NONE, Kind.SUBSCRIBED).state
    assert pre.approved
    got = inbound(pre, Kind.SUBSCRIBE)
    assert got.state.sub is Sub.FROM and not got.state.approved
    assert got.auto_reply is Kind.SUBSCRIBED and not got.deliver


def test_denying_clears_preapproval() -> None:
    pre = outbound(NONE, Kind.SUBSCRIBED).state
    assert not outbound(pre, Kind.UNSUBSCRIBED).state.approved


def test_approval_is_routed_only_when_a_request_is_pending() -> None:
    assert outbound(NONE_I, Kind.SUBSCRIBED).route
    assert not outbound(NONE, Kind.SUBSCRIBED).route
    assert not outbound(BOTH, Kind.SUBSCRIBED).route


def test_full_handshake_ends_in_both() -> None:
    alice, bob = State(), State()
    alice = outbound(alice, Kind.SUBSCRIBE).state  # alice asks bob
    bob = inbound(bob, Kind.SUBSCRIBE).state
    bob = outbound(bob, Kind.SUBSCRIBED).state  # bob approves
    alice = inbound(alice, Kind.SUBSCRIBED).state
    bob = outbound(bob, Kind.SUBSCRIBE).state  # bob asks back
    alice = inbound(alice, Kind.SUBSCRIBE).state
    alice = outbound(alice, Kind.SUBSCRIBED).state
    bob = inbound(bob, Kind.SUBSCRIBED).state
    assert alice == State(Sub.BOTH) and bob == State(Sub.BOTH)
    assert alice.name() == "Both"


def test_state_names_follow_the_rfc() -> None:
    assert NONE_OI.name() == "None + Pending Out + Pending In"
    assert TO_I.name() == "To + Pending In"
