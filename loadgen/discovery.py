"""Finding the server: a pre-flight check of --base-url, or a look at the usual local ports.

The check turns the common mistakes (nothing listening, a missing API key, a wrong model
name) into one-line errors before any load is sent.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

# vLLM / dyno, llama.cpp, SGLang, Ollama.
LOCAL_PORTS = (8000, 8080, 30000, 11434)


class ServerError(RuntimeError):
    """The server cannot be used; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class ServerInfo:
    base_url: str
    models: tuple[str, ...]
    has_metrics: bool = False


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def check_server(base_url: str, api_key: str | None = None, timeout_s: float = 10.0) -> ServerInfo:
    """GET /v1/models: reachable, authorized, and which models it serves."""
    url = base_url.rstrip("/") + "/v1/models"
    try:
        resp = httpx.get(url, headers=_headers(api_key), timeout=timeout_s)
    except httpx.ConnectError:
        raise ServerError(f"cannot reach {base_url}: nothing is listening there; start the server "
                          "or pass --base-url") from None
    except httpx.TimeoutException:
        raise ServerError(f"{base_url} did not answer within {timeout_s:g}s") from None
    except httpx.HTTPError as e:
        raise ServerError(f"cannot reach {base_url}: {e}") from None
    if resp.status_code in (401, 403):
        hint = "the API key was refused" if api_key else "it needs an API key"
        raise ServerError(f"{base_url} answered {resp.status_code} ({hint}): pass --api-key KEY "
                          "or set OPENAI_API_KEY")
    if resp.status_code >= 400:  # some servers have no /v1/models; the run will tell
        return ServerInfo(base_url, ())
    try:
        models = tuple(str(m["id"]) for m in resp.json().get("data", []))
    except (ValueError, KeyError, TypeError, AttributeError):
        models = ()
    return ServerInfo(base_url, models, has_metrics=_has_metrics(base_url, api_key))


def _has_metrics(base_url: str, api_key: str | None) -> bool:
    try:
        resp = httpx.get(base_url.rstrip("/") + "/metrics", headers=_headers(api_key), timeout=2.0)
        return resp.status_code == 200 and "# TYPE" in resp.text
    except httpx.HTTPError:
        return False


def discover_local(api_key: str | None = None, host: str = "127.0.0.1",
                   ports: tuple[int, ...] = LOCAL_PORTS) -> ServerInfo:
    """The first OpenAI-compatible server on the usual local ports."""
    for port in ports:
        base_url = f"http://{host}:{port}"
        try:
            info = check_server(base_url, api_key, timeout_s=1.0)
        except ServerError as e:
            if "API key" in str(e):
                raise
            continue
        if info.models:
            return info
    listed = ", ".join(str(p) for p in ports)
    raise ServerError(f"no OpenAI-compatible server found on local ports {listed}; start one or "
                      "pass --base-url")


def pick_model(info: ServerInfo, model: str | None) -> str:
    if model:
        if info.models and model not in info.models:
            raise ServerError(f"{info.base_url} does not serve model {model!r}; it serves "
                              f"{', '.join(info.models)} (pass one with --model)")
        return model
    if not info.models:
        raise ServerError(f"{info.base_url} lists no models; pass --model NAME")
    return info.models[0]
