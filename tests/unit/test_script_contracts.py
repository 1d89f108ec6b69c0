"""The Python<->Lua contract: each script's KEYS and ARGV are declared once (engine/contracts.py)
and the library refuses to build when a declaration and its script disagree."""

from __future__ import annotations

import dataclasses
import re
from importlib import resources

import pytest

from callqueue.engine.contracts import CONTRACTS, EVENT, PHASE, POLICY, Contract
from callqueue.engine.event_writer import _RANK
from callqueue.engine.keys import QueueKeys
from callqueue.engine.queue import CallQueue
from callqueue.engine.scripts import ContractError, Library, check_contract, key_suffixes
from callqueue.models import CallSpec


def _source(name: str) -> str:
    return resources.files("callqueue.engine").joinpath("lua", f"{name}.lua").read_text()


def _with(name: str, **changes: object) -> dict[str, Contract]:
    contracts = dict(CONTRACTS)
    contracts[name] = dataclasses.replace(contracts[name], **changes)  # type: ignore[arg-type]
    return contracts


def test_every_declaration_matches_its_script() -> None:
    for name, contract in CONTRACTS.items():
        check_contract(contract, _source(name))
    Library()  # and the library builds


@pytest.mark.parametrize(
    ("name", "changes", "message"),
    [
        # One key too few: the header documents more than is declared.
        ("claim", {"keys": CONTRACTS["claim"].keys[:-1]}, "header documents"),
        # One argument too many: nothing documents or reads it.
        ("claim", {"argv": (*CONTRACTS["claim"].argv, "extra")}, "header documents"),
        # The policy block moved: parse_policy reads it elsewhere.
        ("cancel", {"argv": ("call_id", "channel", "reason", "x", POLICY)}, "parse_policy"),
        # The per-event group lost a name: the header takes 13 per event.
        ("event", {"argv_group": EVENT.argv_group[:-1]}, "per item"),
        # A key name keys.py does not build.
        ("dnc", {"keys": ("do_not_call",)}, "QueueKeys"),
    ],
)
def test_a_mismatched_declaration_fails_when_the_library_loads(
    name: str, changes: dict[str, object], message: str
) -> None:
    contracts = _with(name, **changes)
    with pytest.raises(ContractError, match=message):
        Library(contracts)


_HEADER = "-- KEYS[1] hash  KEYS[2] other\n-- ARGV[1] field\n"
_TWO_KEYS = Contract("t", keys=("control", "stats"), argv=("field",))


def test_a_script_that_reads_past_its_declaration_fails() -> None:
    check_contract(_TWO_KEYS, _HEADER + "redis.call('HGET', KEYS[1], ARGV[1], KEYS[2])\n")
    with pytest.raises(ContractError, match="beyond"):
        check_contract(_TWO_KEYS, _HEADER + "return {KEYS[1], KEYS[2], KEYS[3], ARGV[1]}\n")


def test_a_declared_key_the_script_never_reads_fails() -> None:
    # As claim.lua's zone-offsets key was: documented and passed, but read by nobody (a
    # mention in a comment is no read).
    with pytest.raises(ContractError, match="never reads"):
        check_contract(_TWO_KEYS, _HEADER + "return {KEYS[1], ARGV[1]}  -- KEYS[2] too\n")


def test_declared_keys_are_built_by_keys_py() -> None:
    k = QueueKeys("q")
    for contract in CONTRACTS.values():
        given = {n: f"{k.prefix}x" for n in contract.keys if n in ("call", "batch_or_seq")}
        keys = contract.keys_of(k, **given)
        assert len(keys) == len(contract.keys)
        assert all(key.startswith(k.prefix) for key in keys)  # one hash tag, one slot


def test_pack_follows_the_declaration_order_and_refuses_unknown_names() -> None:
    policy = list(range(len(POLICY.names)))
    args = CONTRACTS["cancel"].pack(
        {"call_id": "c1", "reason": "r", "channel": "ch", "policy": policy}
    )
    assert args == ["c1", "r", "ch", *policy]
    with pytest.raises(TypeError):
        CONTRACTS["cancel"].pack(
            {"call_id": "c1", "reason": "r", "channel": "ch", "policy": policy, "x": 1}
        )
    with pytest.raises(TypeError):
        CONTRACTS["cancel"].pack({"call_id": "c1", "reason": "r", "channel": "ch", "policy": [1]})


def test_per_item_groups_match_what_the_queue_packs() -> None:
    queue = CallQueue(client=None, name="q")  # type: ignore[arg-type]  # packing only
    spec = CallSpec(call_id="c1", phone_number="+14155550100")
    _, _, row = queue._enqueue_row(spec)
    assert len(row) == len(CONTRACTS["enqueue"].argv_group)
    _, keys, args = queue._event_batch([queue.event_call("c1", 1, "ringing")])
    assert len(keys) == len(EVENT.keys) + 1
    assert len(args) == EVENT.argc + len(EVENT.argv_group)


def test_the_lua_gets_its_shared_constants_from_python() -> None:
    code = Library().code
    assert _RANK is PHASE
    phase = ", ".join(f"{k} = {v}" for k, v in PHASE.items())
    assert f"local PHASE = {{{phase}}}" in code
    # No script or helper names a derived key itself: every suffix comes from keys.py.
    suffixes = key_suffixes()
    for name in ("_lib", "_park", *CONTRACTS):
        code_only = "\n".join(line.split("--", 1)[0] for line in _source(name).splitlines())
        for suffix in suffixes.values():
            assert not re.search(rf"\.\. '{re.escape(suffix)}'", code_only), (name, suffix)
    k = QueueKeys("q")
    assert k.prefix + suffixes["campaign"] + "x" == k.campaign("x")
    assert k.prefix + suffixes["number_attempts"] + "7" == k.number_attempts(7)
