"""The built-in demo tools: `get_weather`, `calculate`, `get_current_time`.

Each reports staged progress, so a fresh install shows the whole experience.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import AsyncIterator, Iterator
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..errors import ToolError
from ..settings import Settings
from .calculator import evaluate
from .definition import Progress, Tool, tool

__all__ = ["BUILTIN_TOOLS", "calculate", "get_current_time", "get_weather"]

# WMO weather interpretation codes, as documented by Open-Meteo.
WEATHER_CODES = {
    0: "Clear",
    1: "Mainly clear",
    2: "Partly cloudy",
    3: "Overcast",
    45: "Fog",
    48: "Depositing rime fog",
    51: "Light drizzle",
    53: "Drizzle",
    55: "Dense drizzle",
    56: "Light freezing drizzle",
    57: "Freezing drizzle",
    61: "Light rain",
    63: "Rain",
    65: "Heavy rain",
    66: "Light freezing rain",
    67: "Freezing rain",
    71: "Light snow",
    73: "Snow",
    75: "Heavy snow",
    77: "Snow grains",
    80: "Light rain showers",
    81: "Rain showers",
    82: "Violent rain showers",
    85: "Light snow showers",
    86: "Snow showers",
    95: "Thunderstorm",
    96: "Thunderstorm with light hail",
    99: "Thunderstorm with heavy hail",
}


@tool
async def get_weather(city: str, settings: Settings) -> AsyncIterator[Any]:
    """Get the current weather for a city.

    Args:
        city: The city's name, e.g. "Seoul" or "Paris, France".
        settings: The session's settings (filled in by streamchat): the Open-Meteo URLs and the HTTP timeout.
    """
    name = city.split(",")[0].strip()
    if not name:
        raise ToolError("the city name is empty")
    async with httpx.AsyncClient(timeout=settings.http_timeout) as client:
        yield Progress("Checking location...", stage="geocoding", percent=0)
        places = await _get_json(
            client, settings.geocoding_url, {"name": name, "count": 1, "language": "en", "format": "json"}
        )
        results = places.get("results") or []
        if not results:
            raise ToolError(f"no place named {city!r} was found")
        place = results[0]
        yield Progress("Fetching weather data...", stage="forecast", percent=50)
        forecast = await _get_json(
            client,
            settings.weather_url,
            {
                "latitude": place["latitude"],
                "longitude": place["longitude"],
                "current": "temperature_2m,relative_humidity_2m,weather_code,wind_speed_10m",
                "timezone": "auto",
            },
        )
    try:
        current = forecast["current"]
        temperature = float(current["temperature_2m"])
        code = int(current["weather_code"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ToolError(f"the weather service answered without current conditions ({exc!r})") from exc
    conditions = WEATHER_CODES.get(code, f"weather code {code}")
    location = ", ".join(str(p) for p in (place.get("name"), place.get("country")) if p)
    yield {
        "location": location,
        "temperature_c": temperature,
        "conditions": conditions,
        "humidity_pct": current.get("relative_humidity_2m"),
        "wind_kmh": current.get("wind_speed_10m"),
        "summary": f"{temperature:.0f}°C, {conditions}",
    }


async def _get_json(client: httpx.AsyncClient, url: str, params: dict[str, Any]) -> dict[str, Any]:
    host = urlsplit(url).netloc or url
    try:
        response = await client.get(url, params=params)
    except httpx.TimeoutException as exc:
        raise ToolError(f"the weather service at {host} did not answer in time") from exc
    except httpx.HTTPError as exc:
        raise ToolError(f"the weather service at {host} could not be reached ({type(exc).__name__})") from exc
    if response.status_code != 200:
        raise ToolError(f"the weather service at {host} answered HTTP {response.status_code}")
    try:
        data = response.json()
    except ValueError as exc:
        raise ToolError(f"the weather service at {host} answered something that is not JSON") from exc
    if not isinstance(data, dict):
        raise ToolError(f"the weather service at {host} answered an unexpected JSON shape")
    return data


@tool
def calculate(expression: str) -> Iterator[Any]:
    """Evaluate an arithmetic expression exactly (numbers, + - * / // % **, parentheses, sqrt, log…).

    Args:
        expression: The expression, e.g. "12 * (3 + 4)".
    """
    yield Progress("Evaluating...", stage="evaluating", percent=0)
    value = evaluate(expression)
    yield {"expression": expression, "result": value, "summary": f"{expression} = {value}"}


@cache
def _zones_by_city() -> dict[str, str]:
    zones: dict[str, str] = {}
    for zone in zoneinfo.available_timezones():
        zones.setdefault(zone.rsplit("/", 1)[-1].lower(), zone)
    return zones


def _find_zone(name: str) -> zoneinfo.ZoneInfo:
    wanted = name.strip()
    candidates = [wanted, _zones_by_city().get(wanted.replace(" ", "_").lower(), "")]
    for candidate in candidates:
        if not candidate:
            continue
        try:
            return zoneinfo.ZoneInfo(candidate)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            continue
    raise ToolError(f"unknown time zone {name!r}: use an IANA name such as 'Asia/Seoul' or 'Europe/Paris'")


@tool
def get_current_time(timezone: str = "UTC") -> Iterator[Any]:
    """Get the current date and time in a time zone.

    Args:
        timezone: An IANA time zone such as "Asia/Seoul", or a city in the IANA database such as "Seoul".
    """
    yield Progress("Looking up time zone...", stage="lookup", percent=0)
    zone = _find_zone(timezone)
    now = dt.datetime.now(zone)
    offset = now.strftime("%z")
    yield {
        "timezone": zone.key,
        "iso": now.isoformat(timespec="seconds"),
        "date": now.date().isoformat(),
        "time": now.strftime("%H:%M"),
        "weekday": now.strftime("%A"),
        "utc_offset": f"{offset[:3]}:{offset[3:]}",
        "summary": f"{now:%H:%M} {now:%A} ({zone.key})",
    }


BUILTIN_TOOLS: tuple[Tool, ...] = (get_weather, calculate, get_current_time)
"""The tools a `ChatSession` gets when it is given none."""
