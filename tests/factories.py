"""Small builders of configuration entities for unit tests."""

from __future__ import annotations

from typing import Any

from postbackd.model import App, Campaign, Postback, Segment, Tracker, XAccount

CREATED = "2026-11-01T00:00:00.000Z"


def app(**kw: Any) -> App:
    base: dict[str, Any] = {
        "id": "kogame0123456789abcdef",
        "name": "Game",
        "platform": "ios",
        "bundle_id": "333903271",
        "created_at": CREATED,
    }
    return App(**(base | kw))


def account(**kw: Any) -> XAccount:
    base: dict[str, Any] = {
        "id": "18ce54d4x5t",
        "name": "Ads",
        "access_token": "tok-1",
        "access_token_secret": "sec-1",
        "ammp": False,
        "authenticated": True,
        "authenticated_at": CREATED,
        "last_auth_error": None,
        "created_at": CREATED,
    }
    return XAccount(**(base | kw))


def campaign(**kw: Any) -> Campaign:
    base: dict[str, Any] = {
        "id": "kowinter00112233",
        "app_id": "kogame0123456789abcdef",
        "name": "Winter",
        "created_at": CREATED,
    }
    return Campaign(**(base | kw))


def segment(**kw: Any) -> Segment:
    base: dict[str, Any] = {
        "id": "koseg0011223344",
        "campaign_id": "kowinter00112233",
        "name": "All",
        "created_at": CREATED,
    }
    return Segment(**(base | kw))


def tracker(**kw: Any) -> Tracker:
    base: dict[str, Any] = {
        "id": "kotracker000000000000000000001",
        "app_id": "kogame0123456789abcdef",
        "segment_id": "koseg0011223344",
        "name": "Tracker",
        "type": "reengagement",
        "network": "x_ios",
        "default": False,
        "x_account_ids": ("18ce54d4x5t",),
        "bundle_id": "333903271",
        "target_event": "PURCHASE",
        "post_engagement_window_days": 14,
        "post_view_window_days": 0,
        "event_matching_event": "purchase",
        "created_at": CREATED,
    }
    return Tracker(**(base | kw))


def postback(**kw: Any) -> Postback:
    base: dict[str, Any] = {
        "id": "kopb-purchase00112233",
        "app_id": "kogame0123456789abcdef",
        "network": "x_ios",
        "event_name": "purchase",
        "x_app_id": "333903271",
        "conversion_type": "PURCHASE",
        "x_account_id": None,
        "delivery_delay_s": 0,
        "retry_attempts": 3,
        "delivery_method": "all",
        "enabled": True,
        "created_at": CREATED,
    }
    return Postback(**(base | kw))
