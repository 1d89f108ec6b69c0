"""URLs every carrier puts in its dial request: where the callee's answer is handled."""

from __future__ import annotations

from urllib.parse import urlencode

from callqueue.carriers.base import DialRequest


def answer_url(request: DialRequest, agent_server_url: str) -> str:
    """The call's own answer URL, or the agent server's, with the call's identity added."""
    base = request.config.get("answer_url") or f"{agent_server_url.rstrip('/')}/outbound-answer"
    params = {"call_id": request.call_id, "attempt": request.attempt}
    if request.campaign_id:
        params["campaign_id"] = request.campaign_id
    if request.config.get("flow_name"):
        params["flow_name"] = request.config["flow_name"]
    return f"{base}{'&' if '?' in base else '?'}{urlencode(params)}"
