"""The built-in tools: the safe calculator, time zones, and weather against a real local HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest
from core_helpers import brief, collect

from streamchat import ChatSession, DemoProvider, ScriptedProvider, Settings, ToolCall, ToolError, get_weather
from streamchat.tools.calculator import evaluate


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("12 * (3 + 4)", 84),
        ("2 ** 10", 1024),
        ("7 // 2", 3),
        ("7 % 4", 3),
        ("-3 + +2", -1),
        ("1 / 4", 0.25),
        ("6 × 7", 42),
        ("9 ÷ 3", 3.0),
        ("2^8", 256),
        ("sqrt(16) + abs(-2)", 6.0),
        ("round(pi, 2)", 3.14),
        ("2 ** -1", 0.5),
    ],
)
def test_calculate_evaluates_arithmetic(expression, value):
    assert evaluate(expression) == value


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os')", "not allowed in a calculation: \"__import__('os')\""),
        ("().__class__", "not allowed in a calculation: '().__class__'"),
        ("(lambda: 1)()", "not allowed in a calculation"),
        ("x + 1", "unknown name 'x'"),
        ("open('/etc/passwd')", "not allowed in a calculation"),
        ("'a' * 3", "only numbers are allowed, not 'a'"),
        ("True + 1", "only numbers are allowed, not True"),
        ("[1, 2]", "not allowed in a calculation"),
        ("1 if 1 else 2", "not allowed in a calculation"),
        ("sqrt(x=4)", "sqrt() takes one or two numbers"),
        ("9**9**9", "the exponent 387420489 is too large"),
        ("(9**999)**999", "the result is too large"),
        ("10**100000000", "the exponent 100000000 is too large"),
        ("2.0**100000", "the result is too large"),
        ("1/0", "division by zero"),
        ("sqrt(-1)", "sqrt() cannot take -1"),
        ("1 +", "not an arithmetic expression"),
        ("-" * 100 + "1", "nested too deeply"),
        ("(" * 210 + "1" + ")" * 210, "not an arithmetic expression"),
        ("1" * 600, "longer than 500 characters"),
    ],
)
def test_calculate_refuses_code_and_huge_numbers_with_a_clear_message(expression, message):
    with pytest.raises(ToolError) as info:
        evaluate(expression)
    assert message in info.value.message


async def test_calculate_tool_reports_progress_and_result():
    session = ChatSession(ScriptedProvider([[ToolCall("calculate", {"expression": "6*7"})], ["42"]]))
    events = brief(await collect(session, "6*7?"))
    assert events[1:4] == [
        ("tool_call", "call_1", "calculate", {"expression": "6*7"}),
        ("tool_progress", "call_1", "Evaluating...", "evaluating", 0),
        ("tool_result", "call_1", "ok", {"expression": "6*7", "result": 42, "summary": "6*7 = 42"}),
    ]


async def test_get_current_time_accepts_iana_names_and_cities_and_refuses_unknown_zones():
    provider = ScriptedProvider(
        [
            [
                ToolCall("get_current_time", {"timezone": "Asia/Seoul"}),
                ToolCall("get_current_time", {"timezone": "tokyo"}),
                ToolCall("get_current_time", {"timezone": "Mars/Olympus"}),
            ],
            ["ok"],
        ]
    )
    events = await collect(ChatSession(provider), "time?")
    results = {e.call_id: e for e in events if e.type == "tool_result"}
    assert results["call_1"].result["timezone"] == "Asia/Seoul"
    assert results["call_1"].result["utc_offset"] == "+09:00"
    assert results["call_2"].result["timezone"] == "Asia/Tokyo"
    assert results["call_3"].status == "error"
    assert results["call_3"].error == (
        "unknown time zone 'Mars/Olympus': use an IANA name such as 'Asia/Seoul' or 'Europe/Paris'"
    )


class _OpenMeteo(BaseHTTPRequestHandler):
    """Answers like Open-Meteo's geocoding and forecast APIs (their documented JSON shapes)."""

    requests: ClassVar[list[tuple[str, dict[str, list[str]]]]] = []

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        type(self).requests.append((url.path, query))
        if url.path == "/v1/search":
            name = query["name"][0]
            body = {"results": [{"name": "Seoul", "latitude": 37.566, "longitude": 126.9784, "country": "South Korea"}]}
            if name == "Nowhere":
                body = {"generationtime_ms": 0.1}
            self._send(200, body)
        elif url.path == "/v1/forecast":
            self._send(
                200,
                {
                    "current": {
                        "temperature_2m": 21.3,
                        "relative_humidity_2m": 40,
                        "weather_code": 0,
                        "wind_speed_10m": 5.2,
                    }
                },
            )
        elif url.path == "/broken/v1/forecast":
            self._send(500, {"error": True, "reason": "internal"})
        else:
            self._send(404, {})

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def open_meteo_server() -> Iterator[str]:
    """A local Open-Meteo look-alike; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OpenMeteo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _OpenMeteo.requests = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def open_meteo(open_meteo_server, monkeypatch) -> str:
    """The local Open-Meteo look-alike, named by the environment variables."""
    monkeypatch.setenv("STREAMCHAT_GEOCODING_URL", f"{open_meteo_server}/v1/search")
    monkeypatch.setenv("STREAMCHAT_WEATHER_URL", f"{open_meteo_server}/v1/forecast")
    return open_meteo_server


async def test_get_weather_stages_and_result_from_open_meteo(open_meteo):
    session = ChatSession(ScriptedProvider([[ToolCall("get_weather", {"city": "Seoul"})], ["fine"]]))
    events = brief(await collect(session, "weather?"))
    assert events[1:5] == [
        ("tool_call", "call_1", "get_weather", {"city": "Seoul"}),
        ("tool_progress", "call_1", "Checking location...", "geocoding", 0),
        ("tool_progress", "call_1", "Fetching weather data...", "forecast", 50),
        (
            "tool_result",
            "call_1",
            "ok",
            {
                "location": "Seoul, South Korea",
                "temperature_c": 21.3,
                "conditions": "Clear",
                "humidity_pct": 40,
                "wind_kmh": 5.2,
                "summary": "21°C, Clear",
            },
        ),
    ]
    (geo_path, geo_query), (fc_path, fc_query) = _OpenMeteo.requests
    assert geo_path == "/v1/search" and geo_query["name"] == ["Seoul"]
    assert fc_path == "/v1/forecast" and fc_query["latitude"] == ["37.566"]


async def test_get_weather_uses_the_sessions_settings(open_meteo_server, monkeypatch):
    monkeypatch.delenv("STREAMCHAT_GEOCODING_URL", raising=False)
    monkeypatch.delenv("STREAMCHAT_WEATHER_URL", raising=False)
    settings = Settings(geocoding_url=f"{open_meteo_server}/v1/search", weather_url=f"{open_meteo_server}/v1/forecast")
    provider = ScriptedProvider([[ToolCall("get_weather", {"city": "Seoul"})], ["fine"]])
    events = brief(await collect(ChatSession(provider, settings=settings), "weather?"))
    assert ("tool_call", "call_1", "get_weather", {"city": "Seoul"}) in events
    assert [e[3]["summary"] for e in events if e[0] == "tool_result"] == ["21°C, Clear"]
    assert [path for path, _ in _OpenMeteo.requests] == ["/v1/search", "/v1/forecast"]
    assert list(get_weather.parameters["properties"]) == ["city"]  # the model never sees the settings


async def test_get_weather_errors_are_clear_tool_results(open_meteo, monkeypatch):
    provider = ScriptedProvider([[ToolCall("get_weather", {"city": "Nowhere"})], ["sorry"]])
    events = brief(await collect(ChatSession(provider), "weather?"))
    assert ("tool_result", "call_1", "error", "no place named 'Nowhere' was found") in events

    monkeypatch.setenv("STREAMCHAT_WEATHER_URL", f"{open_meteo}/broken/v1/forecast")
    provider = ScriptedProvider([[ToolCall("get_weather", {"city": "Seoul"})], ["sorry"]])
    events = brief(await collect(ChatSession(provider), "weather?"))
    host = open_meteo.removeprefix("http://")
    assert ("tool_result", "call_1", "error", f"the weather service at {host} answered HTTP 500") in events


async def test_get_weather_when_the_service_is_unreachable(monkeypatch):
    with socket_closed_port() as port:
        monkeypatch.setenv("STREAMCHAT_GEOCODING_URL", f"http://127.0.0.1:{port}/v1/search")
        provider = ScriptedProvider([[ToolCall("get_weather", {"city": "Seoul"})], ["sorry"]])
        events = brief(await collect(ChatSession(provider), "weather?"))
    assert (
        "tool_result",
        "call_1",
        "error",
        f"the weather service at 127.0.0.1:{port} could not be reached (ConnectError)",
    ) in events
    assert events[-1][0:2] == ("done", "stop")


class socket_closed_port:
    """A port on 127.0.0.1 with nothing listening (bound, then closed)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        pass


async def test_demo_model_answers_weather_and_time_in_parallel(open_meteo):
    session = ChatSession(DemoProvider(token_delay=0))
    events = await collect(session, "What's the weather in Seoul, and what time is it there?")
    calls = [(e.tool, e.args) for e in events if e.type == "tool_call"]
    assert calls == [("get_weather", {"city": "Seoul"}), ("get_current_time", {"timezone": "Seoul"})]
    text = events[-1].text
    assert text.startswith(
        "The weather in Seoul, South Korea is 21°C and clear, with wind at 5.2 km/h. In Asia/Seoul it is "
    )
    assert text.endswith(
        "(Answered by streamchat's offline demo model, not an LLM: see README → Backends to connect one.)"
    )


async def test_demo_model_arithmetic_and_fallback():
    session = ChatSession(DemoProvider(token_delay=0))
    assert (await session.send("What is 12 * (3 + 4)?")).text.startswith("12 * (3 + 4) = 84.")
    fallback = (await session.send("Tell me a joke")).text
    assert fallback.startswith("I am the offline demo model: I can answer questions such as")
    assert "offline demo model, not an LLM" in fallback
