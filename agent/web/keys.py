"""Typed application keys: every resource the agent keeps on its aiohttp app, in one place."""

from __future__ import annotations

import aiohttp
import pluggy
from aiohttp import web

from agent.agent import Agent
from agent.channel import Channel
from agent.clock import Clock
from agent.config import Settings
from agent.db import Database
from agent.metrics import Metrics
from agent.models import Identity
from agent.plugins import Registry

SETTINGS = web.AppKey("settings", Settings)
PM = web.AppKey("pm", pluggy.PluginManager)
REGISTRY = web.AppKey("registry", Registry)
CLOCK = web.AppKey("clock", Clock)
DB = web.AppKey("db", Database)
HTTP = web.AppKey("http", aiohttp.ClientSession)
IDENTITY = web.AppKey("identity", Identity)
CHANNEL = web.AppKey("channel", Channel)
METRICS = web.AppKey("metrics", Metrics)
STARTED = web.AppKey("started", float)
AGENT = web.AppKey("agent", Agent)
